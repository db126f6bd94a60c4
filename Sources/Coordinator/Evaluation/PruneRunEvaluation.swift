import ArgumentParser
import Engine
import Foundation
import Logging
import Worker

/// What `prune --eval-*` asks to evaluate on the pruned checkpoint at the end of a run.
struct PruneRunEvaluation: Sendable {
    /// Perplexity texts (or .u16 / .json token files), their window length and how many windows of each.
    var texts: [URL]
    var seqlen: Int
    var maxWindows: Int?
    var tasks: [ZeroShotTask]
    var data: URL?
    var limit: Int?
    /// `--eval-attack`: an adversarial attack on the model as a classifier (DistributedAttack).
    var attack: AttackSettings? = nil

    var isEmpty: Bool { texts.isEmpty && tasks.isEmpty && attack == nil }

    /// The `--eval-*` options of a command (prune, finetune), checked before any work rather than after a long run.
    static func checkOptions(texts: [String], maxWindows: Int?, tasks: String?, data: String?) throws {
        if tasks != nil, data == nil { throw ValidationError("--eval-tasks needs --eval-data DIR (the task files)") }
        if let tasks { do { _ = try DistributedEvaluation.parseTasks(tasks) } catch let error as PruneDistError { throw ValidationError(error.message) } }
        for text in texts where !FileManager.default.fileExists(atPath: text) { throw ValidationError("--eval-text \(text): no such file") }
        if let maxWindows, maxWindows < 1 { throw ValidationError("--eval-max-windows must be at least 1, got \(maxWindows)") }
        if let tasks, let data, let parsed = try? DistributedEvaluation.parseTasks(tasks) {
            for task in parsed where !FileManager.default.fileExists(atPath: URL(fileURLWithPath: data).appendingPathComponent(task.fileName).path) {
                throw ValidationError("--eval-data \(data): no \(task.fileName) for task \(task.rawValue)")
            }
        }
    }

    /// Evaluates the checkpoint in `model` over the job's ranks (all ranks call this; rank 0 wrote the
    /// checkpoint, which every rank reads from the shared output path) and returns the flat entries for the
    /// report's `evaluation` field and the lines to print.
    /// - attackLog: where rank 0 writes every attacked example (the pruned model's run only)
    func evaluate(model: URL, comm: Communicator, logger: Logger, attackLog: URL? = nil) throws -> (entries: [String: Double], lines: [String]) {
        var entries: [String: Double] = [:]
        var lines: [String] = []
        let checkpoint = try Checkpoint(directory: model)
        for (index, text) in texts.enumerated() {
            let extensionName = text.pathExtension.lowercased()
            let tokens = extensionName == "u16" || extensionName == "json"
                ? try TokenFile.read(text) : try PerplexityCommand.encodeTextFile(text, modelDirectory: model)
            let start = Date()
            let label = Self.label(of: text, among: texts)
            // Progress as pruning logs it: one line per block of the model, with the time left (rank 0 only).
            let layers = checkpoint.config.numHiddenLayers
            if comm.rank == 0 { logger.info("evaluating perplexity on \(label) (text \(index + 1)/\(texts.count)), \(layers) blocks over \(comm.size) rank(s)") }
            let (perplexity, windows) = try DistributedEvaluation.perplexity(checkpoint: checkpoint, tokens: tokens, source: text.path, seqlen: seqlen,
                                                                             maxWindows: maxWindows, comm: comm) { layer in
                guard comm.rank == 0 else { return }
                let elapsed = Date().timeIntervalSince(start)
                let left = elapsed / Double(layer + 1) * Double(layers - layer - 1)
                logger.info("perplexity on \(label): block \(layer + 1)/\(layers) done; elapsed \(String(format: "%.0f", elapsed)) s, about \(String(format: "%.0f", left)) s left")
            }
            // The first text also under the plain keys, which single-text reports have always used.
            for prefix in index == 0 ? ["perplexity", "perplexity.\(label)"] : ["perplexity.\(label)"] {
                entries[prefix] = perplexity
                entries["\(prefix).seqlen"] = Double(seqlen)
                entries["\(prefix).windows"] = Double(windows)
            }
            lines.append("perplexity " + String(format: "%.4f", perplexity) + " on \(label) over \(windows) windows of \(seqlen) tokens ("
                         + String(format: "%.1f", Date().timeIntervalSince(start)) + " s)")
        }
        if !tasks.isEmpty {
            if comm.rank == 0 { logger.info("evaluating zero-shot tasks \(tasks.map(\.rawValue).joined(separator: ", ")) over \(comm.size) rank(s)") }
            let summary = try DistributedEvaluation.zeroShot(tasks: tasks, folder: data!, limit: limit, checkpoint: checkpoint,
                                                             comm: comm, logger: logger)
            entries.merge(summary.reportEntries) { $1 }
            if let limit { entries["zeroshot.limit"] = Double(limit) }
            lines.append(summary.table)
        }
        if let attack {
            let result = try DistributedAttack.run(attack, model: model, comm: comm, logger: logger)
            if comm.rank == 0 {
                entries.merge(DistributedAttack.reportEntries(result.summary, recipe: attack.attack)) { $1 }
                lines.append("attack \(attack.attack.rawValue) on \(attack.task): \(result.outcomes.count) examples, \(attack.shots)-shot \(attack.template) prompt")
                lines.append(result.summary.table)
                if let attackLog {
                    try DistributedAttack.writeLog(result.outcomes, to: attackLog, labels: result.prompt.labels, attack: attack.attack)
                }
            }
        }
        return (entries, lines)
    }

    /// The name a text goes by in the report: its file name without extension (and without a `_tokens`
    /// suffix, so tempest.txt and tempest_tokens.u16 read alike), the parent folder's name added when two
    /// texts would otherwise share it.
    static func label(of text: URL, among texts: [URL]) -> String {
        func stem(_ url: URL) -> String {
            let name = url.deletingPathExtension().lastPathComponent
            return name.hasSuffix("_tokens") ? String(name.dropLast("_tokens".count)) : name
        }
        let clashes = texts.filter { stem($0) == stem(text) }.count > 1
        return clashes ? "\(text.deletingLastPathComponent().lastPathComponent)/\(stem(text))" : stem(text)
    }
}
