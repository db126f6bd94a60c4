/// Everything one decoder block computes that pruning looks at: each linear's input and the block's output.
public struct LlamaBlockTrace: Sendable {
    /// [tokens, hidden]: RMSNorm(x), read by q, k, v
    public var attentionInput: [Float]
    /// [tokens, heads·headDim]: attention result, read by o
    public var attentionOutput: [Float]
    /// [tokens, hidden]: RMSNorm(h), read by gate, up
    public var mlpInput: [Float]
    /// [tokens, intermediate]: silu(gate)·up, read by down
    public var mlpHidden: [Float]
    /// [tokens, hidden]: the residual stream after the block
    public var output: [Float]

    public func input(_ which: LlamaLinearInput) -> [Float] {
        switch which {
        case .attentionInput: return attentionInput
        case .attentionOutput: return attentionOutput
        case .mlpInput: return mlpInput
        case .mlpHidden: return mlpHidden
        }
    }
}

/// One decoder block, keeping every linear's input.
/// - hidden: [tokens, hidden], tokens a multiple of seqlen (whole sequences, positions 0..<seqlen each)
public func llamaBlockTrace(_ hidden: [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int) -> LlamaBlockTrace {
    let d = weights.hiddenSize
    let tokens = hidden.count / d
    precondition(hidden.count == tokens * d && tokens % seqlen == 0 && seqlen <= rope.positions,
                 "llamaBlockTrace: \(hidden.count) values are not whole sequences of \(seqlen) tokens of width \(d)")
    let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
    let qDim = heads * headDim, kvDim = kvHeads * headDim, ffn = weights.intermediateSize

    var attentionInput = [Float](repeating: 0, count: tokens * d)
    rmsnormForward(&attentionInput, hidden, weights.inputNorm, tokens: tokens, dim: d, eps: weights.rmsNormEps)

    var q = [Float](repeating: 0, count: tokens * qDim)
    var k = [Float](repeating: 0, count: tokens * kvDim)
    var v = [Float](repeating: 0, count: tokens * kvDim)
    applyLinear(&q, attentionInput, weights, .q, tokens: tokens)
    applyLinear(&k, attentionInput, weights, .k, tokens: tokens)
    applyLinear(&v, attentionInput, weights, .v, tokens: tokens)
    ropeForward(&q, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
    ropeForward(&k, rope: rope, tokens: tokens, heads: kvHeads, seqlen: seqlen)

    var attentionOutput = [Float](repeating: 0, count: tokens * qDim)
    var probabilities = [Float](repeating: 0, count: seqlen * seqlen)
    attentionForward(&attentionOutput, q, k, v, probabilities: &probabilities,
                     tokens: tokens, seqlen: seqlen, heads: heads, kvHeads: kvHeads, headDim: headDim)

    var output = hidden
    var projected = [Float](repeating: 0, count: tokens * d)
    applyLinear(&projected, attentionOutput, weights, .o, tokens: tokens)
    residualForward(&output, projected, count: tokens * d)

    var mlpInput = [Float](repeating: 0, count: tokens * d)
    rmsnormForward(&mlpInput, output, weights.postAttentionNorm, tokens: tokens, dim: d, eps: weights.rmsNormEps)
    var gate = [Float](repeating: 0, count: tokens * ffn)
    var up = [Float](repeating: 0, count: tokens * ffn)
    applyLinear(&gate, mlpInput, weights, .gate, tokens: tokens)
    applyLinear(&up, mlpInput, weights, .up, tokens: tokens)
    var mlpHidden = [Float](repeating: 0, count: tokens * ffn)
    swigluForward(&mlpHidden, gate, up, count: tokens * ffn)
    applyLinear(&projected, mlpHidden, weights, .down, tokens: tokens)
    residualForward(&output, projected, count: tokens * d)

    return LlamaBlockTrace(attentionInput: attentionInput, attentionOutput: attentionOutput,
                           mlpInput: mlpInput, mlpHidden: mlpHidden, output: output)
}

/// One decoder block, in place.
/// - hidden: [tokens, hidden], whole sequences of seqlen tokens
public func llamaBlockForward(_ hidden: inout [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int) {
    hidden = llamaBlockTrace(hidden, weights: weights, rope: rope, seqlen: seqlen).output
}

/// - out: [tokens, out_features]
/// - x: [tokens, in_features]
private func applyLinear(_ out: inout [Float], _ x: [Float], _ weights: LlamaBlockWeights, _ linear: LlamaLinear, tokens: Int) {
    let shape = weights.shape(linear)
    let weight = weights.weight(linear)
    if let bias = weights.bias(linear) {
        linearForward(&out, x, weight, bias, tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    } else {
        linearForward(&out, x, weight, nil, tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    }
}
