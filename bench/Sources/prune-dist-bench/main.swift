import Engine
import Foundation

// Forward-pass throughput against the machine's own sgemm rate.
// Usage: prune-dist-bench forward [--tokens 512] [--layers 30] [--repeats 3]

func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Best-of-`repeats` sgemm rate for C[m,n] = A[m,k]·B[n,k]ᵀ, the layout of every linear, in GFLOP/s.
func sgemmRate(m: Int, n: Int, k: Int, repeats: Int) -> Double {
    var random = SplitMix64(seed: 1)
    let a = (0..<(m * k)).map { _ in Float(random.nextUnit()) }
    let b = (0..<(n * k)).map { _ in Float(random.nextUnit()) }
    var c = [Float](repeating: 0, count: m * n)
    var best = Double.infinity
    for _ in 0..<repeats {
        best = min(best, seconds { sgemm(.none, .transpose, m: m, n: n, k: k, a, lda: k, b, ldb: k, &c, ldc: n) })
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}

let arguments = CommandLine.arguments
func option(_ name: String, _ fallback: Int) -> Int {
    if let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let value = Int(arguments[i + 1]) { return value }
    return fallback
}
guard arguments.count >= 2, arguments[1] == "forward" else {
    print("usage: prune-dist-bench forward [--tokens 512] [--layers 30] [--repeats 3]")
    exit(2)
}
let tokens = option("--tokens", 512), layers = option("--layers", 30), repeats = option("--repeats", 3)

// SmolLM2-135M's widths.
var config = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: layers,
                         numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100_000,
                         tieWordEmbeddings: true)
config.maxPositionEmbeddings = max(tokens, 2048)
let blocks = (0..<layers).map { LlamaBlockWeights(randomWithConfig: config, layer: $0, seed: 42) }
var random = SplitMix64(seed: 7)
let embedding = (0..<(config.vocabSize * config.hiddenSize)).map { _ in Float(random.nextGaussian()) }
let input = (0..<(tokens * config.hiddenSize)).map { _ in Float(random.nextGaussian()) }
let rope = try RopeTable(config: config, positions: tokens)

var bestBlocks = Double.infinity, bestHead = Double.infinity
for _ in 0..<repeats {
    var hidden = input
    bestBlocks = min(bestBlocks, seconds {
        for block in blocks { llamaBlockForward(&hidden, weights: block, rope: rope, seqlen: tokens) }
    })
    var logits = [Float](repeating: 0, count: tokens * config.vocabSize)
    bestHead = min(bestHead, seconds {
        linearForward(&logits, hidden, embedding, nil, tokens: tokens, inFeatures: config.hiddenSize, outFeatures: config.vocabSize)
    })
}

let d = Double(config.hiddenSize), ffn = Double(config.intermediateSize), t = Double(tokens)
let qDim = Double(config.numAttentionHeads * config.headDim), kvDim = Double(config.numKeyValueHeads * config.headDim)
let linearFlops = 2 * t * (d * qDim + 2 * d * kvDim + qDim * d + 3 * d * ffn)
let attentionFlops = 2 * 2 * t * t * qDim  // QKᵀ and PV, full square (the causal half is computed and masked)
let blockFlops = Double(layers) * (linearFlops + attentionFlops)
let headFlops = 2 * t * d * Double(config.vocabSize)
let total = bestBlocks + bestHead

let peakSquare = sgemmRate(m: 2048, n: 2048, k: 2048, repeats: 5)
let peakShaped = sgemmRate(m: tokens, n: config.intermediateSize, k: config.hiddenSize, repeats: 20)
let achieved = (blockFlops + headFlops) / total / 1e9
print(String(format: "forward: %d tokens through %d blocks (hidden %d, FFN %d, %d/%d heads) + LM head (vocab %d)",
             tokens, layers, config.hiddenSize, config.intermediateSize, config.numAttentionHeads, config.numKeyValueHeads, config.vocabSize))
print(String(format: "  blocks %.3f s, head %.3f s, total %.3f s  →  %.0f tokens/s", bestBlocks, bestHead, total, t / total))
print(String(format: "  achieved %.1f GFLOP/s; sgemm 2048³ %.1f GFLOP/s (%.0f%%), sgemm %dx%dx%d %.1f GFLOP/s (%.0f%%)",
             achieved, peakSquare, 100 * achieved / peakSquare, tokens, config.intermediateSize, config.hiddenSize,
             peakShaped, 100 * achieved / peakShaped))
