import Foundation

/// The NLL of a structurally pruned model without writing it: each block is read from the dense checkpoint,
/// its removed groups cut out (StructuredPruning.removing), and run; blocks without an entry stay dense.
/// Used for AdaPruner's search objective, where every trial prunes differently.
/// - windows: [count][seqlen] token ids
/// - keeps: the kept groups by layer
/// - Returns: Σ NLL over every position but each window's last, and the number of those predictions
public func structuredPrunedNLL(checkpoint: Checkpoint, keeps: [Int: StructuredKeep], windows: [[Int]],
                                seqlen: Int) throws -> (nllSum: Double, predictions: Int) {
    if windows.isEmpty { return (0, 0) }
    let embedding = try LlamaEmbedding(checkpoint: checkpoint)
    let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
    let rope = try RopeTable(config: checkpoint.config, positions: seqlen)
    let ids = windows.flatMap { $0 }
    var hidden = try embedding.embed(ids)
    let scratch = LlamaBlockScratch()
    for layer in 0..<checkpoint.config.numHiddenLayers {
        var weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
        if let keep = keeps[layer] { weights = StructuredPruning.removing(weights, keep: keep) }
        llamaBlockForward(&hidden, weights: weights, rope: rope, seqlen: seqlen, scratch: scratch)
    }
    let nll = head.nextTokenNLL(hidden: hidden, ids: ids, seqlen: seqlen)
    return (nll.reduce(0, +), nll.count)
}
