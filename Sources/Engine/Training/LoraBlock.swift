import CEngineKernels
import COpenBLAS
import Foundation

// One decoder block with LoRA on some of its linears: y = W x (+ b) + scaling · B (A (dropout(x))).
// The base weights are frozen: the backward computes the gradients of the inputs and of A and B only, never
// a base weight's (that matrix product would be as large as the forward's and is not needed).

/// What one adapted linear's backward needs besides its input.
public struct LoraLinearActivation: Sendable {
    /// [tokens, rank]: A · dropout(x), per token
    public var low: [Float]
    /// [tokens, in_features]: the dropout multipliers (0 or 1/(1−p)), nil without dropout
    public var mask: [Float]?
}

/// Every intermediate of one block's LoRA forward that its backward reads.
public struct LoraBlockActivations: Sendable {
    /// The stages of the block, as for the plain backward
    public var base: LlamaBlockActivations
    /// Per adapted linear; nil for the others
    public var lora: PerLinear<LoraLinearActivation?>
}

/// out = x · Wᵀ (+ b) + scaling · (dropout(x) · Aᵀ) · Bᵀ.
/// - out: [tokens, out_features] (written)
/// - x: [tokens, in_features]
/// - mask: [tokens, in_features] dropout multipliers or nil
/// - Returns: what loraLinearBackward needs, nil when `factors` is nil
func loraLinearForward(_ out: inout [Float], _ x: [Float], _ weights: LlamaBlockWeights, _ linear: LlamaLinear,
                       factors: LoraFactors?, scaling: Float, mask: [Float]?, tokens: Int) -> LoraLinearActivation? {
    let shape = weights.shape(linear)
    ensureCount(&out, tokens * shape[0])
    applyLinear(&out, x, weights, linear, tokens: tokens)
    guard let f = factors else { return nil }
    let rank = f.a.count / f.inFeatures
    precondition(f.inFeatures == shape[1] && f.outFeatures == shape[0],
                 "loraLinearForward: factors of [\(f.outFeatures), \(f.inFeatures)] on \(linear.rawValue) of \(shape)")
    let dropped = mask.map { elementwiseProduct(x, $0) } ?? x
    if f.updateMask != nil {
        // Mask-aware: the masked dense update M ⊙ (scaling·B·A) is formed and applied as a matrix.
        let delta = f.delta(scaling: scaling)
        sgemm(.none, .transpose, m: tokens, n: f.outFeatures, k: f.inFeatures, dropped, lda: f.inFeatures, delta, ldb: f.inFeatures,
              beta: 1, &out, ldc: f.outFeatures)
        return LoraLinearActivation(low: [], mask: mask)
    }
    var low = [Float](repeating: 0, count: tokens * rank)
    sgemm(.none, .transpose, m: tokens, n: rank, k: f.inFeatures, dropped, lda: f.inFeatures, f.a, ldb: f.inFeatures,
          &low, ldc: rank)
    sgemm(.none, .transpose, m: tokens, n: f.outFeatures, k: rank, alpha: scaling, low, lda: rank, f.b, ldb: rank,
          beta: 1, &out, ldc: f.outFeatures)
    return LoraLinearActivation(low: low, mask: mask)
}

