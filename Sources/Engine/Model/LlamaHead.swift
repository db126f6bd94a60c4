import CEngineKernels
import Foundation

/// The token embedding table, the one tensor kept whole in Float32 for a whole run.
public struct LlamaEmbedding: Sendable {
    public let vocabSize: Int
    public let hiddenSize: Int
    /// [vocab, hidden]
    public let table: [Float]

    public init(checkpoint: Checkpoint) throws {
        let config = checkpoint.config
        vocabSize = config.vocabSize
        hiddenSize = config.hiddenSize
        table = try checkpoint.floatsCheckedFinite(LlamaTensorNames.embedding, shape: [config.vocabSize, config.hiddenSize])
    }

    /// A table read elsewhere (e.g. broadcast from the rank that read the checkpoint).
    /// - table: [vocab, hidden]
    public init(table: [Float], vocabSize: Int, hiddenSize: Int) {
        precondition(table.count == vocabSize * hiddenSize, "LlamaEmbedding: \(table.count) values for [\(vocabSize), \(hiddenSize)]")
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.table = table
    }

    /// - ids: [tokens]
    /// - Returns: [tokens, hidden]
    public func embed(_ ids: [Int]) throws -> [Float] {
        var out = [Float](repeating: 0, count: ids.count * hiddenSize)
        try table.withUnsafeBufferPointer { table in
            try out.withUnsafeMutableBufferPointer { out in
                for (t, id) in ids.enumerated() {
                    guard id >= 0 && id < vocabSize else {
                        throw PruneDistError(.data, "token id \(id) at position \(t) is outside the model's vocabulary of \(vocabSize)")
                    }
                    (out.baseAddress! + t * hiddenSize).update(from: table.baseAddress! + id * hiddenSize, count: hiddenSize)
                }
            }
        }
        return out
    }
}

/// Final RMSNorm and the LM head (the embedding table itself when tied).
public struct LlamaHead: Sendable {
    public let vocabSize: Int
    public let hiddenSize: Int
    public let rmsNormEps: Float
    /// [hidden]
    public let finalNorm: [Float]
    /// [vocab, hidden]
    public let weight: [Float]

    /// `embedding` is reused (not copied) when the checkpoint ties the head to it.
    public init(checkpoint: Checkpoint, embedding: LlamaEmbedding) throws {
        let config = checkpoint.config
        vocabSize = config.vocabSize
        hiddenSize = config.hiddenSize
        rmsNormEps = Float(config.rmsNormEps)
        finalNorm = try checkpoint.floatsCheckedFinite(LlamaTensorNames.finalNorm, shape: [config.hiddenSize])
        if config.tieWordEmbeddings || !checkpoint.contains(LlamaTensorNames.lmHead) {
            weight = embedding.table
        } else {
            weight = try checkpoint.floatsCheckedFinite(LlamaTensorNames.lmHead, shape: [config.vocabSize, config.hiddenSize])
        }
    }

    /// A head from tensors already in memory (benchmarks, broadcast weights).
    /// - finalNorm: [hidden]
    /// - weight: [vocab, hidden]
    public init(finalNorm: [Float], weight: [Float], vocabSize: Int, hiddenSize: Int, rmsNormEps: Float) {
        precondition(finalNorm.count == hiddenSize && weight.count == vocabSize * hiddenSize, "LlamaHead: shapes do not match")
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.rmsNormEps = rmsNormEps
        self.finalNorm = finalNorm
        self.weight = weight
    }

