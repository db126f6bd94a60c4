import Engine
import Foundation

/// What `plan` answers beyond memory: the smallest rank count that fits, the term that dominates a rank's
/// memory, bytes sent over the whole run, disk for the output and the resume journal, and a time estimate from
/// the machine's GEMM rate. Every figure is computed from the model's shape, like MemoryPlan.
struct RunEstimate: Sendable {
    let plan: MemoryPlan

    /// The largest term of the worst rank's need, by name (what to change to make it fit).
    var dominantTerm: (name: String, bytes: Int) {
        let worst = plan.ranks.max { $0.neededBytes < $1.neededBytes }!
        let terms = [("statistics", worst.statisticsBytes), ("activations", worst.activationsBytes), ("weights", worst.weightsBytes),
                     ("work space", worst.workBytes), ("mapped block", worst.mappedBlockBytes), ("base", worst.baseBytes)]
        return terms.max { $0.1 < $1.1 }!
    }

    /// The smallest number of ranks (up to `limit`) whose every rank fits in `memoryPerRank`; nil when none does
    /// (weights, base and the owner's work space do not shrink with more ranks).
    static func smallestRanks(_ request: MemoryPlan.Request, memoryPerRank: Int, limit: Int = 1 << 16) -> Int? {
        func fits(_ ranks: Int) -> Bool {
            var r = request
            r.ranks = ranks
            return MemoryPlan(r).fits(memoryPerRank: memoryPerRank)
        }
        var high = 1
        while !fits(high) {
            if high >= limit { return nil }
            high = min(high * 2, limit)
        }
        var low = high / 2  // does not fit (or 0)
        while high - low > 1 {
            let middle = (low + high) / 2
            if fits(middle) { high = middle } else { low = middle }
        }
        return high
    }

    /// Bytes each rank sends over the whole run (every block).
    var sentBytesPerRank: [Int] { plan.ranks.map { $0.sentBytesPerBlock * plan.request.config.numHiddenLayers } }

    /// The output folder's weights: every parameter in `outputBytesPerElement` (the input's dtype unless --dtype).
    func outputBytes(outputBytesPerElement: Int) -> Int { MemoryPlan.parameterCount(plan.request.config) * outputBytesPerElement }

    /// The resume journal at its largest (just before the run ends and removes it): every block's pruned linears
    /// in Float32 (RunJournal), beside the partial output on the same filesystem.
    var journalBytes: Int {
        let c = plan.request.config
        return c.numHiddenLayers * LlamaLinear.allCases.reduce(0) { $0 + $1.shape(config: c, layer: 0).reduce(1, *) } * 4
    }

    /// Floating-point operations of the run, by the rate they run at: Float32 (forward passes, per-sequence
    /// statistics products) and Double (the owners' solves). A coarse model of PruneRun's GEMMs: elementwise
    /// passes, communication and I/O are left out.
    var flops: (float: Double, double: Double) {
        let r = plan.request, c = r.config
        let tokens = Double(r.samples * r.seqlen)
        let d = Double(c.hiddenSize), f = Double(c.intermediateSize), q = Double(c.numAttentionHeads * c.headDim)
        let linearParameters = Double(LlamaLinear.allCases.reduce(0) { $0 + $1.shape(config: c, layer: 0).reduce(1, *) })
        let streams = r.method.needsDenseStream ? 2.0 : 1.0
        // One block forward: 2 flops per token and weight, causal attention scores and mix ~2·T·L·q.
        let forward = 2 * tokens * linearParameters + 2 * tokens * Double(r.seqlen) * q
        // Statistics stages re-run the block up to each phase's inputs: about one more pass when true-sequential.
        let passes = r.method == .magnitude ? 0 : streams + (r.trueSequential ? 1 : 0)
        let needs = r.method.statistics
        let widths = [d, q, d, f]
        // Hessians (syrk, n² per token) and KRP's cross terms (GEMMs, 2·n² per token; 2·d·f for down_proj's, against its outputs).
        let downOutputs = Double(r.method.statistics(for: .mlpHidden) { $0.shape(config: c, layer: 0) }.crossOutputs)
        let crossRows = [d, q, d, downOutputs > 0 ? downOutputs : f]   // rows of each input's cross term, in widths' order
        let crossFlops = zip(widths, crossRows).reduce(0) { $0 + 2 * tokens * $1.0 * $1.1 }
        let statistics = (needs.hessian ? widths.reduce(0) { $0 + tokens * $1 * $1 } : 0) + (needs.cross ? crossFlops : 0)
        var solve = 0.0
        for linear in LlamaLinear.allCases {
            let shape = linear.shape(config: c, layer: 0)
            let (m, n) = (Double(shape[0]), Double(shape[1]))
            switch r.method {
            case .sparsegpt: solve += n * n * n + 3 * m * n * n  // Cholesky inverse, OBS updates, errors
            case .krp: solve += 2 * n * n * n + 5 * m * n * n     // and the ridge refit toward the dense outputs
            default: break
            }
        }
        let layers = Double(c.numHiddenLayers)
        return (layers * (passes * forward + statistics), layers * solve)
    }

    /// Seconds on `ranks` ranks at the given rates (GFLOP/s per rank): the work is spread over the ranks.
    func seconds(floatGFLOPS: Double, doubleGFLOPS: Double) -> Double {
        let work = flops, ranks = Double(plan.request.ranks)
        return (work.float / (floatGFLOPS * 1e9) + work.double / (doubleGFLOPS * 1e9)) / ranks
    }
}

/// This machine's GEMM rate per rank, measured in a fraction of a second: 384 × 384 sgemm and dgemm repeated for
/// about 0.1 s each on the current OpenBLAS thread count (`--threads`).
func measuredGEMMRate() -> (float: Double, double: Double) {
    let n = 384
    func rate<T: BinaryFloatingPoint>(_ zero: T, _ gemm: ([T], [T], inout [T]) -> Void) -> Double {
        let a = [T](repeating: 1.0 / 3, count: n * n), b = a
        var c = [T](repeating: zero, count: n * n)
        gemm(a, b, &c)  // warm-up: packing buffers, threads
        // The best of four 25 ms windows: on a shared machine the other jobs only ever slow a window down.
        var best = 0.0
        for _ in 0..<4 {
            var runs = 0
            let start = Date()
            repeat { gemm(a, b, &c); runs += 1 } while Date().timeIntervalSince(start) < 0.025
            best = max(best, 2 * Double(n * n * n) * Double(runs) / Date().timeIntervalSince(start) / 1e9)
        }
        return best
    }
    let float = rate(Float(0)) { a, b, c in sgemm(.none, .none, m: n, n: n, k: n, a, lda: n, b, ldb: n, &c, ldc: n) }
    let double = rate(Double(0)) { a, b, c in dgemm(.none, .none, m: n, n: n, k: n, a, lda: n, b, ldb: n, &c, ldc: n) }
    return (float, double)
}
