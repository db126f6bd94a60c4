import Foundation

/// A model whose weights stay fixed while its LoRA factors train: every block's weights in memory (they are
/// read at every step; a model that fine-tunes on one node fits there), the embedding and the head.
public struct FrozenLlama: Sendable {
    public let config: LlamaConfig
    public let embedding: LlamaEmbedding
    public let head: LlamaHead
    /// [layer], each at its own widths (structured models)
    public let blocks: [LlamaBlockWeights]

    public init(checkpoint: Checkpoint) throws {
        config = checkpoint.config
        embedding = try LlamaEmbedding(checkpoint: checkpoint)
        head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        blocks = try (0..<config.numHiddenLayers).map { try LlamaBlockWeights(checkpoint: checkpoint, layer: $0, checkFinite: true) }
    }

    /// A model from parts already in memory (e.g. blocks with changed weights).
    public init(config: LlamaConfig, embedding: LlamaEmbedding, head: LlamaHead, blocks: [LlamaBlockWeights]) {
        self.config = config
        self.embedding = embedding
        self.head = head
        self.blocks = blocks
    }

    /// [layer] of each linear's [out_features, in_features]
    public var shapes: [PerLinear<[Int]>] { blocks.map(\.shapes) }
}

/// A batch of training sequences, all seqlen long.
public struct TrainingBatch: Sendable {
    /// [sequences·seqlen]
    public var ids: [Int]
    /// [sequences·seqlen]: whether position t's prediction of token t+1 is in the loss (never at a sequence's last)
    public var counted: [Bool]
    /// [sequences]: each sequence's index in the whole training set (the dropout masks' key)
    public var examples: [Int]

    public init(ids: [Int], counted: [Bool], examples: [Int]) {
        self.ids = ids
        self.counted = counted
        self.examples = examples
    }

    public var predictions: Int { counted.reduce(0) { $0 + ($1 ? 1 : 0) } }
}

/// The loss of a batch and the gradients of the LoRA factors.
public struct LoraStepResult: Sendable {
    /// Σ NLL over the counted predictions, and their number
    public var nllSum: Double
    public var predictions: Int
    /// d(Σ NLL / lossDivisor)/d(factor), the adapter's layout
    public var gradients: LoraAdapter
}

/// Loss and LoRA gradients of one batch. Activations of every block are kept (no recomputation).
/// - seqlen: each sequence's length
/// - lossDivisor: what the NLL sum is divided by; ranks splitting a batch pass the global number of counted
///   predictions so their gradients sum to the whole batch's mean
/// - dropout: nil to train without dropout (and for evaluation)
public func loraLossAndGradients(model: FrozenLlama, adapter: LoraAdapter, batch: TrainingBatch, seqlen: Int,
                                 lossDivisor: Double, dropout: LoraDropout?) throws -> LoraStepResult {
    let rope = try RopeTable(config: model.config, positions: seqlen)
    let scaling = adapter.settings.scaling
    var hidden = try model.embedding.embed(batch.ids)
    var activations: [LoraBlockActivations] = []
    for (layer, weights) in model.blocks.enumerated() {
        let masks = loraMasks(dropout, adapter: adapter, layer: layer, batch: batch, seqlen: seqlen)
        let a = loraBlockForward(hidden, weights: weights, factors: adapter.layers[layer], scaling: scaling, masks: masks,
                                 rope: rope, seqlen: seqlen)
        hidden = a.base.output
        activations.append(a)
    }
    var dHidden = [Float](repeating: 0, count: hidden.count)
    var dFinalNorm = [Float](repeating: 0, count: model.config.hiddenSize)
    let nllSum = llamaHeadBackward(head: model.head, hidden: hidden, ids: batch.ids, seqlen: seqlen,
                                   lossScale: Float(1 / lossDivisor), counted: batch.counted,
                                   dHidden: &dHidden, dFinalNorm: &dFinalNorm, dWeight: nil)
    var gradients = adapter.zeros
    for layer in stride(from: model.blocks.count - 1, through: 0, by: -1) {
        loraBlockBackward(&dHidden, activations: activations[layer], weights: model.blocks[layer], factors: adapter.layers[layer],
                          scaling: scaling, rope: rope, seqlen: seqlen, gradients: &gradients.layers[layer])
        activations.removeLast()  // this block's activations are no longer needed
    }
    return LoraStepResult(nllSum: nllSum, predictions: batch.predictions, gradients: gradients)
}

/// Σ NLL over the counted predictions of a batch with the adapter applied (no dropout), and their number.
public func loraLoss(model: FrozenLlama, adapter: LoraAdapter?, batch: TrainingBatch, seqlen: Int) throws -> (nllSum: Double, predictions: Int) {
    let rope = try RopeTable(config: model.config, positions: seqlen)
    var hidden = try model.embedding.embed(batch.ids)
    for (layer, weights) in model.blocks.enumerated() {
        if let adapter {
            hidden = loraBlockForward(hidden, weights: weights, factors: adapter.layers[layer], scaling: adapter.settings.scaling,
                                      masks: PerLinear(repeating: nil), rope: rope, seqlen: seqlen).base.output
        } else {
            llamaBlockForward(&hidden, weights: weights, rope: rope, seqlen: seqlen)
        }
    }
    let nll = model.head.nextTokenNLL(hidden: hidden, ids: batch.ids, seqlen: seqlen)
    var sum = 0.0, count = 0, i = 0
    for t in 0..<batch.ids.count where t % seqlen != seqlen - 1 {
        if batch.counted[t] { sum += nll[i]; count += 1 }
        i += 1
    }
    return (sum, count)
}

/// The dropout multipliers of one layer's adapted linears for a batch, nil where there is no dropout.
private func loraMasks(_ dropout: LoraDropout?, adapter: LoraAdapter, layer: Int, batch: TrainingBatch, seqlen: Int) -> PerLinear<[Float]?> {
    PerLinear { linear in
        guard let dropout, let f = adapter.layers[layer][linear] else { return nil }
        return dropout.mask(layer: layer, linear: linear, examples: batch.examples, seqlen: seqlen, features: f.inFeatures)
    }
}
