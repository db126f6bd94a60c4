import Engine
import Foundation

/// What one rank of a prune run holds in memory and sends per block, predicted from the model's shape
/// alone (no weights needed), following what `PruneRun` allocates:
///
/// - weights: the current block in Float32 twice (dense and pruned copy); the embedding table in Float32
///   while the calibration sequences are embedded;
/// - statistics (Double): per linear input of width n, the local sums (n² for the Hessian, another n² for
///   KRP's cross term, hidden·n for down_proj's, taken against its outputs) plus one packed copy while they are
///   reduced; the owner keeps the normalised sums of its linears through its solve;
/// - activations: the rank's share of sequences as hidden states ([tokens, hidden] per stream, two streams
///   for KRP) and the staged block trace of each sequence (RMSNorm outputs, attention result, residual,
///   MLP hidden [tokens, ffn]) for the pruned stream and, for KRP, the dense one (with down's output);
/// - work space: the owner's solve (Double copies of the weight, right-hand sides, factor) and one
///   sequence's forward scratch (q, k, v, attention probabilities or gate and up);
/// - mapped checkpoint pages: the block being read (the checkpoint is memory-mapped, so pages already read
///   stay counted in the resident size until the kernel needs the memory back: they are reclaimable).
///
/// Peak is the largest sum over the moments of a block (each phase's statistics, each owned solve, the
/// end of the block). `baseBytes` (runtime, libraries, MPI, OpenBLAS buffer) was measured, see docs/decisions.md.
struct MemoryPlan: Sendable {
    struct Request: Sendable {
        var config: LlamaConfig
        var ranks: Int
        var samples: Int
        var seqlen: Int
        var method: PruneMethod
        var trueSequential: Bool
        /// Bytes of the checkpoint files, and the bytes of one block's tensors as stored.
        var checkpointBytes: Int
        var storageBytesPerElement: Int
        /// Only rank 0 reads the checkpoint (`--weights broadcast`).
        var weightsBroadcast: Bool = false
        /// Each linear's pattern in the first block, nil where --ignore leaves it as it is: what the solvers of a
        /// linear shared by several ranks exchange (an unstructured pattern's scores, the errors of a pruned linear).
        var patterns = PerLinear<SparsityPattern?>(repeating: .unstructured(fraction: 0.5))
    }

    struct Rank: Sendable {
        var rank: Int
        var sequences: Int
        var weightsBytes: Int
        var statisticsBytes: Int
        var activationsBytes: Int
        var workBytes: Int
        var baseBytes: Int
        /// Private memory at the worst moment: what must fit.
        var peakBytes: Int
        /// Checkpoint pages mapped while a block is read (part of the footprint that must fit).
        var mappedBlockBytes: Int
        /// The resident size `ps`/VmHWM would show when the page cache keeps every page read.
        var residentWithCacheBytes: Int
        var sentBytesPerBlock: Int
        var neededBytes: Int { peakBytes + mappedBlockBytes }
    }

    /// Runtime, Swift/Foundation and Open MPI (code and data pages): the peak of a tiny-llama run.
    static let runtimeBytes = 44 << 20
    /// OpenBLAS's per-thread packing buffer (BUFFER_SIZE, 32 MiB), touched in full once GEMM panels are large.
    static let blasBufferBytes = 32 << 20
    /// What every rank holds besides the run's data (calibrated on SmolLM2 and tiny-llama; docs/decisions.md).
    static func baseBytes(_ config: LlamaConfig) -> Int {
        runtimeBytes + (config.hiddenSize >= 256 ? blasBufferBytes : 0)
    }

    let request: Request
    let ranks: [Rank]
    let blockWeightBytes: Int

