import CEngineKernels
import Foundation

/// The whole model held in memory (Float32) with a key/value cache, for generating text token by token:
/// `append` runs only the new tokens through every block, their queries attending to every cached key, so a
/// generated token costs one token's forward. The layers are the same functions as the batch forward
/// (`llamaForward`): RMSNorm, the linears, SwiGLU and the residual sums are the shared block stages; only
/// RoPE (at absolute positions) and attention over the cache are done here.
public final class LlamaDecoder {
    public let config: LlamaConfig
    public let embedding: LlamaEmbedding
    public let head: LlamaHead
    public let blocks: [LlamaBlockWeights]
    /// Positions the cache holds at most (prompt plus generated tokens).
    public let capacity: Int
    let rope: RopeTable
    /// Per block: [capacity, kvHeads·headDim] rotated keys and values of every position appended so far.
    private var keys: [[Float]]
    private var values: [[Float]]
    /// Tokens appended so far: the position the next token takes.
    public private(set) var position = 0
    private let scratch = LlamaBlockScratch()
    /// [tokens, hidden] stages of the current append (reused between appends).
    private var attentionInput: [Float] = [], attentionOutput: [Float] = [], afterAttention: [Float] = []
    private var mlpInput: [Float] = [], mlpHidden: [Float] = [], scores: [Float] = []

    /// Reads every block of `checkpoint` (checked finite) and sizes the cache for `capacity` positions.
    public init(checkpoint: Checkpoint, capacity: Int) throws {
        let config = checkpoint.config
        guard capacity > 0 else { throw PruneDistError(.argument, "LlamaDecoder: capacity must be positive") }
        guard capacity <= config.maxPositionEmbeddings else {
            throw PruneDistError(.argument, "\(capacity) positions are beyond the model's context: config.json has max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        self.config = config
        embedding = try LlamaEmbedding(checkpoint: checkpoint)
        head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        blocks = try (0..<config.numHiddenLayers).map { try LlamaBlockWeights(checkpoint: checkpoint, layer: $0, checkFinite: true) }
        self.capacity = capacity
        rope = try RopeTable(config: config, positions: capacity)
        keys = blocks.map { [Float](repeating: 0, count: capacity * $0.numKeyValueHeads * $0.headDim) }
        values = keys
    }

    /// Forgets every cached position (the next append starts at position 0).
    public func reset() { position = 0 }

    /// Runs `ids` at positions position ..< position + ids.count through the model, caching their keys and
    /// values, and returns the logits of the last of them.
    /// - ids: [n], n ≥ 1
    /// - Returns: [vocab]
    public func append(_ ids: [Int]) throws -> [Float] {
        let last = try appendReturningHidden(ids)
        return head.logits(head.normed(last))
    }

    /// As `append`, returning every new position's logits.
    /// - Returns: [n, vocab]
    public func appendReturningAllLogits(_ ids: [Int]) throws -> [Float] {
        let hidden = try appendAll(ids)
        return head.logits(head.normed(hidden))
    }

    /// - Returns: [hidden], the last new position's output of the last block
    private func appendReturningHidden(_ ids: [Int]) throws -> [Float] {
        let hidden = try appendAll(ids)
        let d = config.hiddenSize
        return Array(hidden[(hidden.count - d)...])
    }

    /// - Returns: [n, hidden], the last block's output at every new position
    private func appendAll(_ ids: [Int]) throws -> [Float] {
        let n = ids.count
        guard n > 0 else { throw PruneDistError(.argument, "LlamaDecoder.append: no tokens") }
        guard position + n <= capacity else {
            throw PruneDistError(.argument, "LlamaDecoder: \(position) + \(n) positions exceed the cache's \(capacity)")
        }
        var hidden = try embedding.embed(ids)
        for (layer, weights) in blocks.enumerated() {
            llamaNormStage(&attentionInput, hidden, weights.inputNorm, weights: weights, tokens: n)
            cachedAttention(layer: layer, weights: weights, tokens: n)
            llamaResidualStage(&afterAttention, hidden, attentionOutput, .o, projected: &scratch.projected,
                               weights: weights, tokens: n)
            llamaNormStage(&mlpInput, afterAttention, weights.postAttentionNorm, weights: weights, tokens: n)
            llamaMLPHiddenStage(&mlpHidden, gate: &scratch.gate, up: &scratch.up, mlpInput: mlpInput,
                                weights: weights, tokens: n)
            llamaResidualStage(&hidden, afterAttention, mlpHidden, .down, projected: &scratch.projected,
                               weights: weights, tokens: n)
        }
        position += n
        return hidden
    }

    /// q, k, v of the new tokens, RoPE at their absolute positions, k and v into the cache, and causal
    /// attention of the new queries over positions 0 ..< position + tokens: attentionOutput [tokens, heads·headDim].
    private func cachedAttention(layer: Int, weights: LlamaBlockWeights, tokens n: Int) {
        let heads = weights.numAttentionHeads, kvHeads = weights.numKeyValueHeads, headDim = weights.headDim
        let qDim = heads * headDim, kvDim = kvHeads * headDim
        let start = position, total = position + n
        ensureCount(&scratch.q, n * qDim)
        ensureCount(&scratch.k, n * kvDim)
        ensureCount(&scratch.v, n * kvDim)
        applyLinear(&scratch.q, attentionInput, weights, .q, tokens: n)
        applyLinear(&scratch.k, attentionInput, weights, .k, tokens: n)
        applyLinear(&scratch.v, attentionInput, weights, .v, tokens: n)
        let half = headDim / 2
        rope.cos.withUnsafeBufferPointer { cos in
            rope.sin.withUnsafeBufferPointer { sin in
                // Token t of the tables' slice sits at position start + t (t mod n = t).
                let c = cos.baseAddress! + start * half, s = sin.baseAddress! + start * half
                cengine_rope(&scratch.q, c, s, n, heads, headDim, n)
                cengine_rope(&scratch.k, c, s, n, kvHeads, headDim, n)
            }
        }
        keys[layer].withUnsafeMutableBufferPointer { cache in
            (cache.baseAddress! + start * kvDim).update(from: scratch.k, count: n * kvDim)
        }
        values[layer].withUnsafeMutableBufferPointer { cache in
            (cache.baseAddress! + start * kvDim).update(from: scratch.v, count: n * kvDim)
        }
        ensureCount(&attentionOutput, n * qDim)
        ensureCount(&scores, n * total)
        let group = heads / kvHeads
        let scale = 1 / Float(headDim).squareRoot()
        scratch.q.withUnsafeBufferPointer { q in
            keys[layer].withUnsafeBufferPointer { k in
                values[layer].withUnsafeBufferPointer { v in
                    scores.withUnsafeMutableBufferPointer { p in
                        attentionOutput.withUnsafeMutableBufferPointer { out in
                            for h in 0..<heads {
                                let g = h / group
                                sgemm(.none, .transpose, m: n, n: total, k: headDim, alpha: scale,
                                      q.baseAddress! + h * headDim, lda: qDim, k.baseAddress! + g * headDim, ldb: kvDim,
                                      p.baseAddress!, ldc: total)
                                // Row r is position start + r: it sees columns 0 ... start + r.
                                cengine_causal_softmax(p.baseAddress!, n, start, total, total)
                                sgemm(.none, .none, m: n, n: headDim, k: total, p.baseAddress!, lda: total,
                                      v.baseAddress! + g * headDim, ldb: kvDim, out.baseAddress! + h * headDim, ldc: qDim)
                            }
                        }
                    }
                }
            }
        }
    }
}
