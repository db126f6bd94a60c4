import CEngineKernels

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
/// Stages are written into the arrays already held when their size fits, so advancing a rewound trace (or a
/// restarted one, see llamaBlockForward) allocates nothing.
public struct LlamaBlockTrace: Sendable {
    public let seqlen: Int
    /// The last stage computed.
    public private(set) var stage: LlamaBlockStage
    /// [tokens, hidden]: the residual stream entering the block
    public private(set) var input: [Float]
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
    public internal(set) var output: [Float] = []
    /// [tokens, hidden]: down(mlpHidden) before the residual sum, when `keepsMLPOutput` (KRP's dense stream: its
    /// cross term for down_proj is taken against these outputs, see StatisticsNeeds.crossOutputs)
    public private(set) var mlpOutput: [Float] = []
    /// Whether the output stage keeps down's output in `mlpOutput` (by default it goes through a scratch buffer).
    public var keepsMLPOutput = false
    /// Set by `releaseStagesOnlyTheOutputReads()`: the trace is then finished, it can be read but not advanced again.
    public private(set) var releasedStagesBeforeOutput = false

    /// - input: [tokens, hidden], tokens a multiple of seqlen (positions 0..<seqlen in each sequence)
    public init(input: [Float], seqlen: Int) {
        self.input = input
        self.seqlen = seqlen
        stage = .input
    }

    /// Starts again from a new input of the same shape, keeping the stages' storage.
    /// - input: [tokens, hidden]
    mutating func restart(input: [Float]) {
        self.input = input
        stage = .input
    }

    public func input(_ which: LlamaLinearInput) -> [Float] {
        precondition(stage >= LlamaBlockStage(which), "LlamaBlockTrace: \(which) not computed yet (at \(stage))")
        precondition(which != .mlpHidden || !releasedStagesBeforeOutput || !keepsMLPOutput, "LlamaBlockTrace: mlpHidden was released")
        switch which {
        case .attentionInput: return attentionInput
        case .attentionOutput: return attentionOutput
        case .mlpInput: return mlpInput
        case .mlpHidden: return mlpHidden
        }
    }

    /// Frees the stages that only the output stage reads: afterAttention, and mlpHidden when `keepsMLPOutput` (its one
    /// reader, down_proj, is then summarised by mlpOutput). KRP's dense stream holds a finished trace per sequence for
    /// the whole block, and this keeps it smaller than it was before it kept mlpOutput.
    public mutating func releaseStagesOnlyTheOutputReads() {
        precondition(stage == .output, "LlamaBlockTrace: release before the output stage (at \(stage))")
        afterAttention = []
        if keepsMLPOutput { mlpHidden = [] }
        releasedStagesBeforeOutput = true
    }

    /// Forgets the stages after `stage`, e.g. because the linears that made them have changed.
    public mutating func rewind(to stage: LlamaBlockStage) {
        precondition(!releasedStagesBeforeOutput || stage >= self.stage, "LlamaBlockTrace: a released trace cannot be rewound")
        if stage < self.stage { self.stage = stage }
    }