    init(_ request: Request) {
        self.request = request
        let c = request.config
        let d = c.hiddenSize, f = c.intermediateSize
        let q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        let L = request.seqlen
        let layerElements = LlamaLinear.allCases.reduce(0) { total, linear in
            total + linear.shape(config: c, layer: 0).reduce(1, *)
        } + 2 * d
        blockWeightBytes = layerElements * 4
        let plan = OwnershipPlan(config: c, ranks: request.ranks, trueSequential: request.trueSequential,
                                 statisticsPerInput: request.method.statisticsPerInput, splitRows: request.method.splitsRows)
        // Double matrices of n² per input (Hessian, cross term) and vectors of n (column norms), as the method needs.
        let needs = request.method.statistics
        let perInput = (needs.hessian ? 1 : 0) + (needs.cross ? 1 : 0)
        // KRP's cross term of down_proj's input is [d, f] against the dense outputs (the dense trace keeps them).
        let crossOutputs = request.method.statistics(for: .mlpHidden) { $0.shape(config: c, layer: 0) }.crossOutputs
        let streams = request.method.needsDenseStream ? 2 : 1
        func inputWidth(_ input: LlamaLinearInput) -> Int {
            switch input {
            case .attentionInput, .mlpInput: return d
            case .attentionOutput: return q
            case .mlpHidden: return f
            }
        }
        // Float32 elements per token a pruned trace holds once advanced to the stage of `input` (input excluded).
        func traceElements(upTo input: LlamaLinearInput?) -> Int {
            switch input {
            case .attentionInput: return d
            case .attentionOutput: return d + q
            case .mlpInput: return 3 * d + q
            case .mlpHidden: return 3 * d + q + f
            case nil: return 4 * d + q + f
            }
        }
        let forwardScratch = max(L * (2 * q + 2 * kv) + L * L, L * (2 * f + d)) * 4
        let embeddingBytes = c.vocabSize * d * 4
        let mappedBlock = request.storageBytesPerElement * layerElements
        let log2Ranks = request.ranks > 1 ? Int(ceil(log2(Double(request.ranks)))) : 0

        // Who needs which statistics and who solves which band, looked up per rank below (plans reach 65 536 ranks).
        let statisticOwners = Dictionary(uniqueKeysWithValues: LlamaLinearInput.allCases.map {
            ($0, Set(plan.statisticOwners(layer: 0, input: $0)))
        })
        let solverPositions = PerLinear<[Int: Int]> { (linear: LlamaLinear) -> [Int: Int] in
            Dictionary(uniqueKeysWithValues: plan.solvers(layer: 0, linear: linear).enumerated().map { ($1, $0) })
        }
        var result: [Rank] = []
        for r in 0..<request.ranks {
            let sequences = request.samples / request.ranks + (r < request.samples % request.ranks ? 1 : 0)
            let tokens = sequences * L
            let streamBytes = streams * tokens * d * 4
            // The dense traces, finished: without the residual after attention, and with down's output instead of
            // the MLP hidden state when down_proj's cross term is taken against its outputs.
            let denseTraceBytes = streams == 2 ? tokens * (traceElements(upTo: nil) - d - (crossOutputs > 0 ? f - d : 0)) * 4 : 0
            var peak = (weights: 0, statistics: 0, activations: 0, work: 0)
            func consider(weights: Int, statistics: Int, activations: Int, work: Int) {
                if weights + statistics + activations + work > peak.weights + peak.statistics + peak.activations + peak.work {
                    peak = (weights, statistics, activations, work)
                }
            }
            // Embedding the sequences.
            consider(weights: embeddingBytes, statistics: 0, activations: tokens * d * 4, work: 0)
            var sent = 0
            for phase in plan.phases {
                let inputs = LlamaLinearInput.allCases.filter { input in phase.contains { $0.inputGroup == input } }
                let activations = sequences == 0 ? 0 : streamBytes + denseTraceBytes + tokens * traceElements(upTo: inputs.last!) * 4
                var held = 0
                if needs != .none {
                    for input in inputs {
                        let n = inputWidth(input)
                        let crossRows = input == .mlpHidden && crossOutputs > 0 ? crossOutputs : n
                        let payload = ((needs.hessian ? n * n : 0) + (needs.cross ? crossRows * n : 0) + (needs.columnNorms ? n : 0) + 1) * 8
                        // Local sums with the Float32 product of one sequence; then the sums and one packed copy.
                        consider(weights: 2 * blockWeightBytes, statistics: held + max(payload + n * n * 4 * min(perInput, 1), 2 * payload),
                                 activations: activations, work: forwardScratch)
                        if statisticOwners[input]!.contains(r) { held += payload }
                        // reduceSum is an MPI_Allreduce too (MPICommunicator: the root's bits must not depend on which
                        // rank it is), so owners send as much as the others: 2·(n−1)/n of the sums on a ring.
                        if request.ranks > 1 { sent += 2 * payload * (request.ranks - 1) / request.ranks }
                    }
                }
                for linear in phase {
                    let solvers = solverPositions[linear]
                    guard let position = solvers[r] else { continue }
                    let shape = linear.shape(config: c, layer: 0)
                    // A linear solved by several ranks: each works on its band of rows and sends it to the owner.
                    let m = RowBand.split(rows: shape[0], members: solvers.count)[position].count, n = shape[1]
                    let work: Int
                    switch request.method {
                    case .krp: work = 4 * m * n * 8 + n * n * 8 + m * n * 5
                    case .sparsegpt: work = 2 * m * n * 8 + n * n * 8 + m * n * 5
                    case .wanda, .magnitude: work = m * n * 12
                    case .llmPruner, .adapruner: preconditionFailure("plan: structured methods are refused by PlanCommand")
                    }
                    consider(weights: 2 * blockWeightBytes, statistics: held, activations: activations, work: work)
                    if solvers.count > 1 {
                        // Each solver's scores of every column block (an unstructured pattern's threshold), its rows'
                        // errors and energy, gathered; its band of weights to the owner, who broadcasts the whole.
                        if case let .unstructured(fraction)? = request.patterns[linear], fraction > 0 { sent += m * n * 8 }
                        if request.patterns[linear] != nil { sent += m * 3 * 8 }
                        if position > 0 { sent += m * n * 4 }
                    }
                    if position == 0 { sent += shape[0] * n * 4 * log2Ranks }
                }
            }
            // End of the block: both streams' traces complete.
            consider(weights: 2 * blockWeightBytes, statistics: 0,
                     activations: sequences == 0 ? 0 : streamBytes + (denseTraceBytes + tokens * traceElements(upTo: nil) * 4),
                     work: forwardScratch)
            // Broadcast weights travel widened to Float32 (LlamaBlockWeights), as rank 0 holds them.
            if request.weightsBroadcast, r == 0 { sent += blockWeightBytes * log2Ranks }
            let reads = !request.weightsBroadcast || r == 0
            let privatePeak = peak.weights + peak.statistics + peak.activations + peak.work + MemoryPlan.baseBytes(c)
            result.append(Rank(rank: r, sequences: sequences, weightsBytes: peak.weights, statisticsBytes: peak.statistics,
                               activationsBytes: peak.activations, workBytes: peak.work, baseBytes: MemoryPlan.baseBytes(c),
                               peakBytes: privatePeak, mappedBlockBytes: reads ? mappedBlock : 0,
                               residentWithCacheBytes: privatePeak + (reads ? request.checkpointBytes : 0),
                               sentBytesPerBlock: sent))
        }
        ranks = result
    }

