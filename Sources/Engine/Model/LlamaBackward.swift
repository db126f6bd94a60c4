import COpenBLAS
import Foundation

// One backward function per forward function of LlamaLayers.swift, Float32 and row-major.
// Every backward ACCUMULATES (+=) into the gradients it is given, of inputs and of parameters alike:
// the residual stream and the q/k/v (gate/up) fan-out sum their gradients for free, and a parameter's
// gradient can be summed over batches. Callers zero a buffer before its first use.
// The one exception is crossEntropyBackward, which overwrites (it may run in place on the logits).

/// Backward of out = x · Wᵀ + b.
/// - dX: [tokens, inFeatures], += dOut · W; nil when x is a leaf nobody needs the gradient of
/// - dWeight: [outFeatures, inFeatures], += dOutᵀ · x; nil for a frozen weight (LoRA), which saves a matrix product
/// - dBias: [outFeatures] or nil, += column sums of dOut
/// - dOut: [tokens, outFeatures]
/// - x: [tokens, inFeatures], the forward input
/// - weight: [outFeatures, inFeatures]
public func linearBackward(_ dX: UnsafeMutablePointer<Float>?, _ dWeight: UnsafeMutablePointer<Float>?,
                           _ dBias: UnsafeMutablePointer<Float>?, _ dOut: UnsafePointer<Float>,
                           _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           tokens: Int, inFeatures: Int, outFeatures: Int) {
    if let dX {
        sgemm(.none, .none, m: tokens, n: inFeatures, k: outFeatures, dOut, lda: outFeatures,
              weight, ldb: inFeatures, beta: 1, dX, ldc: inFeatures)
    }
    if let dWeight {
        sgemm(.transpose, .none, m: outFeatures, n: inFeatures, k: tokens, dOut, lda: outFeatures,
              x, ldb: inFeatures, beta: 1, dWeight, ldc: inFeatures)
    }
    if let dBias {
        // A sum over every token of the batch: kept in Double.
        var sums = [Double](repeating: 0, count: outFeatures)
        for t in 0..<tokens {
            let row = dOut + t * outFeatures
            for o in 0..<outFeatures { sums[o] += Double(row[o]) }
        }
        for o in 0..<outFeatures { dBias[o] += Float(sums[o]) }
    }
}

/// Backward of out = x · r · weight with r = 1/sqrt(mean(x²) + eps), per token.
/// With s = Σ_i dOut_i · weight_i · x_i:  dx_j = r · weight_j · dOut_j − r³/dim · x_j · s.
/// - dX: [tokens, dim], +=
/// - dWeight: [dim], += Σ_tokens dOut · x · r
/// - dOut: [tokens, dim]
/// - x: [tokens, dim], the forward input (r is recomputed from it)
/// - weight: [dim]
public func rmsnormBackward(_ dX: UnsafeMutablePointer<Float>, _ dWeight: UnsafeMutablePointer<Float>,
                            _ dOut: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                            _ weight: UnsafePointer<Float>, tokens: Int, dim: Int, eps: Float) {
    var weightSums = [Double](repeating: 0, count: dim)
    for t in 0..<tokens {
        let row = x + t * dim, dOutRow = dOut + t * dim, dXRow = dX + t * dim
        var squares = 0.0, projection = 0.0
        for i in 0..<dim {
            squares += Double(row[i]) * Double(row[i])
            projection += Double(dOutRow[i]) * Double(weight[i]) * Double(row[i])
        }
        let r = 1 / (squares / Double(dim) + Double(eps)).squareRoot()
        let correction = Float(r * r * r * projection / Double(dim))
        let scale = Float(r)
        for i in 0..<dim {
            dXRow[i] += scale * weight[i] * dOutRow[i] - correction * row[i]
            weightSums[i] += Double(dOutRow[i]) * Double(row[i]) * r
        }
    }
    for i in 0..<dim { dWeight[i] += Float(weightSums[i]) }
}

/// Backward of ropeForward, in place: the rotation is orthogonal, so its transpose rotates by −angle.
/// - dX: [tokens, heads·headDim], d/d(rotated) on entry, d/d(unrotated) on return
public func ropeBackward(_ dX: UnsafeMutablePointer<Float>, rope: RopeTable, tokens: Int, heads: Int, seqlen: Int) {
    let headDim = rope.headDim, half = headDim / 2
    rope.cos.withUnsafeBufferPointer { cos in
        rope.sin.withUnsafeBufferPointer { sin in
            for t in 0..<tokens {
                let p = t % seqlen
                let c = cos.baseAddress! + p * half, s = sin.baseAddress! + p * half
                for h in 0..<heads {
                    let head = dX + (t * heads + h) * headDim
                    for i in 0..<half {
                        let d1 = head[i], d2 = head[i + half]
                        head[i] = d1 * c[i] + d2 * s[i]
                        head[i + half] = d2 * c[i] - d1 * s[i]
                    }
                }
            }
        }
    }
}