    /// Computes every stage after the current one up to `target`, with `weights`.
    /// - scratch: q, k, v, gate, up and projection buffers, reused across calls (a fresh one when nil)
    public mutating func advance(to target: LlamaBlockStage, weights: LlamaBlockWeights, rope: RopeTable,
                                 scratch: LlamaBlockScratch? = nil) {
        let d = weights.hiddenSize
        let tokens = input.count / d
        precondition(input.count == tokens * d && tokens % seqlen == 0 && seqlen <= rope.positions,
                     "LlamaBlockTrace: \(input.count) values are not whole sequences of \(seqlen) tokens of width \(d)")
        let scratch = scratch ?? LlamaBlockScratch()
        while stage < target {
            let next = LlamaBlockStage(rawValue: stage.rawValue + 1)!
            switch next {
            case .input:
                break
            case .attentionInput:
                llamaNormStage(&attentionInput, input, weights.inputNorm, weights: weights, tokens: tokens)
            case .attentionOutput:
                llamaAttentionStage(&attentionOutput, q: &scratch.q, k: &scratch.k, v: &scratch.v,
                                    probabilities: &scratch.probabilities, attentionInput: attentionInput,
                                    weights: weights, rope: rope, tokens: tokens, seqlen: seqlen)
            case .mlpInput:
                llamaResidualStage(&afterAttention, input, attentionOutput, .o, projected: &scratch.projected,
                                   weights: weights, tokens: tokens)
                llamaNormStage(&mlpInput, afterAttention, weights.postAttentionNorm, weights: weights, tokens: tokens)
            case .mlpHidden:
                llamaMLPHiddenStage(&mlpHidden, gate: &scratch.gate, up: &scratch.up, mlpInput: mlpInput,
                                    weights: weights, tokens: tokens)
            case .output:
                if keepsMLPOutput {
                    llamaResidualStage(&output, afterAttention, mlpHidden, .down, projected: &mlpOutput,
                                       weights: weights, tokens: tokens)
                } else {
                    llamaResidualStage(&output, afterAttention, mlpHidden, .down, projected: &scratch.projected,
                                       weights: weights, tokens: tokens)
                }
            }
            stage = next
        }
    }
}

/// The buffers a block forward needs only inside a stage (q, k, v, attention probabilities, gate, up, a
/// projection before its residual sum). One per rank, reused from sequence to sequence and block to block,
/// so a forward allocates nothing per stage. Not shared between threads.
public final class LlamaBlockScratch {
    /// [tokens, heads·headDim], [tokens, kvHeads·headDim] twice
    var q: [Float] = [], k: [Float] = [], v: [Float] = []
    /// [seqlen, seqlen]
    var probabilities: [Float] = []
    /// [tokens, intermediate] each
    var gate: [Float] = [], up: [Float] = []
    /// [tokens, hidden]
    var projected: [Float] = []
    /// A block forward from scratch for llamaBlockForward.
    var trace: LlamaBlockTrace? = nil

    public init() {}

    /// Frees the buffers (they come back at the next forward), so they do not add to the peak of a phase that
    /// holds other large arrays, such as a block's statistics.
    public func release() {
        q = []; k = []; v = []; probabilities = []; gate = []; up = []; projected = []
        trace = nil
    }
}

// The stages of a block, shared by LlamaBlockTrace (pruning, evaluation) and llamaBlockForwardKeepingActivations
// (gradients). Each writes its outputs over the arrays passed in, reallocating only when the size differs.

/// Makes `array` hold `count` values, keeping its storage when it already does (contents are then overwritten).
@inline(__always)
func ensureCount(_ array: inout [Float], _ count: Int) {
    if array.count != count { array = [Float](unsafeUninitializedCapacity: count) { _, n in n = count } }
}

/// out = RMSNorm(x) · weight.
/// - out: [tokens, hidden] (written)
/// - x: [tokens, hidden]
/// - norm: [hidden]
func llamaNormStage(_ out: inout [Float], _ x: [Float], _ norm: [Float], weights: LlamaBlockWeights, tokens: Int) {
    ensureCount(&out, tokens * weights.hiddenSize)
    rmsnormForward(&out, x, norm, tokens: tokens, dim: weights.hiddenSize, eps: weights.rmsNormEps)
}