    func fits(memoryPerRank: Int) -> Bool { ranks.allSatisfy { $0.neededBytes <= memoryPerRank } }

    /// The plan as a table, one line per rank (identical ranks are listed once with their range).
    func text(memoryPerRank: Int) -> String {
        let c = request.config
        var lines: [String] = []
        lines.append("model: \(c.numHiddenLayers) blocks, hidden \(c.hiddenSize), ffn \(c.intermediateSize), heads \(c.numAttentionHeads)/\(c.numKeyValueHeads), vocab \(c.vocabSize); checkpoint \(formatBytes(request.checkpointBytes))")
        lines.append("run: \(request.method.rawValue), \(request.samples) × \(request.seqlen) tokens over \(request.ranks) rank(s)\(request.trueSequential ? ", true-sequential" : "")\(request.weightsBroadcast ? ", weights broadcast from rank 0" : ""); one block in Float32 \(formatBytes(blockWeightBytes))")
        lines.append("limit per rank: \(formatBytes(memoryPerRank))")
        lines.append("rank   seqs   weights  statistics  activations  work space    base   = peak     + mapped block = needed   fits  sent/block  RSS with page cache")
        var i = 0
        while i < ranks.count {
            var j = i
            func same(_ a: Rank, _ b: Rank) -> Bool {
                a.sequences == b.sequences && a.peakBytes == b.peakBytes && a.sentBytesPerBlock == b.sentBytesPerBlock && a.mappedBlockBytes == b.mappedBlockBytes
            }
            while j + 1 < ranks.count, same(ranks[j + 1], ranks[i]) { j += 1 }
            let r = ranks[i]
            let label = i == j ? "\(i)" : "\(i)-\(j)"
            func col(_ bytes: Int, _ width: Int) -> String { formatBytes(bytes).leftPadded(to: width) }
            lines.append("\(label.rightPadded(to: 5)) \(String(r.sequences).leftPadded(to: 5)) \(col(r.weightsBytes, 9)) \(col(r.statisticsBytes, 11)) \(col(r.activationsBytes, 12)) \(col(r.workBytes, 11)) \(col(r.baseBytes, 7))   \(col(r.peakBytes, 9))  \(col(r.mappedBlockBytes, 12))   \(col(r.neededBytes, 9))  \((r.neededBytes <= memoryPerRank ? "yes" : "NO").leftPadded(to: 4)) \(col(r.sentBytesPerBlock, 11))  \(col(r.residentWithCacheBytes, 10))")
            i = j + 1
        }
        let worst = ranks.max { $0.neededBytes < $1.neededBytes }!
        if fits(memoryPerRank: memoryPerRank) {
            lines.append("fits: the largest rank needs \(formatBytes(worst.neededBytes)) of \(formatBytes(memoryPerRank)) (\(String(format: "%.0f", 100 * Double(worst.neededBytes) / Double(memoryPerRank))) %)")
        } else {
            lines.append("does not fit: rank \(worst.rank) needs \(formatBytes(worst.neededBytes)) but has \(formatBytes(memoryPerRank)) (over by \(formatBytes(worst.neededBytes - memoryPerRank))); use more ranks, fewer samples or a shorter seqlen")
        }
        return lines.joined(separator: "\n")
    }

