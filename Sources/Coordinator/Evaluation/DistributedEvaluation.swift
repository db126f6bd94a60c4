import Engine
import Foundation
import Logging
import Worker

/// One zero-shot task's result: counts over every rank's documents and the accuracies made from them.
struct ZeroShotTaskResult: Codable, Sendable, Equatable {
    var task: String
    var documents: Int
    /// Documents whose highest summed log-likelihood is the gold choice.
    var correct: Int
    /// Documents whose highest per-character log-likelihood is the gold choice.
    var correctNorm: Int
    var acc: Double
    var accStderr: Double
    /// Reported only for the tasks the harness reports it for.
    var accNorm: Double?
    var accNormStderr: Double?
    var seconds: Double

    enum CodingKeys: String, CodingKey {
        case task, documents, correct, seconds, acc
        case correctNorm = "correct_norm", accStderr = "acc_stderr", accNorm = "acc_norm", accNormStderr = "acc_norm_stderr"
    }

    /// The harness's standard error of a mean of 0/1 outcomes: sample standard deviation over √n.
    static func standardError(correct: Int, documents n: Int) -> Double {
        guard n > 1 else { return 0 }
        let p = Double(correct) / Double(n)
        return (p * (1 - p) / Double(n - 1)).squareRoot()
    }

    /// The metric a results table shows: acc_norm where the harness reports it, acc otherwise.
    var headline: Double { accNorm ?? acc }
}

/// Zero-shot results of several tasks and their average.
struct ZeroShotSummary: Sendable {
    var tasks: [ZeroShotTaskResult]

    /// The tasks that make up the LLM-Pruner/AdaPruner average (SST-2 is reported but not averaged).
    var averaged: [ZeroShotTaskResult] { tasks.filter { $0.task != ZeroShotTask.sst2.rawValue } }
    var averageAcc: Double? { averaged.isEmpty ? nil : averaged.map(\.acc).reduce(0, +) / Double(averaged.count) }
    var averageHeadline: Double? { averaged.isEmpty ? nil : averaged.map(\.headline).reduce(0, +) / Double(averaged.count) }

    /// A fixed-width table for the terminal.
    var table: String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "     –" }
        var lines = ["task            docs     acc  ±stderr  acc_norm  ±stderr"]
        for t in tasks {
            lines.append(t.task.padding(toLength: 13, withPad: " ", startingAt: 0)
                         + String(format: "%7d  ", t.documents) + f(t.acc) + "   " + f(t.accStderr) + "    " + f(t.accNorm) + "   " + f(t.accNormStderr))
        }
        if let averageAcc, let averageHeadline {
            lines.append("average of \(averaged.count) tasks: acc \(f(averageAcc)), acc_norm where reported (acc otherwise) \(f(averageHeadline))")
        }
        return lines.joined(separator: "\n")
    }

    /// The flat form stored in a run report's `evaluation` field.
    var reportEntries: [String: Double] {
        var entries: [String: Double] = [:]
        for t in tasks {
            let key = "zeroshot.\(t.task)."
            entries[key + "documents"] = Double(t.documents)
            entries[key + "acc"] = t.acc
            entries[key + "acc_stderr"] = t.accStderr
            if let accNorm = t.accNorm { entries[key + "acc_norm"] = accNorm }
            if let accNormStderr = t.accNormStderr { entries[key + "acc_norm_stderr"] = accNormStderr }
        }
        if let averageAcc { entries["zeroshot.average.acc"] = averageAcc }
        if let averageHeadline { entries["zeroshot.average.acc_norm"] = averageHeadline }
        return entries
    }

    var jsonObject: [String: Any] {
        var tasksObject: [String: Any] = [:]
        for t in tasks {
            var o: [String: Any] = ["documents": t.documents, "correct": t.correct, "acc": t.acc, "acc_stderr": t.accStderr, "seconds": t.seconds]
            if let accNorm = t.accNorm { o["acc_norm"] = accNorm; o["correct_norm"] = t.correctNorm }
            if let accNormStderr = t.accNormStderr { o["acc_norm_stderr"] = accNormStderr }
            tasksObject[t.task] = o
        }
        var object: [String: Any] = ["tasks": tasksObject, "averaged_tasks": averaged.count]
        if let averageAcc { object["average_acc"] = averageAcc }
        if let averageHeadline { object["average_acc_norm"] = averageHeadline }
        return object
    }
}

