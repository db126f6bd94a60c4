import ArgumentParser
import Engine
import Foundation

/// `prune-dist plan`: whether a prune run fits in the memory of each rank, before any weights are read.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict memory per rank, bytes sent, disk and time of a prune run; when it does not fit, the smallest rank count that does (exit 1).",
        discussion: """
        Give a model directory (its config.json and checkpoint sizes are read, no weights) or a config.json \
        alone (e.g. cluster/llama-2-70b.json). The numbers follow what `prune` allocates; see README.
        """)

    @Option(name: .long, help: "Hugging Face model directory.")
    var model: String?

    @Option(name: .long, help: "A config.json instead of a model directory (checkpoint size estimated from its dtype).")
    var config: String?

    @Option(name: .long, parsing: .unconditional, help: "Number of MPI ranks.")
    var ranks: Int

    @Option(name: .long, help: "Memory each rank may use, e.g. 64G (K/M/G/T are powers of 1024).")
    var memPerRank: String

    @Option(name: .long, parsing: .unconditional, help: "Number of calibration sequences.")
    var samples: Int = 128

    @Option(name: .long, parsing: .unconditional, help: "Tokens per calibration sequence.")
    var seqlen: Int = 512

    @Option(name: .long, help: "Pruning method: \(PruneMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: PruneMethod = .krp

    @Flag(name: .long, inversion: .prefixedNo, help: "Statistics collected phase by phase (default: on for KRP and unstructured SparseGPT), as for prune.")
    var trueSequential: Bool?

    @Option(name: .long, help: "Where ranks get weights: shared (every rank reads the checkpoint) or broadcast (rank 0 reads).")
    var weights: WeightsSource = .shared

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    @Option(name: .long, help: "Float32 GEMM rate per rank in GFLOP/s for the time estimate (Double taken as half); default: measured here by a 0.2 s sgemm/dgemm timing.")
    var gemmGflops: Double?

    @OptionGroup var global: GlobalOptions

    /// 1 PiB: more than any machine has, and small enough that sums of sizes stay far from Int.max.
    private var maxMemoryPerRank: Int { 1 << 50 }

    func validate() throws {
        guard (model == nil) != (config == nil) else { throw ValidationError("give exactly one of --model DIR or --config FILE") }
        try CommandLineLimits.check(ranks, "--ranks", in: CommandLineLimits.ranks)
        guard let bytes = parseByteSize(memPerRank) else { throw ValidationError("--mem-per-rank must be a size like 64G or 500M, got \(memPerRank)") }
        guard bytes <= maxMemoryPerRank else {
            throw ValidationError("--mem-per-rank \(memPerRank) is beyond the limit of \(formatBytes(maxMemoryPerRank)) (\(maxMemoryPerRank) bytes)")
        }
        try CommandLineLimits.checkCalibration(samples: samples, seqlen: seqlen)
        if let gemmGflops, !(gemmGflops.isFinite && gemmGflops > 0) { throw ValidationError("--gemm-gflops must be a positive number, got \(gemmGflops)") }
        guard !method.isStructured else { throw ValidationError("plan models the unstructured runs (magnitude, wanda, sparsegpt, krp); --method \(method.rawValue) is not modelled yet") }
    }

    func run() throws {
        _ = try global.makeLogger()
        let llamaConfig: LlamaConfig
        let checkpointBytes: Int
        let elementBytes: Int
        if let model {
            let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
            llamaConfig = checkpoint.config
            checkpointBytes = checkpoint.files.reduce(0) {
                $0 + ((try? FileManager.default.attributesOfItem(atPath: $1.url.path)[.size] as? Int) ?? 0)
            }
            elementBytes = checkpoint.storageDType.size
        } else {
            llamaConfig = try LlamaConfig.load(from: URL(fileURLWithPath: config!))
            elementBytes = (llamaConfig.dtype ?? .bf16).size
            checkpointBytes = MemoryPlan.parameterCount(llamaConfig) * elementBytes
        }
        let limit = parseByteSize(memPerRank)!
        let plan = MemoryPlan(MemoryPlan.Request(
            config: llamaConfig, ranks: ranks, samples: samples, seqlen: seqlen, method: method,
            trueSequential: trueSequential ?? method.trueSequentialByDefault(pattern: nil), checkpointBytes: checkpointBytes,
            storageBytesPerElement: elementBytes, weightsBroadcast: weights == .broadcast))
        let estimate = RunEstimate(plan: plan)
        let rate = gemmGflops.map { (float: $0, double: $0 / 2) } ?? measuredGEMMRate()
        let fits = plan.fits(memoryPerRank: limit)
        let smallest = RunEstimate.smallestRanks(plan.request, memoryPerRank: limit)
        let outputElementBytes = elementBytes
        if json {
            var object = plan.jsonObject(memoryPerRank: limit)
            let flops = estimate.flops
            object["dominant_term"] = estimate.dominantTerm.name
            object["dominant_term_bytes"] = estimate.dominantTerm.bytes
            object["smallest_fitting_ranks"] = smallest ?? NSNull()
            object["sent_bytes_per_rank_run"] = estimate.sentBytesPerRank
            object["output_bytes"] = estimate.outputBytes(outputBytesPerElement: outputElementBytes)
            object["journal_bytes"] = estimate.journalBytes
            object["disk_bytes"] = estimate.outputBytes(outputBytesPerElement: outputElementBytes) + estimate.journalBytes
            object["gemm_gflops_float"] = rate.float
            object["gemm_gflops_double"] = rate.double
            object["gemm_rate_source"] = gemmGflops == nil ? "measured" : "--gemm-gflops"
            object["flops_float"] = flops.float
            object["flops_double"] = flops.double
            object["estimated_seconds"] = estimate.seconds(floatGFLOPS: rate.float, doubleGFLOPS: rate.double)
            printLine(try jsonLine(object))
        } else {
            printLine(plan.text(memoryPerRank: limit))
            printLine(estimateLines(estimate, rate: rate, outputElementBytes: outputElementBytes, fits: fits, smallest: smallest, limit: limit)
                .joined(separator: "\n"))
        }
        if !fits {
            let worst = plan.ranks.max { $0.neededBytes < $1.neededBytes }!
            let term = estimate.dominantTerm
            throw PruneDistError(.argument, "does not fit: rank \(worst.rank) needs \(formatBytes(worst.neededBytes)) (\(worst.neededBytes) bytes) but --mem-per-rank is \(formatBytes(limit)) (\(limit) bytes); \(term.name) dominate (\(formatBytes(term.bytes))); "
                                 + (smallest.map { "the smallest rank count that fits is --ranks \($0)" } ?? "no rank count fits: give at least --mem-per-rank \(formatBytes(worst.neededBytes))"))
        }
    }
}

