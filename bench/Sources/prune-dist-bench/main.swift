import COpenBLAS
import Engine
import Foundation

// Throughput of the three hot paths of a prune run against this machine's own BLAS rates (issue 15, target 2):
// a block forward (per 512-token sequence, as pruning and evaluation run it), `eval perplexity` (blocks, final
// norm, LM head and log-softmax) and the statistics (ssyrk per sequence into Double sums).
// Times are CPU seconds of this thread (CLOCK_THREAD_CPUTIME_ID), best of `repeats`: on a shared machine wall
// time counts other processes' turns, CPU time does not. Rates and the reference sgemm/ssyrk rates are taken
// the same way, in the same process, so the fractions compare like with like.
// Usage: prune-dist-bench forward [--seqlen 512] [--sequences 4] [--layers 4] [--repeats 3] [--threads 1]
// (`prune-dist-bench dequantize`: Dequantize.swift.)

func cpuSeconds(_ body: () -> Void) -> Double {
    var start = timespec(), end = timespec()
    // With several BLAS threads the process clock is the one that counts all the work.
    let clock = blasThreads > 1 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_THREAD_CPUTIME_ID
    clock_gettime(clock, &start)
    body()
    clock_gettime(clock, &end)
    let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    // CPU seconds over threads; divided by the thread count this is the time the run would take on idle cores.
    return seconds / Double(blasThreads)
}

func best(_ repeats: Int, _ body: () -> Void) -> Double {
    (0..<repeats).map { _ in cpuSeconds(body) }.min()!
}

func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
    var random = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float(random.nextGaussian()) }
}

/// sgemm rate for C[m,n] = A[m,k]·B[n,k]ᵀ, the layout of every linear, in GFLOP/s.
func sgemmRate(m: Int, n: Int, k: Int, repeats: Int) -> Double {
    let a = randomFloats(m * k, seed: 1), b = randomFloats(n * k, seed: 2)
    var c = [Float](repeating: 0, count: m * n)
    let seconds = best(repeats) { sgemm(.none, .transpose, m: m, n: n, k: k, a, lda: k, b, ldb: k, &c, ldc: n) }
    return 2 * Double(m) * Double(n) * Double(k) / seconds / 1e9
}

/// ssyrk rate for the upper triangle of XᵀX, X [n, d] (what a Hessian batch is), in GFLOP/s (d²·n flops).
func ssyrkRate(d: Int, n: Int, repeats: Int) -> Double {
    let x = randomFloats(n * d, seed: 3)
    var c = [Float](repeating: 0, count: d * d)
    let seconds = best(repeats) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1, x, Int32(d), 0, &c, Int32(d))
    }
    return Double(d) * Double(d) * Double(n) / seconds / 1e9
}

let arguments = CommandLine.arguments
func option(_ name: String, _ fallback: Int) -> Int {
    if let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let value = Int(arguments[i + 1]) { return value }
    return fallback
}
guard arguments.count >= 2, ["forward", "dequantize", "make-gguf", "solve"].contains(arguments[1]),
      arguments[1] != "make-gguf" || (arguments.count >= 4 && !arguments[2].hasPrefix("--") && !arguments[3].hasPrefix("--")) else {
    print("usage: prune-dist-bench forward [--seqlen 512] [--sequences 4] [--layers 4] [--repeats 3] [--threads 1]")
    print("       prune-dist-bench dequantize [--values 16777216] [--repeats 5]")
    print("       prune-dist-bench solve [--rows 896] [--columns 4864] [--tokens 2048] [--repeats 2] [--threads 1]")
    print("       prune-dist-bench make-gguf SOURCE.gguf OUT.gguf [--layers 24] [--hidden 1536] [--ffn 4096] [--heads 12] [--kv-heads 4] [--gaussian]")
    exit(2)
}
let seqlen = option("--seqlen", 512), sequences = option("--sequences", 4), layers = option("--layers", 4)
let repeats = option("--repeats", 3)
let blasThreads = option("--threads", 1)
setBLASThreads(blasThreads)
if arguments[1] == "solve" {
    try runSolveBench(rows: option("--rows", 896), columns: option("--columns", 4864), tokens: option("--tokens", 2048),
                      repeats: option("--repeats", 2))
    exit(0)
}
if arguments[1] == "make-gguf" {
    try makeLargeGGUF(from: URL(fileURLWithPath: arguments[2]), to: URL(fileURLWithPath: arguments[3]), layers: option("--layers", 24),
                      hidden: option("--hidden", 1536), ffn: option("--ffn", 4096), heads: option("--heads", 12), kvHeads: option("--kv-heads", 4),
                      gaussian: arguments.contains("--gaussian"))
    exit(0)
}
if arguments[1] == "dequantize" {
    runDequantizeBench(values: option("--values", 1 << 24), repeats: option("--repeats", 5))
    exit(0)
}

// SmolLM2-135M's widths.
var config = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: layers,
                         numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100_000,
                         tieWordEmbeddings: true)
config.maxPositionEmbeddings = max(seqlen, 2048)
let blocks = (0..<layers).map { LlamaBlockWeights(randomWithConfig: config, layer: $0, seed: 42) }
let d = config.hiddenSize, vocab = config.vocabSize
let embedding = randomFloats(vocab * d, seed: 7).map { $0 * 0.05 }
let head = LlamaHead(finalNorm: [Float](repeating: 1, count: d), weight: embedding, vocabSize: vocab, hiddenSize: d,
                     rmsNormEps: 1e-5)