/// Evaluation spread over the ranks of a job: every rank reads the same data and makes the same plan of
/// work, takes the items i ≡ rank (mod size), and the per-item results are summed over ranks. Each item is
/// computed exactly as one process computes it (same batch, same rows), so the figures are the same bits for
/// any number of ranks.
enum DistributedEvaluation {
    /// Perplexity over non-overlapping windows: window w is evaluated on rank w mod size; each window's mean NLL
    /// is summed into a buffer of all windows (zero elsewhere), so every rank ends with every window's value.
    /// - tokens: [stream]
    /// - source: the file the tokens came from, for messages
    static func perplexity(checkpoint: Checkpoint, tokens: [Int], source: String, seqlen: Int, maxWindows: Int?, comm: Communicator,
                           onBlock: ((Int) -> Void)? = nil) throws -> (perplexity: Double, windows: Int) {
        let windows = try Perplexity.windows(tokens: tokens, seqlen: seqlen, maxWindows: maxWindows)
        try Perplexity.checkVocabulary(windows, vocabSize: checkpoint.config.vocabSize, source: source)
        let mine = comm.shardIndices(windows.count)
        let values = try Perplexity.windowMeanNLL(checkpoint: checkpoint, windows: mine.map { windows[$0] }, seqlen: seqlen,
                                                  windowNumbers: mine, onBlock: onBlock)
        var all = [Double](repeating: 0, count: windows.count)
        for (w, value) in zip(mine, values) { all[w] = value }
        try comm.allreduceSum(&all)
        return (Perplexity.perplexity(windowMeanNLL: all), windows.count)
    }

    /// One zero-shot task: every (context, choice) pair is tokenized the harness's way, the pairs are cut into
    /// length-sorted batches, batch b is scored on rank b mod size, and the log-likelihoods are summed over ranks.
    static func zeroShot(task: ZeroShotTask, file: URL, limit: Int?, checkpoint: Checkpoint, embedding: LlamaEmbedding,
                         head: LlamaHead, tokenizer: Tokenizer, comm: Communicator, batchTokens: Int = 4096) throws -> ZeroShotTaskResult {
        let start = Date()
        let documents = try task.documents(url: file, limit: limit)
        // Contexts repeat across a document's choices: encode each distinct text once.
        var encoded: [String: [Int]] = [:]
        let encode: (String) -> [Int] = { text in
            if let ids = encoded[text] { return ids }
            let ids = tokenizer.encode(text)
            encoded[text] = ids
            return ids
        }
        var sequences: [ScoredSequence] = []
        var firstSequence: [Int] = []  // [documents]: index of each document's first choice in `sequences`
        for (d, document) in documents.enumerated() {
            firstSequence.append(sequences.count)
            for (context, continuation) in zip(document.contexts, document.continuations) {
                var pair = ScoredSequence(context: context, continuation: continuation, encode: encode)
                // Longer than the model's positions: the harness keeps the last tokens (left truncation).
                let overflow = pair.ids.count - checkpoint.config.maxPositionEmbeddings
                if overflow > 0 {
                    guard pair.continuationStart - overflow >= 1 else {
                        throw PruneDistError(.data, "\(file.path): document \(d + 1): a choice has \(pair.ids.count - pair.continuationStart) tokens, too many for the model's \(checkpoint.config.maxPositionEmbeddings) positions (task \(task.rawValue))")
                    }
                    pair = ScoredSequence(ids: Array(pair.ids[overflow...]), continuationStart: pair.continuationStart - overflow)
                }
                guard pair.continuationStart >= 1 else {
                    throw PruneDistError(.data, "\(file.path): document \(d + 1) has an empty context (task \(task.rawValue)); nothing to condition on")
                }
                guard pair.ids.count > pair.continuationStart else {
                    throw PruneDistError(.data, "\(file.path): document \(d + 1): a choice encodes to no tokens (task \(task.rawValue))")
                }
                sequences.append(pair)
            }
        }
        let plan = ZeroShotScoring.batches(sequences: sequences, batchTokens: batchTokens)
        let mine = comm.shard(plan)
        var scores = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head,
                                                        sequences: sequences, batches: mine, batchTokens: batchTokens)
        try comm.allreduceSum(&scores)

