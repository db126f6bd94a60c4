import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist eval zeroshot`: multiple-choice accuracy the way lm-evaluation-harness computes it.
struct ZeroShotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zeroshot",
        abstract: "Zero-shot accuracy (acc, acc_norm, standard errors) on multiple-choice tasks, lm-evaluation-harness conventions.",
        discussion: """
        Tasks: \(ZeroShotTask.allCases.map(\.rawValue).joined(separator: ", ")) (all = the seven table tasks, without sst2). \
        Files are read from --data, one per task (boolq.validation.jsonl, …, as the Hugging Face splits are named). Under mpirun, the length-sorted batches of \
        (context, choice) pairs are shared out across ranks and the log-likelihoods summed: the counts are the \
        same for any number of ranks.
        """)

    @Option(name: .long, help: "Hugging Face model directory (config.json, safetensors, tokenizer.json).")
    var model: String

    @Option(name: .long, help: "Comma-separated tasks, e.g. boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa, or all.")
    var tasks: String = "all"

    @Option(name: .long, help: "Folder holding the task files (boolq.validation.jsonl, …).")
    var data: String

    @Option(name: .long, help: "Evaluate only the first N documents of each task.")
    var limit: Int?

    @Option(name: .long, help: "Tokens per scoring batch (padded), which bounds activation memory.")
    var batchTokens: Int = 4096

    @Flag(name: .long, help: "Print one JSON object as the last line.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let limit { try CommandLineLimits.check(limit, "--limit", in: CommandLineLimits.count) }
        // A batch holds batchTokens × hidden activations (and × vocabulary logits a slice at a time).
        try CommandLineLimits.check(batchTokens, "--batch-tokens", in: CommandLineLimits.seqlen)
        do { _ = try DistributedEvaluation.parseTasks(tasks) } catch let error as PruneDistError { throw ValidationError(error.message) }
    }

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let start = Date()
        let summary = try comm.abortingJobOnError {
            let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
            return try DistributedEvaluation.zeroShot(tasks: try DistributedEvaluation.parseTasks(tasks), folder: URL(fileURLWithPath: data),
                                                      limit: limit, checkpoint: checkpoint, comm: comm, logger: logger,
                                                      batchTokens: batchTokens)
        }
        guard comm.rank == 0 else { return }
        let seconds = Date().timeIntervalSince(start)
        printLine(summary.table)
        printLine(String(format: "%.1f s over %d rank(s)", seconds, comm.size))
        if json {
            var object = summary.jsonObject
            object["model"] = model
            object["limit"] = limit ?? NSNull()
            object["ranks"] = comm.size
            object["seconds"] = seconds
            printLine(try jsonLine(object))
        }
    }
}