/// Backward of attentionForward (causal GQA). The probabilities are recomputed per (sequence, head)
/// from q and k, so only [seqlen, seqlen] of them exist at a time.
/// Per head, with P = softmax(scale · Q Kᵀ) and dO the head's output gradient:
///   dV += Pᵀ dO,  dP = dO Vᵀ,  dS = P ⊙ (dP − rowsum(P ⊙ dP)),  dQ += scale · dS K,  dK += scale · dSᵀ Q.
/// Masked entries have P = 0 and so dS = 0: nothing flows to future keys.
/// Query heads of one group add into their shared key/value head's gradient.
/// - dQ: [tokens, heads·headDim], +=, with respect to the rotated q
/// - dK, dV: [tokens, kvHeads·headDim], += (dK with respect to the rotated k)
/// - dOut: [tokens, heads·headDim]
/// - q: [tokens, heads·headDim], k, v: [tokens, kvHeads·headDim], the forward inputs
public func attentionBackward(_ dQ: UnsafeMutablePointer<Float>, _ dK: UnsafeMutablePointer<Float>,
                              _ dV: UnsafeMutablePointer<Float>, _ dOut: UnsafePointer<Float>,
                              _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                              tokens: Int, seqlen: Int, heads: Int, kvHeads: Int, headDim: Int) {
    let qStride = heads * headDim, kvStride = kvHeads * headDim
    let group = heads / kvHeads
    let scale = 1 / Float(headDim).squareRoot()
    var probabilities = [Float](repeating: 0, count: seqlen * seqlen)
    var dScores = [Float](repeating: 0, count: seqlen * seqlen)
    probabilities.withUnsafeMutableBufferPointer { probabilities in
        dScores.withUnsafeMutableBufferPointer { dScores in
            let p = probabilities.baseAddress!, dS = dScores.baseAddress!
            for start in stride(from: 0, to: tokens, by: seqlen) {
                for h in 0..<heads {
                    let g = h / group
                    let qh = q + start * qStride + h * headDim, dQh = dQ + start * qStride + h * headDim
                    let kg = k + start * kvStride + g * headDim, dKg = dK + start * kvStride + g * headDim
                    let vg = v + start * kvStride + g * headDim, dVg = dV + start * kvStride + g * headDim
                    let dOh = dOut + start * qStride + h * headDim
                    sgemm(.none, .transpose, m: seqlen, n: seqlen, k: headDim, alpha: scale, qh, lda: qStride,
                          kg, ldb: kvStride, p, ldc: seqlen)
                    causalSoftmaxRows(p, seqlen: seqlen)
                    sgemm(.transpose, .none, m: seqlen, n: headDim, k: seqlen, p, lda: seqlen,
                          dOh, ldb: qStride, beta: 1, dVg, ldc: kvStride)
                    sgemm(.none, .transpose, m: seqlen, n: seqlen, k: headDim, dOh, lda: qStride,
                          vg, ldb: kvStride, dS, ldc: seqlen)
                    for t in 0..<seqlen {
                        let pRow = p + t * seqlen, dRow = dS + t * seqlen
                        var expected = 0.0
                        for j in 0...t { expected += Double(pRow[j]) * Double(dRow[j]) }
                        let shift = Float(expected)
                        for j in 0...t { dRow[j] = pRow[j] * (dRow[j] - shift) }
                        for j in (t + 1)..<seqlen { dRow[j] = 0 }
                    }
                    sgemm(.none, .none, m: seqlen, n: headDim, k: seqlen, alpha: scale, dS, lda: seqlen,
                          kg, ldb: kvStride, beta: 1, dQh, ldc: qStride)
                    sgemm(.transpose, .none, m: seqlen, n: headDim, k: seqlen, alpha: scale, dS, lda: seqlen,
                          qh, ldb: qStride, beta: 1, dKg, ldc: kvStride)
                }
            }
        }
    }
}

/// Backward of out = silu(gate) · up, with silu'(g) = σ(g) · (1 + g · (1 − σ(g))).
/// - dGate, dUp: [count], +=
/// - dOut: [count]
/// - gate, up: [count], the forward inputs
public func swigluBackward(_ dGate: UnsafeMutablePointer<Float>, _ dUp: UnsafeMutablePointer<Float>,
                           _ dOut: UnsafePointer<Float>, _ gate: UnsafePointer<Float>,
                           _ up: UnsafePointer<Float>, count: Int) {
    for i in 0..<count {
        let g = gate[i]
        let sigmoid = 1 / (1 + expf(-g))
        dUp[i] += dOut[i] * g * sigmoid
        dGate[i] += dOut[i] * up[i] * sigmoid * (1 + g * (1 - sigmoid))
    }
}

/// Backward of lossScale · (−log softmax(logits)[target]): lossScale · (softmax(logits) − onehot(target)).
/// Overwrites rather than accumulates, so it may run in place on a row of logits nobody needs again.
/// - dLogits: [vocabSize] (may alias logits)
/// - logits: [vocabSize]
public func crossEntropyBackward(_ dLogits: UnsafeMutablePointer<Float>, _ logits: UnsafePointer<Float>,
                                 target: Int, vocabSize: Int, lossScale: Float) {
    var maximum = -Float.infinity
    for i in 0..<vocabSize { maximum = max(maximum, logits[i]) }
    var sum = 0.0
    for i in 0..<vocabSize { sum += Foundation.exp(Double(logits[i] - maximum)) }
    let logSum = Foundation.log(sum) + Double(maximum)
    for i in 0..<vocabSize {
        dLogits[i] = lossScale * Float(Foundation.exp(Double(logits[i]) - logSum))
    }
    dLogits[target] -= lossScale
}

/// Backward of the embedding lookup: each token's gradient lands on its row of the table.
/// - dTable: [vocab, hidden], +=
/// - dOut: [tokens, hidden]
/// - ids: [tokens], already checked against the vocabulary by the forward pass
public func embeddingBackward(_ dTable: UnsafeMutablePointer<Float>, _ dOut: UnsafePointer<Float>,
                              ids: [Int], hiddenSize: Int) {
    for (t, id) in ids.enumerated() {
        cblas_saxpy(Int32(hiddenSize), 1, dOut + t * hiddenSize, 1, dTable + id * hiddenSize, 1)
    }
}
