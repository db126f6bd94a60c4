import COpenBLAS
import Foundation

// Gradients of the mean next-token NLL with respect to every parameter, streamed block by block:
// a forward keeping only each block's input, the head's loss and its backward, then per block (last
// first) its weights loaded again, its activations recomputed from the kept input, and its backward.

/// Every intermediate of one block's forward that its backward reads.
public struct LlamaBlockActivations: Sendable {
    /// [tokens, hidden]: the block's input x
    public var input: [Float]
    /// [tokens, hidden]: RMSNorm(x), read by q, k, v
    public var attentionInput: [Float]
    /// [tokens, heads·headDim]: queries after RoPE
    public var q: [Float]
    /// [tokens, kvHeads·headDim]: keys after RoPE
    public var k: [Float]
    /// [tokens, kvHeads·headDim]
    public var v: [Float]
    /// [tokens, heads·headDim]: attention result, read by o
    public var attentionOutput: [Float]
    /// [tokens, hidden]: h = x + o(attention), the residual stream between the two halves
    public var afterAttention: [Float]
    /// [tokens, hidden]: RMSNorm(h), read by gate, up
    public var mlpInput: [Float]
    /// [tokens, intermediate] each: the two projections and silu(gate)·up, read by down
    public var gate: [Float]
    public var up: [Float]
    public var mlpHidden: [Float]
    /// [tokens, hidden]: the block's output
    public var output: [Float]
}

/// One decoder block, keeping what llamaBlockBackward needs: llamaBlockTrace's stages and its scratch's q, k, v,
/// gate and up (the same forward, nothing recomputed).
/// Holds tokens × (4·hidden + 2·(heads + kvHeads)·headDim + 3·intermediate) floats besides the input.
/// - hidden: [tokens, hidden], whole sequences of seqlen tokens
public func llamaBlockForwardKeepingActivations(_ hidden: [Float], weights: LlamaBlockWeights, rope: RopeTable,
                                                seqlen: Int) -> LlamaBlockActivations {
    let d = weights.hiddenSize
    let tokens = hidden.count / d
    precondition(hidden.count == tokens * d && tokens % seqlen == 0 && seqlen <= rope.positions,
                 "llamaBlockForwardKeepingActivations: \(hidden.count) values are not whole sequences of \(seqlen) tokens of width \(d)")
    // A fresh scratch: in one forward each of q, k, v, gate and up is written once, so they are the activations.
    let scratch = LlamaBlockScratch()
    let trace = llamaBlockTrace(hidden, weights: weights, rope: rope, seqlen: seqlen, scratch: scratch)
    return LlamaBlockActivations(input: hidden, attentionInput: trace.attentionInput, q: scratch.q, k: scratch.k, v: scratch.v,
                                 attentionOutput: trace.attentionOutput, afterAttention: trace.afterAttention,
                                 mlpInput: trace.mlpInput, gate: scratch.gate, up: scratch.up, mlpHidden: trace.mlpHidden,
                                 output: trace.output)
}

/// The gradient of the loss with respect to each parameter of one block, in the parameters' own layouts.
public struct LlamaBlockGradients: Sendable {
    public let layer: Int
    /// [hidden] each
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    /// [out, in] per linear, like its weight
    public var weights: PerLinear<[Float]>
    /// [out] per linear that has a bias, nil for the others
    public var biases: PerLinear<[Float]?>
    /// [out, in] per linear: Σ_n (∂L_n/∂W)² over the batch's sequences, L_n the mean NLL of sequence n
    /// alone (LLM-Pruner's per-sample Fisher term, before its 1/N). Nil unless asked for.
    public var squaredPerSequence: PerLinear<[Float]>? = nil

    /// Keyed by Hugging Face tensor name.
    public var tensors: [String: [Float]] {
        var named = [LlamaTensorNames.inputNorm(layer: layer): inputNorm,
                     LlamaTensorNames.postAttentionNorm(layer: layer): postAttentionNorm]
        for (linear, gradient) in weights.all { named[linear.weightName(layer: layer)] = gradient }
        for (linear, gradient) in biases.all { if let gradient { named[linear.biasName(layer: layer)] = gradient } }
        return named
    }
}

