import Engine
import Foundation
import Logging
import Worker

/// What `prune --eval-*` asks to evaluate on the pruned checkpoint at the end of a run.
struct PruneRunEvaluation: Sendable {
    /// Perplexity text (or a .u16 / .json token file) and its window length.
    var text: URL?
    var seqlen: Int
    var tasks: [ZeroShotTask]
    var data: URL?
    var limit: Int?

    var isEmpty: Bool { text == nil && tasks.isEmpty }

    /// Evaluates the checkpoint in `model` over the job's ranks (all ranks call this; rank 0 wrote the
    /// checkpoint, which every rank reads from the shared output path) and returns the flat entries for the
    /// report's `evaluation` field and the lines to print.
    func evaluate(model: URL, comm: Communicator, logger: Logger) throws -> (entries: [String: Double], lines: [String]) {
        var entries: [String: Double] = [:]
        var lines: [String] = []
        let checkpoint = try Checkpoint(directory: model)
        if let text {
            let extensionName = text.pathExtension.lowercased()
            let tokens = extensionName == "u16" || extensionName == "json"
                ? try TokenFile.read(text) : try PerplexityCommand.encodeTextFile(text, modelDirectory: model)
            let start = Date()
            let (perplexity, windows) = try DistributedEvaluation.perplexity(checkpoint: checkpoint, tokens: tokens, source: text.path, seqlen: seqlen,
                                                                             maxWindows: nil, comm: comm)
            entries["perplexity"] = perplexity
            entries["perplexity.seqlen"] = Double(seqlen)
            entries["perplexity.windows"] = Double(windows)
            lines.append(String(format: "perplexity %.4f over %d windows of %d tokens (%.1f s)", perplexity, windows, seqlen, Date().timeIntervalSince(start)))
        }
        if !tasks.isEmpty {
            let summary = try DistributedEvaluation.zeroShot(tasks: tasks, folder: data!, limit: limit, checkpoint: checkpoint,
                                                             comm: comm, logger: logger)
            entries.merge(summary.reportEntries) { $1 }
            if let limit { entries["zeroshot.limit"] = Double(limit) }
            lines.append(summary.table)
        }
        return (entries, lines)
    }
}