/// Backward of loraLinearForward, the base weight frozen.
/// - dX: [tokens, in_features], += dOut · W + (scaling · dOut · B · A) ⊙ mask
/// - dOut: [tokens, out_features]
/// - x: [tokens, in_features], the forward input
/// - gradient: += dA ([rank, in]) and dB ([out, rank]) when the linear is adapted
func loraLinearBackward(_ dX: inout [Float], _ dOut: [Float], _ x: [Float], _ weights: LlamaBlockWeights, _ linear: LlamaLinear,
                        factors: LoraFactors?, activation: LoraLinearActivation?, scaling: Float, tokens: Int,
                        gradient: inout LoraFactors?) {
    let shape = weights.shape(linear)
    linearBackward(&dX, nil, nil, dOut, x, weights.weight(linear), tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    guard let f = factors, let activation, var g = gradient else { return }
    gradient = nil  // uniquely held while accumulated into
    let rank = f.a.count / f.inFeatures
    if let updateMask = f.updateMask {
        loraMaskedLinearBackward(&dX, dOut, x, f, updateMask: updateMask, dropoutMask: activation.mask, scaling: scaling,
                                 tokens: tokens, gradient: &g)
        gradient = g
        return
    }
    // dB += scaling · dOutᵀ · low
    sgemm(.transpose, .none, m: f.outFeatures, n: rank, k: tokens, alpha: scaling, dOut, lda: f.outFeatures,
          activation.low, ldb: rank, beta: 1, &g.b, ldc: rank)
    // dLow = scaling · dOut · B
    var dLow = [Float](repeating: 0, count: tokens * rank)
    sgemm(.none, .none, m: tokens, n: rank, k: f.outFeatures, alpha: scaling, dOut, lda: f.outFeatures, f.b, ldb: rank,
          &dLow, ldc: rank)
    // dA += dLowᵀ · dropout(x)
    let dropped = activation.mask.map { elementwiseProduct(x, $0) } ?? x
    sgemm(.transpose, .none, m: rank, n: f.inFeatures, k: tokens, dLow, lda: rank, dropped, ldb: f.inFeatures,
          beta: 1, &g.a, ldc: f.inFeatures)
    // dX += (dLow · A) ⊙ mask
    if let mask = activation.mask {
        var dDropped = [Float](repeating: 0, count: tokens * f.inFeatures)
        sgemm(.none, .none, m: tokens, n: f.inFeatures, k: rank, dLow, lda: rank, f.a, ldb: f.inFeatures, &dDropped, ldc: f.inFeatures)
        dX.withUnsafeMutableBufferPointer { dX in
            dDropped.withUnsafeBufferPointer { dDropped in
                mask.withUnsafeBufferPointer { mask in
                    for i in 0..<dX.count { dX[i] += dDropped[i] * mask[i] }
                }
            }
        }
    } else {
        sgemm(.none, .none, m: tokens, n: f.inFeatures, k: rank, dLow, lda: rank, f.a, ldb: f.inFeatures, beta: 1, &dX, ldc: f.inFeatures)
    }
    gradient = g
}

/// One decoder block with LoRA, keeping what loraBlockBackward needs.
/// - hidden: [tokens, hidden], whole sequences of seqlen tokens
/// - factors: this layer's adapters
/// - masks: per adapted linear, [tokens, in_features] dropout multipliers, nil without dropout
public func loraBlockForward(_ hidden: [Float], weights: LlamaBlockWeights, factors: PerLinear<LoraFactors?>, scaling: Float,
                             masks: PerLinear<[Float]?>, rope: RopeTable, seqlen: Int) -> LoraBlockActivations {
    let d = weights.hiddenSize
    let tokens = hidden.count / d
    precondition(hidden.count == tokens * d && tokens % seqlen == 0 && seqlen <= rope.positions,
                 "loraBlockForward: \(hidden.count) values are not whole sequences of \(seqlen) tokens of width \(d)")
    let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
    var lora = PerLinear<LoraLinearActivation?>(repeating: nil)
    func project(_ out: inout [Float], _ x: [Float], _ linear: LlamaLinear) {
        lora[linear] = loraLinearForward(&out, x, weights, linear, factors: factors[linear], scaling: scaling,
                                         mask: masks[linear], tokens: tokens)
    }
    var attentionInput: [Float] = []
    llamaNormStage(&attentionInput, hidden, weights.inputNorm, weights: weights, tokens: tokens)
    var q: [Float] = [], k: [Float] = [], v: [Float] = []
    project(&q, attentionInput, .q)
    project(&k, attentionInput, .k)
    project(&v, attentionInput, .v)
    ropeForward(&q, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
    ropeForward(&k, rope: rope, tokens: tokens, heads: kvHeads, seqlen: seqlen)
    var attentionOutput = [Float](repeating: 0, count: tokens * heads * headDim)
    var probabilities = [Float](repeating: 0, count: seqlen * seqlen)
    attentionForward(&attentionOutput, q, k, v, probabilities: &probabilities,
                     tokens: tokens, seqlen: seqlen, heads: heads, kvHeads: kvHeads, headDim: headDim)
    var projected: [Float] = []
    project(&projected, attentionOutput, .o)
    var afterAttention = [Float](repeating: 0, count: hidden.count)
    cengine_add(&afterAttention, hidden, projected, hidden.count)
    var mlpInput: [Float] = []
    llamaNormStage(&mlpInput, afterAttention, weights.postAttentionNorm, weights: weights, tokens: tokens)
    var gate: [Float] = [], up: [Float] = []
    project(&gate, mlpInput, .gate)
    project(&up, mlpInput, .up)
    var mlpHidden = [Float](repeating: 0, count: gate.count)
    swigluForward(&mlpHidden, gate, up, count: gate.count)
    project(&projected, mlpHidden, .down)
    var output = [Float](repeating: 0, count: hidden.count)
    cengine_add(&output, afterAttention, projected, hidden.count)
    let base = LlamaBlockActivations(input: hidden, attentionInput: attentionInput, q: q, k: k, v: v,
                                     attentionOutput: attentionOutput, afterAttention: afterAttention, mlpInput: mlpInput,
                                     gate: gate, up: up, mlpHidden: mlpHidden, output: output)
    return LoraBlockActivations(base: base, lora: lora)
}

/// Backward of loraBlockForward: the gradients of the block's input and of its LoRA factors.
/// - dHidden: [tokens, hidden]; the gradient with respect to the block's output on entry, to its input on return
/// - gradients: this layer's factor gradients, += (same layout as `factors`)
public func loraBlockBackward(_ dHidden: inout [Float], activations: LoraBlockActivations, weights: LlamaBlockWeights,
                              factors: PerLinear<LoraFactors?>, scaling: Float, rope: RopeTable, seqlen: Int,
                              gradients: inout PerLinear<LoraFactors?>) {
    let tokens = activations.base.input.count / weights.hiddenSize
    var frozenInputNorm = [Float](repeating: 0, count: weights.hiddenSize)  // the norms' gradients, not used
    var frozenPostAttentionNorm = frozenInputNorm
    llamaBlockBackwardThrough(&dHidden, activations: activations.base, weights: weights, rope: rope, seqlen: seqlen,
                              dInputNorm: &frozenInputNorm, dPostAttentionNorm: &frozenPostAttentionNorm) { dX, dOut, x, linear in
        gradients.update(linear) { gradient in
            loraLinearBackward(&dX, dOut, x, weights, linear, factors: factors[linear], activation: activations.lora[linear],
                               scaling: scaling, tokens: tokens, gradient: &gradient)
        }
    }
}

/// a ⊙ b.
/// - a, b: [n]
/// - Returns: [n]
func elementwiseProduct(_ a: [Float], _ b: [Float]) -> [Float] {
    precondition(a.count == b.count, "elementwiseProduct: \(a.count) and \(b.count) values")
    return [Float](unsafeUninitializedCapacity: a.count) { out, n in
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                for i in 0..<a.count { out[i] = a[i] * b[i] }
            }
        }
        n = a.count
    }
}