        var correct = 0, correctNorm = 0
        for (d, document) in documents.enumerated() {
            let first = firstSequence[d]
            let picked = ZeroShotScoring.predictions(document: document, scores: Array(scores[first..<(first + document.contexts.count)]))
            if picked.acc == document.gold { correct += 1 }
            if picked.accNorm == document.gold { correctNorm += 1 }
        }
        let n = documents.count
        return ZeroShotTaskResult(
            task: task.rawValue, documents: n, correct: correct, correctNorm: correctNorm,
            acc: Double(correct) / Double(n), accStderr: ZeroShotTaskResult.standardError(correct: correct, documents: n),
            accNorm: task.hasNormalisedAccuracy ? Double(correctNorm) / Double(n) : nil,
            accNormStderr: task.hasNormalisedAccuracy ? ZeroShotTaskResult.standardError(correct: correctNorm, documents: n) : nil,
            seconds: Date().timeIntervalSince(start))
    }

    /// Several tasks read from `folder` (one file per task, named by ZeroShotTask.fileName), one after another.
    static func zeroShot(tasks: [ZeroShotTask], folder: URL, limit: Int?, checkpoint: Checkpoint, comm: Communicator,
                         logger: Logger, batchTokens: Int = 4096) throws -> ZeroShotSummary {
        let tokenizer = try Tokenizer.load(modelDirectory: checkpoint.directory)
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        var results: [ZeroShotTaskResult] = []
        for task in tasks {
            let file = folder.appendingPathComponent(task.fileName)
            guard FileManager.default.fileExists(atPath: file.path) else {
                throw PruneDistError(.io, "\(file.path): task file for \(task.rawValue) not found in \(folder.path)")
            }
            let result = try zeroShot(task: task, file: file, limit: limit, checkpoint: checkpoint, embedding: embedding,
                                      head: head, tokenizer: tokenizer, comm: comm, batchTokens: batchTokens)
            if comm.rank == 0 {
                logger.info("\(task.rawValue): \(result.documents) documents, acc \(String(format: "%.4f", result.acc))\(result.accNorm.map { String(format: ", acc_norm %.4f", $0) } ?? "") in \(String(format: "%.1f", result.seconds)) s")
            }
            results.append(result)
        }
        return ZeroShotSummary(tasks: results)
    }

    /// `--tasks boolq,piqa,…` (names as in ZeroShotTask, `all` for the seven table tasks).
    static func parseTasks(_ list: String) throws -> [ZeroShotTask] {
        let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
        if names == ["all"] { return ZeroShotTask.allCases.filter { $0 != .sst2 } }
        guard !names.isEmpty else { throw PruneDistError(.argument, "--tasks is empty; give a comma-separated list") }
        var tasks: [ZeroShotTask] = []
        for name in names {
            guard let task = ZeroShotTask(rawValue: name == "winogrande_xl" ? "winogrande" : name) else {
                throw PruneDistError(.argument, "unknown task \"\(name)\"; known: \(ZeroShotTask.allCases.map(\.rawValue).joined(separator: ", ")) or all")
            }
            if !tasks.contains(task) { tasks.append(task) }
        }
        return tasks
    }
}