let inputs = (0..<sequences).map { randomFloats(seqlen * d, seed: 100 + UInt64($0)) }
let ids = (0..<(sequences * seqlen)).map { ($0 * 7919) % vocab }
let rope = try RopeTable(config: config, positions: seqlen)

// Flops that must be done: every linear, and the causal half of QKᵀ and PV (t(t+1)/2 query-key pairs).
let t = Double(seqlen), ffn = Double(config.intermediateSize)
let qDim = Double(config.numAttentionHeads * config.headDim), kvDim = Double(config.numKeyValueHeads * config.headDim)
let linearFlops = 2 * t * (Double(d) * qDim + 2 * Double(d) * kvDim + qDim * Double(d) + 3 * Double(d) * ffn)
let attentionFlops = 2 * 2 * (t * (t + 1) / 2) * qDim
let blockFlops = Double(sequences * layers) * (linearFlops + attentionFlops)
let headFlops = 2 * Double(sequences) * t * Double(d) * Double(vocab)

// 1. Block forward, one sequence at a time with one scratch (as PruneRun and Perplexity run it).
let scratch = LlamaBlockScratch()
let blockSeconds = best(repeats) {
    var hidden = inputs
    for block in blocks {
        for s in hidden.indices { llamaBlockForward(&hidden[s], weights: block, rope: rope, seqlen: seqlen, scratch: scratch) }
    }
}
// 2. eval perplexity: the same blocks, then per sequence the final norm, the LM head and the log-softmax.
let evalSeconds = best(repeats) {
    var hidden = inputs
    for block in blocks {
        for s in hidden.indices { llamaBlockForward(&hidden[s], weights: block, rope: rope, seqlen: seqlen, scratch: scratch) }
    }
    for s in hidden.indices {
        _ = head.nextTokenNLL(hidden: hidden[s], ids: Array(ids[(s * seqlen)..<((s + 1) * seqlen)]), seqlen: seqlen)
    }
}
// 3. Statistics: each sequence's ssyrk added into Double sums, for the widths of q/k/v, o, gate/up (576) and down (1536).
var statisticsFlops = 0.0
let statisticsSeconds = best(repeats) {
    statisticsFlops = 0
    for width in [d, d, d, config.intermediateSize] {
        var statistics = InputStatistics(dimension: width, needs: StatisticsNeeds(hessian: true))
        for s in 0..<sequences {
            let x = width == d ? inputs[s] : randomFloats(seqlen * width, seed: 200 + UInt64(s))
            statistics.accumulate(pruned: x, tokens: seqlen)
            statisticsFlops += Double(width * width) * t
        }
        _ = statistics.takePacked()
    }
}
// The statistics include generating the down_proj inputs; time that alone and take it out.
let generation = best(repeats) { for s in 0..<sequences { _ = randomFloats(seqlen * config.intermediateSize, seed: 200 + UInt64(s)) } }

let peakSquare = sgemmRate(m: 2048, n: 2048, k: 2048, repeats: 3)
let peakShaped = sgemmRate(m: seqlen, n: config.intermediateSize, k: d, repeats: 10)
let syrkSquare = ssyrkRate(d: 2048, n: 2048, repeats: 3)
let syrkShaped = (ssyrkRate(d: d, n: seqlen, repeats: 10) * 3 + ssyrkRate(d: config.intermediateSize, n: seqlen, repeats: 5)) / 4

let blockRate = blockFlops / blockSeconds / 1e9
let evalRate = (blockFlops + headFlops) / evalSeconds / 1e9
let statisticsRate = statisticsFlops / (statisticsSeconds - generation) / 1e9
print("OpenBLAS kernel: \(blasKernelName()), threads: \(blasThreads); CPU seconds of this process, best of \(repeats)")
print(String(format: "shapes: %d sequences × %d tokens, %d blocks (hidden %d, FFN %d, %d/%d heads), vocab %d",
             sequences, seqlen, layers, d, config.intermediateSize, config.numAttentionHeads, config.numKeyValueHeads, vocab))
print(String(format: "reference rates: sgemm 2048³ %.1f, sgemm %dx%dx%d %.1f; ssyrk 2048² × 2048 %.1f, ssyrk d×d×%d %.1f GFLOP/s",
             peakSquare, seqlen, config.intermediateSize, d, peakShaped, syrkSquare, seqlen, syrkShaped))
func row(_ name: String, _ seconds: Double, _ rate: Double, _ reference: Double, _ referenceName: String) {
    print(String(format: "%-18@ %8.3f s  %7.1f GFLOP/s  %5.1f %% of %@", name as NSString, seconds, rate,
                 100 * rate / reference, referenceName as NSString))
}
row("block forward", blockSeconds / Double(layers), blockRate, peakSquare, "sgemm peak (per block, all sequences)")
row("eval perplexity", evalSeconds, evalRate, peakSquare, "sgemm peak (blocks + head + log-softmax)")
row("statistics", statisticsSeconds - generation, statisticsRate, syrkSquare, "ssyrk peak (per-sequence syrk + Double sums)")
print(String(format: "  (vs the same-shape rates: block %.1f %% of sgemm %dx%dx%d, statistics %.1f %% of ssyrk at n = %d)",
             100 * blockRate / peakShaped, seqlen, config.intermediateSize, d, 100 * statisticsRate / syrkShaped, seqlen))