extension PlanCommand {
    /// The lines after the memory table: what does not fit and what would, bytes over the run, disk, time.
    func estimateLines(_ estimate: RunEstimate, rate: (float: Double, double: Double), outputElementBytes: Int, fits: Bool,
                       smallest: Int?, limit: Int) -> [String] {
        let plan = estimate.plan
        var lines: [String] = []
        let term = estimate.dominantTerm
        lines.append("largest term: \(term.name), \(formatBytes(term.bytes)) on the largest rank")
        if !fits {
            let worst = plan.ranks.max { $0.neededBytes < $1.neededBytes }!
            lines.append(smallest.map { "smallest rank count that fits in \(formatBytes(limit)) per rank: --ranks \($0) (or --mem-per-rank \(formatBytes(worst.neededBytes)) on \(ranks))" }
                         ?? "no rank count fits in \(formatBytes(limit)): weights, work space and base do not shrink with ranks; give --mem-per-rank \(formatBytes(worst.neededBytes)) or more")
        }
        let sent = estimate.sentBytesPerRank
        lines.append("sent over the whole run (\(plan.request.config.numHiddenLayers) blocks): \(formatBytes(sent.max() ?? 0)) by the busiest rank, \(formatBytes(sent.reduce(0, +))) by all")
        let output = estimate.outputBytes(outputBytesPerElement: outputElementBytes)
        lines.append("disk on --out's filesystem: output \(formatBytes(output)) + resume journal \(formatBytes(estimate.journalBytes)) at its largest = \(formatBytes(output + estimate.journalBytes))")
        let seconds = estimate.seconds(floatGFLOPS: rate.float, doubleGFLOPS: rate.double)
        let flops = estimate.flops
        lines.append(String(format: "time: about %@ (%.0f GFLOP Float32 at %.1f GFLOP/s, %.0f GFLOP Double at %.1f GFLOP/s per rank, %@; GEMMs only: communication, I/O and elementwise passes add to it)",
                            formatDuration(seconds), flops.float / 1e9, rate.float, flops.double / 1e9, rate.double,
                            gemmGflops == nil ? "measured here by a 0.2 s sgemm/dgemm timing" : "from --gemm-gflops"))
        return lines
    }
}

/// Where the ranks of a prune run get the block weights from.
enum WeightsSource: String, CaseIterable, ExpressibleByArgument, Codable, Sendable {
    /// Every rank reads the checkpoint from a shared filesystem.
    case shared
    /// Rank 0 reads the checkpoint and broadcasts each block's tensors.
    case broadcast
}

extension MemoryPlan {
    /// Parameters of a LLaMA checkpoint from its config: embedding, blocks, final norm and (untied) head.
    static func parameterCount(_ c: LlamaConfig) -> Int {
        let block = LlamaLinear.allCases.reduce(0) { $0 + $1.shape(config: c, layer: 0).reduce(1, *) } + 2 * c.hiddenSize
        return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.numHiddenLayers * block + c.hiddenSize
    }
}
