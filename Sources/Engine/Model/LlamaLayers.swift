import CEngineKernels
import COpenBLAS
import Foundation

// One plain function per layer of the LLaMA forward pass, all Float32 and row-major.
// `tokens` counts rows across every sequence of a batch; attention alone needs the sequence length.

/// out = x · Wᵀ + b, the PyTorch nn.Linear.
/// - out: [tokens, outFeatures]
/// - x: [tokens, inFeatures]
/// - weight: [outFeatures, inFeatures]
/// - bias: [outFeatures] or nil
public func linearForward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                          _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                          tokens: Int, inFeatures: Int, outFeatures: Int) {
    if let bias {
        for t in 0..<tokens { (out + t * outFeatures).update(from: bias, count: outFeatures) }
    }
    sgemm(.none, .transpose, m: tokens, n: outFeatures, k: inFeatures, x, lda: inFeatures,
          weight, ldb: inFeatures, beta: bias == nil ? 0 : 1, out, ldc: outFeatures)
}

/// out = x / sqrt(mean(x²) + eps) · weight, per token.
/// - out: [tokens, dim] (may alias x)
/// - x: [tokens, dim]
/// - weight: [dim]
public func rmsnormForward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                           _ weight: UnsafePointer<Float>, tokens: Int, dim: Int, eps: Float) {
    cengine_rmsnorm(out, x, weight, tokens, dim, eps)
}

/// cos and sin of every (position, frequency) pair, HF's rotate-half convention.
public struct RopeTable: Sendable {
    public let headDim: Int
    public let positions: Int
    /// [positions, headDim/2] each.
    public let cos: [Float]
    public let sin: [Float]

    /// Inverse frequencies theta^(−2i/headDim), rescaled for `llama3` and `linear` rope scaling.
    public static func inverseFrequencies(config: LlamaConfig) throws -> [Double] {
        let half = config.headDim / 2
        var frequencies = (0..<half).map { 1 / pow(config.ropeTheta, Double(2 * $0) / Double(config.headDim)) }
        guard let scaling = config.ropeScaling else { return frequencies }
        switch scaling.ropeType {
        case "default":
            break
        case "linear":
            let factor = scaling.factor ?? 1
            frequencies = frequencies.map { $0 / factor }
        case "llama3":
            // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
            guard let factor = scaling.factor, let low = scaling.lowFreqFactor, let high = scaling.highFreqFactor,
                  let original = scaling.originalMaxPositionEmbeddings else {
                throw PruneDistError(.config, "config.json: rope_scaling of type llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
            }
            let lowWavelength = Double(original) / low, highWavelength = Double(original) / high
            frequencies = frequencies.map { frequency in
                let wavelength = 2 * Double.pi / frequency
                if wavelength < highWavelength { return frequency }
                if wavelength > lowWavelength { return frequency / factor }
                let smooth = (Double(original) / wavelength - low) / (high - low)
                return (1 - smooth) * frequency / factor + smooth * frequency
            }
        default:
            throw PruneDistError(.unsupported, "config.json: rope_scaling type \"\(scaling.ropeType)\" is not supported (default, linear and llama3 are)")
        }
        return frequencies
    }

    public init(config: LlamaConfig, positions: Int) throws {
        headDim = config.headDim
        self.positions = positions
        let frequencies = try RopeTable.inverseFrequencies(config: config)
        let half = headDim / 2
        var cos = [Float](repeating: 0, count: positions * half), sin = cos
        for p in 0..<positions {
            for i in 0..<half {
                // HF multiplies in Float32; the angle is rounded the same way before cos/sin.
                let angle = Double(Float(p) * Float(frequencies[i]))
                cos[p * half + i] = Float(Foundation.cos(angle))
                sin[p * half + i] = Float(Foundation.sin(angle))
            }
        }
        self.cos = cos
        self.sin = sin
    }
}

/// Rotates each head's pairs (i, i + headDim/2) by the angle of the token's position, in place.
/// - x: [tokens, heads·headDim]; token t sits at position t mod seqlen
public func ropeForward(_ x: UnsafeMutablePointer<Float>, rope: RopeTable, tokens: Int, heads: Int, seqlen: Int) {
    cengine_rope(x, rope.cos, rope.sin, tokens, heads, rope.headDim, seqlen)
}

/// Causal grouped-query attention: query head h reads key/value head h / (heads / kvHeads).
/// Queries go in blocks of `attentionQueryBlock` rows, each multiplied only against the keys up to its last row, so
/// QKᵀ and PV skip most of the masked upper half (at 512 tokens, 10/16 of the square's flops).
/// - out: [tokens, heads·headDim]
/// - q: [tokens, heads·headDim] (rotated)
/// - k: [tokens, kvHeads·headDim] (rotated)
/// - v: [tokens, kvHeads·headDim]
/// - probabilities: scratch [seqlen, seqlen]
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>,
                             _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                             probabilities: UnsafeMutablePointer<Float>,
                             tokens: Int, seqlen: Int, heads: Int, kvHeads: Int, headDim: Int) {
    let qStride = heads * headDim, kvStride = kvHeads * headDim
    let group = heads / kvHeads
    let scale = 1 / Float(headDim).squareRoot()
    for start in stride(from: 0, to: tokens, by: seqlen) {
        for h in 0..<heads {
            let g = h / group
            let qh = q + start * qStride + h * headDim
            let kg = k + start * kvStride + g * headDim
            let vg = v + start * kvStride + g * headDim
            for first in stride(from: 0, to: seqlen, by: attentionQueryBlock) {
                let rows = min(attentionQueryBlock, seqlen - first), keys = first + rows
                sgemm(.none, .transpose, m: rows, n: keys, k: headDim, alpha: scale, qh + first * qStride, lda: qStride,
                      kg, ldb: kvStride, probabilities, ldc: seqlen)
                cengine_causal_softmax(probabilities, rows, first, keys, seqlen)
                sgemm(.none, .none, m: rows, n: headDim, k: keys, probabilities, lda: seqlen,
                      vg, ldb: kvStride, out + (start + first) * qStride + h * headDim, ldc: qStride)
            }
        }
    }
}

/// Query rows per attention product: small enough to skip most of the masked half, large enough for GEMM speed.
let attentionQueryBlock = 128

/// Softmax of row t over columns 0...t, zero beyond: the causal mask.
/// - scores: [seqlen, seqlen], overwritten by probabilities
func causalSoftmaxRows(_ scores: UnsafeMutablePointer<Float>, seqlen: Int) {
    cengine_causal_softmax(scores, seqlen, 0, seqlen, seqlen)
}

/// hidden = silu(gate) · up, SwiGLU's gating.
/// - out: [count]
/// - gate, up: [count]
public func swigluForward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>,
                          _ up: UnsafePointer<Float>, count: Int) {
    cengine_swiglu(out, gate, up, count)
}

/// x += y.
/// - x, y: [count]
public func residualForward(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
    cblas_saxpy(Int32(count), 1, y, 1, x, 1)
}