/// The factors' backward of a mask-aware linear, out = x·Wᵀ + dropout(x)·(M ⊙ scaling·B·A)ᵀ.
/// With G = M ⊙ (dOutᵀ · dropout(x)): dB += scaling · G · Aᵀ, dA += scaling · Bᵀ · G, dX += (dOut · (M ⊙ scaling·B·A)) ⊙ dropout mask.
/// - dX: [tokens, in_features], +=
/// - dOut: [tokens, out_features]
/// - x: [tokens, in_features], the forward input
/// - updateMask: [out_features, in_features]
/// - dropoutMask: [tokens, in_features] or nil
/// - gradient: += dA ([rank, in]) and dB ([out, rank])
func loraMaskedLinearBackward(_ dX: inout [Float], _ dOut: [Float], _ x: [Float], _ f: LoraFactors, updateMask: [Float],
                              dropoutMask: [Float]?, scaling: Float, tokens: Int, gradient g: inout LoraFactors) {
    let rank = f.a.count / f.inFeatures, (out, inFeatures) = (f.outFeatures, f.inFeatures)
    let dropped = dropoutMask.map { elementwiseProduct(x, $0) } ?? x
    var dDelta = [Float](repeating: 0, count: out * inFeatures)
    sgemm(.transpose, .none, m: out, n: inFeatures, k: tokens, dOut, lda: out, dropped, ldb: inFeatures, &dDelta, ldc: inFeatures)
    let masked = elementwiseProduct(dDelta, updateMask)
    sgemm(.none, .transpose, m: out, n: rank, k: inFeatures, alpha: scaling, masked, lda: inFeatures, f.a, ldb: inFeatures,
          beta: 1, &g.b, ldc: rank)
    sgemm(.transpose, .none, m: rank, n: inFeatures, k: out, alpha: scaling, f.b, lda: rank, masked, ldb: inFeatures,
          beta: 1, &g.a, ldc: inFeatures)
    let delta = f.delta(scaling: scaling)
    var dDropped = [Float](repeating: 0, count: tokens * inFeatures)
    sgemm(.none, .none, m: tokens, n: inFeatures, k: out, dOut, lda: out, delta, ldb: inFeatures, &dDropped, ldc: inFeatures)
    if let dropoutMask { dDropped = elementwiseProduct(dDropped, dropoutMask) }
    cblas_saxpy(Int32(dX.count), 1, dDropped, 1, &dX, 1)
}