/// Backward of one block.
/// - dHidden: [tokens, hidden]; the gradient with respect to the block's output on entry, to its input on return
/// - activations: from llamaBlockForwardKeepingActivations with the same weights
public func llamaBlockBackward(_ dHidden: inout [Float], activations a: LlamaBlockActivations,
                               weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int) -> LlamaBlockGradients {
    let d = weights.hiddenSize
    let tokens = a.input.count / d
    var gradients = LlamaBlockGradients(layer: weights.layer,
                                        inputNorm: [Float](repeating: 0, count: d),
                                        postAttentionNorm: [Float](repeating: 0, count: d),
                                        // every linear's gradient is set by its blockLinearBackward below
                                        weights: PerLinear(repeating: []), biases: PerLinear(repeating: nil))
    var dInputNorm = [Float](repeating: 0, count: d), dPostAttentionNorm = [Float](repeating: 0, count: d)
    llamaBlockBackwardThrough(&dHidden, activations: a, weights: weights, rope: rope, seqlen: seqlen,
                              dInputNorm: &dInputNorm, dPostAttentionNorm: &dPostAttentionNorm) { dX, dOut, x, linear in
        blockLinearBackward(&dX, dOut, x, weights, linear, tokens: tokens, into: &gradients)
    }
    gradients.inputNorm = dInputNorm
    gradients.postAttentionNorm = dPostAttentionNorm
    return gradients
}

