/// Where a block's computation stands: each stage is the input of one group of linears, then the output.
public enum LlamaBlockStage: Int, Comparable, CaseIterable, Sendable {
    case input, attentionInput, attentionOutput, mlpInput, mlpHidden, output

    public init(_ input: LlamaLinearInput) {
        switch input {
        case .attentionInput: self = .attentionInput
        case .attentionOutput: self = .attentionOutput
        case .mlpInput: self = .mlpInput
        case .mlpHidden: self = .mlpHidden
        }
    }

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One decoder block's intermediate values for a batch of whole sequences, computed stage by stage so that
/// pruning can change a group of linears and continue from there (true-sequential pruning costs one forward).
public struct LlamaBlockTrace: Sendable {
    public let seqlen: Int
    /// The last stage computed.
    public private(set) var stage: LlamaBlockStage
    /// [tokens, hidden]: the residual stream entering the block
    public let input: [Float]
    /// [tokens, hidden]: RMSNorm(x), read by q, k, v
    public private(set) var attentionInput: [Float] = []
    /// [tokens, heads·headDim]: attention result, read by o
    public private(set) var attentionOutput: [Float] = []
    /// [tokens, hidden]: x + o(attention)
    public private(set) var afterAttention: [Float] = []
    /// [tokens, hidden]: RMSNorm(h), read by gate, up
    public private(set) var mlpInput: [Float] = []
    /// [tokens, intermediate]: silu(gate)·up, read by down
    public private(set) var mlpHidden: [Float] = []
    /// [tokens, hidden]: the residual stream after the block
    public private(set) var output: [Float] = []

    /// - input: [tokens, hidden], tokens a multiple of seqlen (positions 0..<seqlen in each sequence)
    public init(input: [Float], seqlen: Int) {
        self.input = input
        self.seqlen = seqlen
        stage = .input
    }

    public func input(_ which: LlamaLinearInput) -> [Float] {
        precondition(stage >= LlamaBlockStage(which), "LlamaBlockTrace: \(which) not computed yet (at \(stage))")
        switch which {
        case .attentionInput: return attentionInput
        case .attentionOutput: return attentionOutput
        case .mlpInput: return mlpInput
        case .mlpHidden: return mlpHidden
        }
    }

    /// Forgets the stages after `stage`, e.g. because the linears that made them have changed.
    public mutating func rewind(to stage: LlamaBlockStage) {
        if stage < self.stage { self.stage = stage }
    }

    /// Computes every stage after the current one up to `target`, with `weights`.
    public mutating func advance(to target: LlamaBlockStage, weights: LlamaBlockWeights, rope: RopeTable) {
        let d = weights.hiddenSize
        let tokens = input.count / d
        precondition(input.count == tokens * d && tokens % seqlen == 0 && seqlen <= rope.positions,
                     "LlamaBlockTrace: \(input.count) values are not whole sequences of \(seqlen) tokens of width \(d)")
        while stage < target {
            let next = LlamaBlockStage(rawValue: stage.rawValue + 1)!
            switch next {
            case .input:
                break
            case .attentionInput:
                attentionInput = [Float](repeating: 0, count: tokens * d)
                rmsnormForward(&attentionInput, input, weights.inputNorm, tokens: tokens, dim: d, eps: weights.rmsNormEps)
            case .attentionOutput:
                attentionOutput = llamaAttentionSublayer(attentionInput, weights: weights, rope: rope, tokens: tokens, seqlen: seqlen)
            case .mlpInput:
                afterAttention = input
                var projected = [Float](repeating: 0, count: tokens * d)
                applyLinear(&projected, attentionOutput, weights, .o, tokens: tokens)
                residualForward(&afterAttention, projected, count: tokens * d)
                mlpInput = [Float](repeating: 0, count: tokens * d)
                rmsnormForward(&mlpInput, afterAttention, weights.postAttentionNorm, tokens: tokens, dim: d, eps: weights.rmsNormEps)
            case .mlpHidden:
                let ffn = weights.intermediateSize
                var gate = [Float](repeating: 0, count: tokens * ffn)
                var up = [Float](repeating: 0, count: tokens * ffn)
                applyLinear(&gate, mlpInput, weights, .gate, tokens: tokens)
                applyLinear(&up, mlpInput, weights, .up, tokens: tokens)
                mlpHidden = [Float](repeating: 0, count: tokens * ffn)
                swigluForward(&mlpHidden, gate, up, count: tokens * ffn)
            case .output:
                output = afterAttention
                var projected = [Float](repeating: 0, count: tokens * d)
                applyLinear(&projected, mlpHidden, weights, .down, tokens: tokens)
                residualForward(&output, projected, count: tokens * d)
            }
            stage = next
        }
    }
}

/// q, k, v projections, RoPE and causal attention: the input of o.
/// - attentionInput: [tokens, hidden]
/// - Returns: [tokens, heads·headDim]
func llamaAttentionSublayer(_ attentionInput: [Float], weights: LlamaBlockWeights, rope: RopeTable, tokens: Int, seqlen: Int) -> [Float] {
    let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
    let qDim = heads * headDim, kvDim = kvHeads * headDim
    var q = [Float](repeating: 0, count: tokens * qDim)
    var k = [Float](repeating: 0, count: tokens * kvDim)
    var v = [Float](repeating: 0, count: tokens * kvDim)
    applyLinear(&q, attentionInput, weights, .q, tokens: tokens)
    applyLinear(&k, attentionInput, weights, .k, tokens: tokens)
    applyLinear(&v, attentionInput, weights, .v, tokens: tokens)
    ropeForward(&q, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
    ropeForward(&k, rope: rope, tokens: tokens, heads: kvHeads, seqlen: seqlen)
    var out = [Float](repeating: 0, count: tokens * qDim)
    var probabilities = [Float](repeating: 0, count: seqlen * seqlen)
    attentionForward(&out, q, k, v, probabilities: &probabilities,
                     tokens: tokens, seqlen: seqlen, heads: heads, kvHeads: kvHeads, headDim: headDim)
    return out
}

/// One decoder block, keeping every linear's input.
/// - hidden: [tokens, hidden], tokens a multiple of seqlen (whole sequences, positions 0..<seqlen each)
public func llamaBlockTrace(_ hidden: [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int) -> LlamaBlockTrace {
    var trace = LlamaBlockTrace(input: hidden, seqlen: seqlen)
    trace.advance(to: .output, weights: weights, rope: rope)
    return trace
}

/// One decoder block, in place.
/// - hidden: [tokens, hidden], whole sequences of seqlen tokens
public func llamaBlockForward(_ hidden: inout [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int) {
    hidden = llamaBlockTrace(hidden, weights: weights, rope: rope, seqlen: seqlen).output
}

/// - out: [tokens, out_features]
/// - x: [tokens, in_features]
func applyLinear(_ out: inout [Float], _ x: [Float], _ weights: LlamaBlockWeights, _ linear: LlamaLinear, tokens: Int) {
    let shape = weights.shape(linear)
    let weight = weights.weight(linear)
    if let bias = weights.bias(linear) {
        linearForward(&out, x, weight, bias, tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    } else {
        linearForward(&out, x, weight, nil, tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    }
}
