import Engine
import Foundation
import Logging
import Worker

/// What `prune-dist average` was asked for.
struct SoupSettings: Sendable {
    var models: [URL]
    var out: URL
    /// Output dtype of the weights (default: the ingredients').
    var dtype: DType?
    /// Greedy selection, scored by this evaluation (one perplexity text, or zero-shot tasks); nil: the uniform
    /// soup of every model.
    var scoring: PruneRunEvaluation?
}

/// The soup's record: `soup-report.json` in the output, the JSON line printed, and config.json's `prune_dist`.
struct SoupReport: Codable, Sendable {
    struct Ingredient: Codable, Sendable {
        var path: String
        /// Each weight file of the ingredient with its size and sha256.
        var files: [RunProvenance.FileRecord]
        /// Its own held-out score (greedy only).
        var score: Double?
        var kept: Bool
        /// Its weight in the average: 1/k for the k kept ingredients, 0 for the others.
        var weight: Double
    }

    /// "uniform" or "greedy".
    var method: String
    /// What the scores are ("perplexity on FILE (N windows of L tokens)", "zero-shot average of …"); greedy only.
    var measure: String?
    var lowerIsBetter: Bool?
    var ingredients: [Ingredient]
    /// Greedy: the ingredients in the order they were tried.
    var steps: [GreedySoup.Step]?
    /// Greedy: the kept soup's score.
    var score: Double?
    var provenance: RunProvenance

    enum CodingKeys: String, CodingKey {
        case method, measure, ingredients, steps, score, provenance
        case lowerIsBetter = "lower_is_better"
    }

    func jsonObject() throws -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try JSONSerialization.jsonObject(with: try encoder.encode(self)) as? [String: Any] ?? [:]
    }
}

/// A soup made over the ranks of a job. Every rank opens the ingredients (headers only) and checks them; rank 0
/// writes each candidate soup into `.OUT.partial/candidate` and all ranks evaluate it (DistributedEvaluation:
/// windows or batches dealt round-robin), so `mpirun -n N average --greedy` spreads the scoring; rank 0 writes the
/// chosen soup into `.OUT.partial` and moves it into place. Memory on rank 0: one tensor at a time (its Double sum
/// and Float mean, 12 bytes per element); each candidate costs one model's worth of disk in the partial folder.
struct SoupRun {
    let settings: SoupSettings
    let comm: Communicator
    let logger: Logger
    /// Rank 0's lock on the output's partial folder; nil on other ranks.
    let lock: OutputLock?

    func run() throws -> SoupReport {
        let start = Date()
        let models = try settings.models.map { try Checkpoint(directory: $0) }
        try ModelSoup.checkCompatible(models)
        if let scoring = settings.scoring, !scoring.texts.isEmpty, scoring.seqlen > models[0].config.maxPositionEmbeddings {
            throw PruneDistError(.argument, "--eval-seqlen \(scoring.seqlen) is beyond the models' context: \(models[0].directory.path)/config.json has max_position_embeddings \(models[0].config.maxPositionEmbeddings)")
        }
        let outputDType = settings.dtype ?? models[0].storageDType
        let partial = OutputFolder.partialFolder(for: settings.out)
        try onRankZero { try lock?.clearPartialFolder() }

        var selection: GreedySoup.Selection?
        var scores: [Double]?
        if let scoring = settings.scoring {
            let candidate = partial.appendingPathComponent("candidate")
            let scoreSoup = { (members: [Int]) throws -> Double in
                try onRankZero {
                    try? FileManager.default.removeItem(at: candidate)
                    try writeSoup(members.map { models[$0] }, into: candidate, dtype: outputDType, config: nil)
                }
                return try SoupRun.score(try scoring.evaluate(model: candidate, comm: comm, logger: logger).entries, of: scoring)
            }
            let own = try models.indices.map { i -> Double in
                let score = try scoreSoup([i])
                logger.info("ingredient \(i + 1)/\(models.count) \(settings.models[i].path): \(String(format: "%.4f", score))")
                return score
            }
            scores = own
            selection = try GreedySoup.select(scores: own, lowerIsBetter: scoring.lowerIsBetter, scoreSoup: scoreSoup)
            try onRankZero { try? FileManager.default.removeItem(at: candidate) }
        }
        let kept = selection?.kept ?? Array(models.indices)
        let hosts = try comm.allgather(currentHostName())
        var report: SoupReport?
        try onRankZero {
            let provenance = try RunProvenance.make(settings: settings, calibration: nil, seed: 0, inputDType: models[0].storageDType,
                                                    outputDType: outputDType, hosts: hosts, start: start)
            let ingredients = try models.indices.map { i in
                SoupReport.Ingredient(path: models[i].directory.standardizedFileURL.path,
                                      files: try models[i].files.map { file in
                                          let (hex, bytes) = try SHA256.file(file.url)
                                          return RunProvenance.FileRecord(path: file.url.lastPathComponent, bytes: bytes, sha256: hex)
                                      },
                                      score: scores?[i], kept: kept.contains(i), weight: kept.contains(i) ? 1 / Double(kept.count) : 0)
            }
            let made = SoupReport(method: selection == nil ? "uniform" : "greedy", measure: settings.scoring?.measure,
                                  lowerIsBetter: settings.scoring?.lowerIsBetter, ingredients: ingredients, steps: selection?.steps,
                                  score: selection?.score, provenance: provenance)
            try writeSoup(kept.map { models[$0] }, into: partial, dtype: outputDType, config: made)
            try OutputFolder.moveIntoPlace(partial, out: settings.out)
            report = made
        }
        return try comm.broadcast(report, root: 0)
    }