    func jsonObject(memoryPerRank: Int) -> [String: Any] {
        [
            "ranks": request.ranks, "samples": request.samples, "seqlen": request.seqlen, "method": request.method.rawValue,
            "mem_per_rank_bytes": memoryPerRank, "fits": fits(memoryPerRank: memoryPerRank),
            "block_weight_bytes": blockWeightBytes, "checkpoint_bytes": request.checkpointBytes,
            "per_rank": ranks.map { r -> [String: Any] in
                ["rank": r.rank, "sequences": r.sequences, "weights_bytes": r.weightsBytes, "statistics_bytes": r.statisticsBytes,
                 "activations_bytes": r.activationsBytes, "work_bytes": r.workBytes, "base_bytes": r.baseBytes,
                 "peak_bytes": r.peakBytes, "mapped_block_bytes": r.mappedBlockBytes, "needed_bytes": r.neededBytes,
                 "resident_with_page_cache_bytes": r.residentWithCacheBytes, "sent_bytes_per_block": r.sentBytesPerBlock]
            },
        ]
    }
}

/// "64G", "500M", "1.5T", "123456" (bytes); K/M/G/T are powers of 1024, as Slurm's --mem reads them.
func parseByteSize(_ text: String) -> Int? {
    var s = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["IB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count { s.removeLast(suffix.count); break }
    let units: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
    var scale = 1.0
    if let last = s.last, let unit = units[last] { scale = unit; s.removeLast() }
    guard let value = Double(s), value.isFinite, value > 0 else { return nil }
    // 99999999999999999T is a finite Double, but Int(…) of a Double beyond Int.max traps: such sizes saturate.
    return value * scale < 0x1p62 ? Int(value * scale) : Int.max
}

/// Bytes in binary units with three significant figures: "1.23 GiB".
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes), unit = 0
    while abs(value) >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: value >= 100 ? "%.0f" : value >= 10 ? "%.1f" : "%.2f", value) + " " + units[unit]
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
    func rightPadded(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
