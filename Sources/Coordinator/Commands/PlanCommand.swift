import ArgumentParser
import Engine
import Foundation

/// `prune-dist plan`: whether a prune run fits in the memory of each rank, before any weights are read.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict memory per rank (weights, statistics, activations, work space) and bytes sent per block; exit non-zero when it does not fit.",
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

    @Flag(name: .long, inversion: .prefixedNo, help: "Statistics collected phase by phase (default: on for KRP, off otherwise), as for prune.")
    var trueSequential: Bool?

    @Option(name: .long, help: "Where ranks get weights: shared (every rank reads the checkpoint) or broadcast (rank 0 reads).")
    var weights: WeightsSource = .shared

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

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
            trueSequential: trueSequential ?? (method == .krp), checkpointBytes: checkpointBytes,
            storageBytesPerElement: elementBytes, weightsBroadcast: weights == .broadcast))
        printLine(json ? try jsonLine(plan.jsonObject(memoryPerRank: limit)) : plan.text(memoryPerRank: limit))
        if !plan.fits(memoryPerRank: limit) {
            let worst = plan.ranks.max { $0.neededBytes < $1.neededBytes }!
            throw PruneDistError(.argument, "does not fit: rank \(worst.rank) needs \(formatBytes(worst.neededBytes)) (\(worst.neededBytes) bytes) but --mem-per-rank is \(formatBytes(limit)) (\(limit) bytes)")
        }
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