    /// Runs `body` on rank 0 only; its failure becomes every rank's (the others would otherwise wait for rank 0
    /// in their next collective).
    private func onRankZero(_ body: () throws -> Void) throws {
        var failure: Error?
        if comm.rank == 0 {
            do { try body() } catch { failure = error }
        }
        let message = try comm.broadcast(comm.rank == 0 ? [failure.map { ($0 as? PruneDistError)?.message ?? "\($0)" } ?? ""] : nil, root: 0)[0]
        if let failure { throw failure }
        if !message.isEmpty { throw PruneDistError(.data, "rank 0 failed: \(message)") }
    }

    /// The uniform soup of `models` written into `folder`: the weights, config.json (the first model's, with the
    /// output dtype and, for the final output, `prune_dist` saying what the soup is made of) and the first model's
    /// tokenizer and other companion files; for the final output also soup-report.json and a model card.
    private func writeSoup(_ members: [Checkpoint], into folder: URL, dtype: DType, config report: SoupReport?) throws {
        let first = members[0]
        try ModelSoup.write(members, to: folder, dtype: dtype, maxShardBytes: OutputCheckpoint.maxShardBytes(like: first, dtype: dtype))
        let configURL = first.directory.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any] ?? [:]
        if config["dtype"] != nil { config["dtype"] = dtype.torchName }
        config["torch_dtype"] = config["dtype"] == nil ? dtype.torchName : nil
        // The first model's record of how it was made (a pruned model's sparsity) does not describe the soup.
        config["sparsity_config"] = nil
        config["prune_dist"] = try report.map { ["soup": try $0.jsonObject()] }
        try writeFileAtomically(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]),
                                to: folder.appendingPathComponent("config.json"))
        try CheckpointCompanions.copy(from: first.directory, to: folder)
        if let report {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try writeFileAtomically(try encoder.encode(report), to: folder.appendingPathComponent("soup-report.json"))
            try writeFileAtomically(Data(SoupRun.modelCard(report, name: settings.out.lastPathComponent).utf8),
                                    to: folder.appendingPathComponent("README.md"))
        }
    }

    /// A soup's score from its evaluation entries: the perplexity of the one text, or the mean over the tasks of
    /// acc_norm where the task reports it (acc otherwise), SST-2 included when asked for.
    static func score(_ entries: [String: Double], of scoring: PruneRunEvaluation) throws -> Double {
        if scoring.lowerIsBetter {
            guard let perplexity = entries["perplexity"] else { throw PruneDistError(.data, "the soup's evaluation gave no perplexity") }
            return perplexity
        }
        let values = scoring.tasks.compactMap { entries["zeroshot.\($0.rawValue).acc_norm"] ?? entries["zeroshot.\($0.rawValue).acc"] }
        guard values.count == scoring.tasks.count, !values.isEmpty else { throw PruneDistError(.data, "the soup's evaluation is missing a task's accuracy") }
        return values.reduce(0, +) / Double(values.count)
    }

    static func modelCard(_ report: SoupReport, name: String) -> String {
        let kept = report.ingredients.filter(\.kept)
        var lines = ["---", "library_name: transformers", "tags:", "- prune-dist", "- model-soup", "---", "", "# \(name)", "",
                     "A \(report.method) model soup (Wortsman et al. 2022): the element-wise mean of \(kept.count) of \(report.ingredients.count) models' weights, made with prune-dist \(report.provenance.version).", ""]
        if let measure = report.measure {
            lines += ["Greedy selection by \(measure) (\(report.lowerIsBetter == true ? "lower" : "higher") is better): ingredients tried best first, each kept only if the soup's score improved. Soup score: \(report.score.map { String(format: "%.4f", $0) } ?? "?").", ""]
        }
        lines += ["| model | score | kept | weight | sha256 of the weights |", "|---|---|---|---|---|"]
        for ingredient in report.ingredients {
            let hashes = ingredient.files.map { "\($0.path) `\($0.sha256)`" }.joined(separator: ", ")
            lines.append("| `\(ingredient.path)` | \(ingredient.score.map { String(format: "%.4f", $0) } ?? "") | \(ingredient.kept ? "yes" : "no") | \(String(format: "%.4f", ingredient.weight)) | \(hashes) |")
        }
        lines += ["", "## Command", "", "```", report.provenance.commandLine, "```", "",
                  "The tokenizer and other companion files are the first model's; `soup-report.json` holds this record.", ""]
        return lines.joined(separator: "\n")
    }
}

extension PruneRunEvaluation {
    /// Perplexity is better lower; a zero-shot average, higher.
    var lowerIsBetter: Bool { tasks.isEmpty }

    /// What a greedy soup's scores measure, for the report.
    var measure: String {
        if let text = texts.first {
            return "perplexity on \(text.path) (windows of \(seqlen) tokens\(maxWindows.map { ", at most \($0)" } ?? ""))"
        }
        return "zero-shot average of \(tasks.map(\.rawValue).joined(separator: ", "))\(limit.map { " (first \($0) documents each)" } ?? "") from \(data?.path ?? "?")"
    }
}
