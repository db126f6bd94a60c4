import Foundation

/// Log-likelihoods of continuations, the quantity multiple-choice accuracy is computed from.
public enum ZeroShotScoring {
    /// Σ log p(continuation token | everything before it) for every sequence.
    ///
    /// Sequences are sorted by length and cut into batches padded on the right to their longest member (the
    /// causal mask keeps padding from touching real positions). Blocks are read once per group of batches
    /// whose hidden states fit `groupTokenBudget` tokens, so only one block's weights are held at a time.
    /// - sequences: each at least 2 tokens, continuationStart ≥ 1
    /// - Returns: [sequences.count]
    public static func logLikelihoods(checkpoint: Checkpoint, embedding: LlamaEmbedding, head: LlamaHead,
                                      sequences: [ScoredSequence], batchTokens: Int = 4096,
                                      groupTokenBudget: Int? = nil) throws -> [Double] {
        try logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head, sequences: sequences,
                           batches: batches(sequences: sequences, batchTokens: batchTokens),
                           batchTokens: batchTokens, groupTokenBudget: groupTokenBudget)
    }

    /// The batches `logLikelihoods` runs: sequence indices sorted by (length, index), cut so a batch padded to
    /// its longest member holds at most `batchTokens` tokens (a longer sequence alone). A sequence's score
    /// depends only on the batch it is in (GEMM rounding varies with the row count), so ranks that share out
    /// whole batches of one plan give every sequence the same bits whatever the number of ranks.
    /// - Returns: [batches][members], ascending length within and across batches
    public static func batches(sequences: [ScoredSequence], batchTokens: Int = 4096) -> [[Int]] {
        let order = sequences.indices.sorted { (sequences[$0].ids.count, $0) < (sequences[$1].ids.count, $1) }
        var batches: [[Int]] = []
        var current: [Int] = []
        for index in order {
            let length = sequences[index].ids.count
            if !current.isEmpty && (current.count + 1) * length > batchTokens {
                batches.append(current)
                current = []
            }
            current.append(index)
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// Scores the sequences of the given batches only (each batch in ascending length, as `batches` makes
    /// them); entries of sequences in no batch stay 0.
    /// - batches: [batches][members], indices into `sequences`
    /// - Returns: [sequences.count]
    public static func logLikelihoods(checkpoint: Checkpoint, embedding: LlamaEmbedding, head: LlamaHead,
                                      sequences: [ScoredSequence], batches: [[Int]], batchTokens: Int = 4096,
                                      groupTokenBudget: Int? = nil) throws -> [Double] {
        let batches = batches.filter { !$0.isEmpty }
        if batches.isEmpty { return [Double](repeating: 0, count: sequences.count) }
        let config = checkpoint.config
        for batch in batches {
            for i in batch where sequences[i].continuationStart < 1 || sequences[i].continuationStart >= sequences[i].ids.count {
                let s = sequences[i]
                throw PruneDistError(.data, "scored sequence \(i): continuation starts at \(s.continuationStart) of \(s.ids.count) tokens; it needs at least one context token and one continuation token")
            }
        }
        let longest = batches.map { batch in batch.map { sequences[$0].ids.count }.max()! }.max()!
        guard longest <= config.maxPositionEmbeddings else {
            throw PruneDistError(.data, "a scored sequence has \(longest) tokens, more than the model's max_position_embeddings \(config.maxPositionEmbeddings)")
        }

        let budget = groupTokenBudget ?? max(batchTokens, (1 << 26) / config.hiddenSize)
        let rope = try RopeTable(config: config, positions: longest)
        var result = [Double](repeating: 0, count: sequences.count)
        // [batches]: each batch's padded width, its longest member
        let widths = batches.map { batch in batch.map { sequences[$0].ids.count }.max()! }
        var batchStart = 0
        while batchStart < batches.count {
            // A group of batches whose padded hidden states fit the budget.
            var batchEnd = batchStart, tokens = 0
            repeat {
                tokens += batches[batchEnd].count * widths[batchEnd]
                batchEnd += 1
            } while batchEnd < batches.count && tokens + batches[batchEnd].count * widths[batchEnd] <= budget
            let group = Array(batches[batchStart..<batchEnd])
            let groupWidths = Array(widths[batchStart..<batchEnd])

            var hidden: [[Float]] = try zip(group, groupWidths).map { batch, width in
                let padded = batch.flatMap { sequences[$0].ids + [Int](repeating: 0, count: width - sequences[$0].ids.count) }
                return try embedding.embed(padded)
            }
            let scratch = LlamaBlockScratch()
            for layer in 0..<config.numHiddenLayers {
                let weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
                for b in group.indices {
                    llamaBlockForward(&hidden[b], weights: weights, rope: rope, seqlen: groupWidths[b], scratch: scratch)
                }
            }
            for (b, batch) in group.enumerated() {
                let width = groupWidths[b]
                var rows: [Int] = [], targets: [Int] = [], owners: [Int] = []
                for (slot, index) in batch.enumerated() {
                    let s = sequences[index]
                    for t in s.continuationStart..<s.ids.count {
                        rows.append(slot * width + t - 1)
                        targets.append(s.ids[t])
                        owners.append(index)
                    }
                }
                let logProbabilities = head.logProbabilities(hidden: hidden[b], rows: rows, targets: targets)
                for (owner, value) in zip(owners, logProbabilities) { result[owner] += value }
            }
            batchStart = batchEnd
        }
        return result
    }

    /// The choices a document's scores pick, as numpy's argmax picks them (the first of equal maxima): by the
    /// summed log-likelihood (acc) and by it divided by the choice's length in characters (acc_norm).
    /// - scores: [choices]
    public static func predictions(document: ZeroShotDocument, scores: [Double]) -> (acc: Int, accNorm: Int) {
        let best = scores.indices.max { (scores[$0], -$0) < (scores[$1], -$1) }!
        let normalised = scores.indices.map { scores[$0] / Double(max(document.normalisationLengths[$0], 1)) }
        let bestNorm = normalised.indices.max { (normalised[$0], -$0) < (normalised[$1], -$1) }!
        return (best, bestNorm)
    }

    /// acc and acc_norm of documents from their choices' log-likelihoods.
    /// - logLikelihoods: [documents][choices]
    public static func accuracy(documents: [ZeroShotDocument], logLikelihoods: [[Double]]) -> (acc: Double, accNorm: Double) {
        var correct = 0, correctNorm = 0
        for (document, scores) in zip(documents, logLikelihoods) {
            let picked = predictions(document: document, scores: scores)
            if picked.acc == document.gold { correct += 1 }
            if picked.accNorm == document.gold { correctNorm += 1 }
        }
        let n = Double(max(documents.count, 1))
        return (Double(correct) / n, Double(correctNorm) / n)
    }
}