    /// - hidden: [tokens, hidden], the last block's output
    /// - Returns: [tokens, hidden] after the final RMSNorm
    public func normed(_ hidden: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: hidden.count)
        rmsnormForward(&out, hidden, finalNorm, tokens: hidden.count / hiddenSize, dim: hiddenSize, eps: rmsNormEps)
        return out
    }

    /// - normedHidden: [tokens, hidden]
    /// - Returns: [tokens, vocab]
    public func logits(_ normedHidden: [Float]) -> [Float] {
        let tokens = normedHidden.count / hiddenSize
        var out = [Float](repeating: 0, count: tokens * vocabSize)
        linearForward(&out, normedHidden, weight, nil, tokens: tokens, inFeatures: hiddenSize, outFeatures: vocabSize)
        return out
    }

    /// Next-token negative log-likelihood of every position but each sequence's last, in Double.
    /// Logits are made a few rows at a time so a 150k vocabulary never needs [tokens, vocab] at once.
    /// - hidden: [sequences·seqlen, hidden], the last block's output (before the final norm)
    /// - ids: [sequences·seqlen], the tokens that were fed in
    /// - Returns: [sequences, seqlen − 1]; entry t is −log p(ids[t+1] | ids[...t])
    public func nextTokenNLL(hidden: [Float], ids: [Int], seqlen: Int) -> [Double] {
        let tokens = ids.count
        precondition(hidden.count == tokens * hiddenSize && tokens % seqlen == 0, "nextTokenNLL: shape mismatch")
        let normed = normed(hidden)
        let rowsPerChunk = max(1, min(tokens, (1 << 22) / max(vocabSize, 1)))
        var logits = [Float](repeating: 0, count: rowsPerChunk * vocabSize)
        var nll: [Double] = []
        nll.reserveCapacity(tokens / seqlen * (seqlen - 1))
        for start in stride(from: 0, to: tokens, by: rowsPerChunk) {
            let rows = min(rowsPerChunk, tokens - start)
            normed.withUnsafeBufferPointer { x in
                linearForward(&logits, x.baseAddress! + start * hiddenSize, weight, nil,
                              tokens: rows, inFeatures: hiddenSize, outFeatures: vocabSize)
            }
            logits.withUnsafeBufferPointer { logits in
                for r in 0..<rows {
                    let t = start + r
                    if t % seqlen == seqlen - 1 { continue }
                    let row = logits.baseAddress! + r * vocabSize
                    nll.append(crossEntropy(row, target: ids[t + 1], vocabSize: vocabSize))
                }
            }
        }
        return nll
    }
}

extension LlamaHead {
    /// log p(target) for chosen positions, logits made a few rows at a time.
    /// - hidden: [tokens, hidden], the last block's output (before the final norm)
    /// - rows: positions whose next token is scored
    /// - targets: [rows.count], the token each of those positions should predict
    /// - Returns: [rows.count] log-probabilities
    public func logProbabilities(hidden: [Float], rows: [Int], targets: [Int]) -> [Double] {
        precondition(rows.count == targets.count, "logProbabilities: \(rows.count) rows for \(targets.count) targets")
        var picked = [Float](repeating: 0, count: rows.count * hiddenSize)
        hidden.withUnsafeBufferPointer { hidden in
            picked.withUnsafeMutableBufferPointer { picked in
                for (i, row) in rows.enumerated() {
                    (picked.baseAddress! + i * hiddenSize).update(from: hidden.baseAddress! + row * hiddenSize, count: hiddenSize)
                }
            }
        }
        let normed = normed(picked)
        let rowsPerChunk = max(1, (1 << 22) / max(vocabSize, 1))
        var logits = [Float](repeating: 0, count: rowsPerChunk * vocabSize)
        var result: [Double] = []
        result.reserveCapacity(rows.count)
        for start in stride(from: 0, to: rows.count, by: rowsPerChunk) {
            let count = min(rowsPerChunk, rows.count - start)
            normed.withUnsafeBufferPointer { x in
                linearForward(&logits, x.baseAddress! + start * hiddenSize, weight, nil,
                              tokens: count, inFeatures: hiddenSize, outFeatures: vocabSize)
            }
            logits.withUnsafeBufferPointer { logits in
                for r in 0..<count {
                    result.append(-crossEntropy(logits.baseAddress! + r * vocabSize, target: targets[start + r], vocabSize: vocabSize))
                }
            }
        }
        return result
    }
}

/// −log softmax(logits)[target]: the exponentials in Float32 (vectorised, within 2 ulp), their sum and the log in
/// Double. A Double exp per vocabulary entry made the log-softmax cost more than the LM head's GEMM.
/// - logits: [vocabSize]
public func crossEntropy(_ logits: UnsafePointer<Float>, target: Int, vocabSize: Int) -> Double {
    cengine_cross_entropy(logits, vocabSize, target)
}