/// The backward through one block's structure (norms, RoPE, attention, SwiGLU, residuals) with each linear's
/// backward left to `linear`: llamaBlockBackward forms the weights' gradients there, LoRA the factors' instead.
/// - dHidden: [tokens, hidden]; the gradient with respect to the block's output on entry, to its input on return
/// - activations: the block's forward intermediates
/// - dInputNorm, dPostAttentionNorm: [hidden], +=
/// - linear(dX, dOut, x, which): dX [tokens, in] += the input gradient of linear `which`, from dOut [tokens, out] and
///   its forward input x [tokens, in]
public func llamaBlockBackwardThrough(_ dHidden: inout [Float], activations a: LlamaBlockActivations,
                                      weights: LlamaBlockWeights, rope: RopeTable, seqlen: Int,
                                      dInputNorm: inout [Float], dPostAttentionNorm: inout [Float],
                                      linear: (inout [Float], [Float], [Float], LlamaLinear) -> Void) {
    let d = weights.hiddenSize
    let tokens = a.input.count / d
    precondition(dHidden.count == a.input.count, "llamaBlockBackward: gradient of \(dHidden.count) values for an input of \(a.input.count)")
    let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
    let qDim = heads * headDim, kvDim = kvHeads * headDim, ffn = weights.intermediateSize

    // MLP half: output = h + down(swiglu(gate(m), up(m))), m = RMSNorm(h). The residual passes dHidden on to h.
    var dMlpHidden = [Float](repeating: 0, count: tokens * ffn)
    linear(&dMlpHidden, dHidden, a.mlpHidden, .down)
    var dGate = [Float](repeating: 0, count: tokens * ffn)
    var dUp = [Float](repeating: 0, count: tokens * ffn)
    swigluBackward(&dGate, &dUp, dMlpHidden, a.gate, a.up, count: tokens * ffn)
    dMlpHidden = []
    var dMlpInput = [Float](repeating: 0, count: tokens * d)
    linear(&dMlpInput, dGate, a.mlpInput, .gate)
    linear(&dMlpInput, dUp, a.mlpInput, .up)
    rmsnormBackward(&dHidden, &dPostAttentionNorm, dMlpInput, a.afterAttention, weights.postAttentionNorm,
                    tokens: tokens, dim: d, eps: weights.rmsNormEps)

    // Attention half: h = x + o(attention(rope(q(n)), rope(k(n)), v(n))), n = RMSNorm(x).
    var dAttentionOutput = [Float](repeating: 0, count: tokens * qDim)
    linear(&dAttentionOutput, dHidden, a.attentionOutput, .o)
    var dQ = [Float](repeating: 0, count: tokens * qDim)
    var dK = [Float](repeating: 0, count: tokens * kvDim)
    var dV = [Float](repeating: 0, count: tokens * kvDim)
    attentionBackward(&dQ, &dK, &dV, dAttentionOutput, a.q, a.k, a.v,
                      tokens: tokens, seqlen: seqlen, heads: heads, kvHeads: kvHeads, headDim: headDim)
    ropeBackward(&dQ, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
    ropeBackward(&dK, rope: rope, tokens: tokens, heads: kvHeads, seqlen: seqlen)
    var dAttentionInput = [Float](repeating: 0, count: tokens * d)
    linear(&dAttentionInput, dQ, a.attentionInput, .q)
    linear(&dAttentionInput, dK, a.attentionInput, .k)
    linear(&dAttentionInput, dV, a.attentionInput, .v)
    rmsnormBackward(&dHidden, &dInputNorm, dAttentionInput, a.input, weights.inputNorm,
                    tokens: tokens, dim: d, eps: weights.rmsNormEps)
}

/// The head's loss and its backward: final RMSNorm, LM head, next-token cross-entropy.
/// Logits are made a few rows at a time (as in nextTokenNLL) and turned into their gradient in place.
/// - hidden: [tokens, hidden], the last block's output
/// - ids: [tokens], whole sequences of seqlen
/// - lossScale: the weight of each prediction's NLL in the loss (1 / predictions for a mean)
/// - counted: [tokens] or nil; when given, position t's prediction (of token t+1) is in the loss only where
///   counted[t] (fine-tuning on responses only, padding); nil counts every position but each sequence's last
/// - dHidden: [tokens, hidden], += d(loss)/d(hidden)
/// - dFinalNorm: [hidden], +=
/// - dWeight: [vocab, hidden], += (the embedding's gradient when tied); nil when the head is frozen
/// - Returns: the sum of the NLLs of the counted predictions, in Double
public func llamaHeadBackward(head: LlamaHead, hidden: [Float], ids: [Int], seqlen: Int, lossScale: Float,
                              counted: [Bool]? = nil,
                              dHidden: inout [Float], dFinalNorm: inout [Float], dWeight: UnsafeMutablePointer<Float>?) -> Double {
    let tokens = ids.count, d = head.hiddenSize, vocab = head.vocabSize
    precondition(hidden.count == tokens * d && dHidden.count == hidden.count && tokens % seqlen == 0
                 && (counted?.count ?? tokens) == tokens, "llamaHeadBackward: shape mismatch")
    let normed = head.normed(hidden)
    var dNormed = [Float](repeating: 0, count: tokens * d)
    let rowsPerChunk = max(1, min(tokens, (1 << 22) / max(vocab, 1)))
    var logits = [Float](repeating: 0, count: rowsPerChunk * vocab)
    var nllSum = 0.0
    normed.withUnsafeBufferPointer { normed in
        for start in stride(from: 0, to: tokens, by: rowsPerChunk) {
            let rows = min(rowsPerChunk, tokens - start)
            let x = normed.baseAddress! + start * d
            linearForward(&logits, x, head.weight, nil, tokens: rows, inFeatures: d, outFeatures: vocab)
            logits.withUnsafeMutableBufferPointer { logits in
                for r in 0..<rows {
                    let t = start + r
                    let row = logits.baseAddress! + r * vocab
                    if t % seqlen == seqlen - 1 || counted?[t] == false {
                        // nothing to predict after a sequence's last token; an uncounted prediction adds nothing
                        row.update(repeating: 0, count: vocab)
                        continue
                    }
                    nllSum += crossEntropy(row, target: ids[t + 1], vocabSize: vocab)
                    crossEntropyBackward(row, row, target: ids[t + 1], vocabSize: vocab, lossScale: lossScale)
                }
            }
            dNormed.withUnsafeMutableBufferPointer { dNormed in
                linearBackward(dNormed.baseAddress! + start * d, dWeight, nil, logits, x, head.weight,
                               tokens: rows, inFeatures: d, outFeatures: vocab)
            }
        }
    }
    rmsnormBackward(&dHidden, &dFinalNorm, dNormed, hidden, head.finalNorm, tokens: tokens, dim: d, eps: head.rmsNormEps)
    return nllSum
}

/// The gradients outside the blocks, and the loss.
public struct LlamaModelGradients: Sendable {
    /// Σ NLL over this batch's predictions (every position but each sequence's last), and their count
    public var nllSum: Double
    public var predictions: Int
    public var meanNLL: Double { nllSum / Double(predictions) }
    /// [vocab, hidden]: model.embed_tokens.weight, including the head's share when the head is tied to it
    public var embedding: [Float]
    /// [hidden]: model.norm.weight
    public var finalNorm: [Float]
    /// [vocab, hidden]: lm_head.weight; nil when tied
    public var lmHead: [Float]?
}

/// Gradients of the loss Σ NLL / lossDivisor, one block's weights in memory at a time; each block's
/// gradients go to `onBlock` as soon as they are complete, last block first, and are not kept.
///
/// Memory held: the embedding table and its gradient (and an untied head and its gradient), [vocab, hidden]
/// each; the input of every block, numHiddenLayers × tokens × hidden floats; one block's weights, gradients
/// and activations (see llamaBlockForwardKeepingActivations); a chunk of logits of at most 4 Mi floats.
/// Each block's weights are read twice, once per pass.
/// - ids: [sequences·seqlen]
/// - lossDivisor: what the NLL sum is divided by; default this batch's predictions (the mean NLL). Ranks
///   that split a batch pass the global count so their gradients sum to those of the whole batch.
/// - perSequenceSquares: also fill each block's `squaredPerSequence`; its backward then runs one sequence
///   at a time (smaller matrix products; the activations of one sequence instead of the batch's)
/// - onBlock: receives each block's gradients (e.g. to reduce them or to form importance scores)
public func llamaGradientsStreamed(checkpoint: Checkpoint, ids: [Int], seqlen: Int, lossDivisor: Double? = nil,
                                   perSequenceSquares: Bool = false,
                                   onBlock: (LlamaBlockGradients) throws -> Void) throws -> LlamaModelGradients {
    guard seqlen >= 2, !ids.isEmpty, ids.count % seqlen == 0 else {
        throw PruneDistError(.argument, "llamaGradients: \(ids.count) token ids are not whole sequences of \(seqlen) (at least 2) tokens")
    }
    let config = checkpoint.config
    let tied = config.tieWordEmbeddings || !checkpoint.contains(LlamaTensorNames.lmHead)
    let embedding = try LlamaEmbedding(checkpoint: checkpoint)
    let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
    let rope = try RopeTable(config: config, positions: seqlen)
    let predictions = ids.count / seqlen * (seqlen - 1)
    let divisor = lossDivisor ?? Double(predictions)

    var blockInputs: [[Float]] = []
    var hidden = try embedding.embed(ids)
    for layer in 0..<config.numHiddenLayers {
        let weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
        let output = llamaBlockForwardKeepingActivations(hidden, weights: weights, rope: rope, seqlen: seqlen).output
        blockInputs.append(hidden)
        hidden = output
    }

    var dHidden = [Float](repeating: 0, count: hidden.count)
    var dFinalNorm = [Float](repeating: 0, count: config.hiddenSize)
    var dHead = [Float](repeating: 0, count: config.vocabSize * config.hiddenSize)
    let nllSum = llamaHeadBackward(head: head, hidden: hidden, ids: ids, seqlen: seqlen, lossScale: Float(1 / divisor),
                                   dHidden: &dHidden, dFinalNorm: &dFinalNorm, dWeight: &dHead)
    hidden = []

    for layer in stride(from: config.numHiddenLayers - 1, through: 0, by: -1) {
        let weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
        if perSequenceSquares {
            // Sequence n's slice of dHidden carries its NLLs weighted 1/divisor; L_n weights them 1/(seqlen − 1).
            let sampleScale = Float(divisor / Double(seqlen - 1))
            try onBlock(llamaBlockBackwardPerSequence(&dHidden, input: blockInputs[layer], weights: weights, rope: rope,
                                                      seqlen: seqlen, sampleScale: sampleScale))
        } else {
            let activations = llamaBlockForwardKeepingActivations(blockInputs[layer], weights: weights, rope: rope, seqlen: seqlen)
            try onBlock(llamaBlockBackward(&dHidden, activations: activations, weights: weights, rope: rope, seqlen: seqlen))
        }
        blockInputs[layer] = []
    }

    var dEmbedding = tied ? dHead : [Float](repeating: 0, count: config.vocabSize * config.hiddenSize)
    embeddingBackward(&dEmbedding, dHidden, ids: ids, hiddenSize: config.hiddenSize)
    return LlamaModelGradients(nllSum: nllSum, predictions: predictions, embedding: dEmbedding,
                               finalNorm: dFinalNorm, lmHead: tied ? nil : dHead)
}

/// d(mean next-token NLL)/d(parameter) for every parameter, keyed by Hugging Face tensor name. A tied head
/// has no entry of its own: its gradient is part of model.embed_tokens.weight's. Holds every gradient at
/// once (the model's size in Float32); use llamaGradientsStreamed to consume blocks one at a time.
/// - ids: [sequences·seqlen]
public func llamaGradients(checkpoint: Checkpoint, ids: [Int], seqlen: Int) throws -> (meanNLL: Double, gradients: [String: [Float]]) {
    var gradients: [String: [Float]] = [:]
    let model = try llamaGradientsStreamed(checkpoint: checkpoint, ids: ids, seqlen: seqlen) { block in
        gradients.merge(block.tensors) { _, new in new }
    }
    gradients[LlamaTensorNames.embedding] = model.embedding
    gradients[LlamaTensorNames.finalNorm] = model.finalNorm
    if let lmHead = model.lmHead { gradients[LlamaTensorNames.lmHead] = lmHead }
    return (model.meanNLL, gradients)
}

/// One of the block's linears backward, its weight (and bias) gradient stored in `gradients`.
/// - dX: [tokens, in_features], +=
/// - dOut: [tokens, out_features]
/// - x: [tokens, in_features], the forward input
private func blockLinearBackward(_ dX: inout [Float], _ dOut: [Float], _ x: [Float], _ weights: LlamaBlockWeights,
                                 _ linear: LlamaLinear, tokens: Int, into gradients: inout LlamaBlockGradients) {
    let shape = weights.shape(linear)
    var dWeight = [Float](repeating: 0, count: shape[0] * shape[1])
    if weights.bias(linear) != nil {
        var dBias = [Float](repeating: 0, count: shape[0])
        linearBackward(&dX, &dWeight, &dBias, dOut, x, weights.weight(linear),
                       tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
        gradients.biases[linear] = dBias
    } else {
        linearBackward(&dX, &dWeight, nil, dOut, x, weights.weight(linear),
                       tokens: tokens, inFeatures: shape[1], outFeatures: shape[0])
    }
    gradients.weights[linear] = dWeight
}

/// Backward of one block a sequence at a time (sequences only meet in the parameter gradients): the batch's
/// gradients, summed, and Σ_n (sampleScale · G_n)² per linear weight, G_n the part that sequence n contributes.
/// - dHidden: [tokens, hidden], as for llamaBlockBackward
/// - input: [tokens, hidden], the block's input; activations are recomputed per sequence
private func llamaBlockBackwardPerSequence(_ dHidden: inout [Float], input: [Float], weights: LlamaBlockWeights,
                                           rope: RopeTable, seqlen: Int, sampleScale: Float) -> LlamaBlockGradients {
    let width = seqlen * weights.hiddenSize
    var total: LlamaBlockGradients?
    var squares = PerLinear<[Float]>(repeating: [])  // sums start at the first sequence's squares
    for start in stride(from: 0, to: input.count, by: width) {
        let range = start..<(start + width)
        let activations = llamaBlockForwardKeepingActivations(Array(input[range]), weights: weights, rope: rope, seqlen: seqlen)
        var dSequence = Array(dHidden[range])
        let sequence = llamaBlockBackward(&dSequence, activations: activations, weights: weights, rope: rope, seqlen: seqlen)
        dHidden.replaceSubrange(range, with: dSequence)
        for (linear, gradient) in sequence.weights.all {
            squares.update(linear) { sum in
                if sum.isEmpty { sum = [Float](repeating: 0, count: gradient.count) }
                for i in 0..<gradient.count {
                    let g = sampleScale * gradient[i]
                    sum[i] += g * g
                }
            }
        }
        if total == nil { total = sequence } else { total!.add(sequence) }
    }
    total!.squaredPerSequence = squares
    return total!
}

extension LlamaBlockGradients {
    /// self += other, tensor by tensor.
    mutating func add(_ other: LlamaBlockGradients) {
        func accumulate(_ sum: inout [Float], _ term: [Float]) {
            cblas_saxpy(Int32(sum.count), 1, term, 1, &sum, 1)
        }
        accumulate(&inputNorm, other.inputNorm)
        accumulate(&postAttentionNorm, other.postAttentionNorm)
        for linear in LlamaLinear.allCases {
            weights.update(linear) { accumulate(&$0, other.weights[linear]) }
            if let term = other.biases[linear] {
                biases.update(linear) { sum in
                    var total = sum ?? [Float](repeating: 0, count: term.count)
                    sum = nil  // total holds the only reference: accumulating does not copy
                    accumulate(&total, term)
                    sum = total
                }
            }
        }
    }
}