/// q, k, v projections, RoPE and causal attention: the input of o.
/// - out: [tokens, heads·headDim] (written)
/// - q: [tokens, heads·headDim], k, v: [tokens, kvHeads·headDim] (written: rotated queries and keys, values)
/// - probabilities: [seqlen, seqlen] scratch
/// - attentionInput: [tokens, hidden]
func llamaAttentionStage(_ out: inout [Float], q: inout [Float], k: inout [Float], v: inout [Float],
                         probabilities: inout [Float], attentionInput: [Float],
                         weights: LlamaBlockWeights, rope: RopeTable, tokens: Int, seqlen: Int) {
    let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
    let qDim = heads * headDim, kvDim = kvHeads * headDim
    ensureCount(&q, tokens * qDim)
    ensureCount(&k, tokens * kvDim)
    ensureCount(&v, tokens * kvDim)
    applyLinear(&q, attentionInput, weights, .q, tokens: tokens)
    applyLinear(&k, attentionInput, weights, .k, tokens: tokens)
    applyLinear(&v, attentionInput, weights, .v, tokens: tokens)
    ropeForward(&q, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
    ropeForward(&k, rope: rope, tokens: tokens, heads: kvHeads, seqlen: seqlen)
    ensureCount(&out, tokens * qDim)
    ensureCount(&probabilities, seqlen * seqlen)
    attentionForward(&out, q, k, v, probabilities: &probabilities,
                     tokens: tokens, seqlen: seqlen, heads: heads, kvHeads: kvHeads, headDim: headDim)
}

/// out = residual + linear(x): o after attention, down after the MLP.
/// - out: [tokens, hidden] (written)
/// - residual: [tokens, hidden]
/// - x: [tokens, linear's inputs]
/// - projected: [tokens, hidden] scratch
func llamaResidualStage(_ out: inout [Float], _ residual: [Float], _ x: [Float], _ linear: LlamaLinear,
                        projected: inout [Float], weights: LlamaBlockWeights, tokens: Int) {
    let count = tokens * weights.hiddenSize
    ensureCount(&projected, count)
    applyLinear(&projected, x, weights, linear, tokens: tokens)
    ensureCount(&out, count)
    cengine_add(&out, residual, projected, count)
}

/// silu(gate(x)) · up(x), the input of down.
/// - out: [tokens, intermediate] (written)
/// - gate, up: [tokens, intermediate] (written)
/// - mlpInput: [tokens, hidden]
func llamaMLPHiddenStage(_ out: inout [Float], gate: inout [Float], up: inout [Float], mlpInput: [Float],
                         weights: LlamaBlockWeights, tokens: Int) {
    let count = tokens * weights.intermediateSize
    ensureCount(&gate, count)
    ensureCount(&up, count)
    applyLinear(&gate, mlpInput, weights, .gate, tokens: tokens)
    applyLinear(&up, mlpInput, weights, .up, tokens: tokens)
    ensureCount(&out, count)
    swigluForward(&out, gate, up, count: count)
}

/// One decoder block, keeping every linear's input.
/// - hidden: [tokens, hidden], tokens a multiple of seqlen (whole sequences, positions 0..<seqlen each)
public func llamaBlockTrace(_ hidden: [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int,
                            scratch: LlamaBlockScratch? = nil) -> LlamaBlockTrace {
    var trace = LlamaBlockTrace(input: hidden, seqlen: seqlen)
    trace.advance(to: .output, weights: weights, rope: rope, scratch: scratch)
    return trace
}

/// One decoder block, in place.
/// - hidden: [tokens, hidden], whole sequences of seqlen tokens
/// - scratch: kept between calls, it also holds the stages, so a loop over sequences and blocks allocates nothing
public func llamaBlockForward(_ hidden: inout [Float], weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int,
                              scratch: LlamaBlockScratch? = nil) {
    let scratch = scratch ?? LlamaBlockScratch()
    var trace = scratch.trace ?? LlamaBlockTrace(input: [], seqlen: seqlen)
    scratch.trace = nil  // so the trace's arrays are uniquely held while it is written
    if trace.seqlen != seqlen { trace = LlamaBlockTrace(input: [], seqlen: seqlen) }
    trace.restart(input: hidden)
    trace.advance(to: .output, weights: weights, rope: rope, scratch: scratch)
    // The output becomes `hidden`; the old input's storage becomes the next call's output.
    swap(&hidden, &trace.output)
    trace.restart(input: [])
    scratch.trace = trace
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
