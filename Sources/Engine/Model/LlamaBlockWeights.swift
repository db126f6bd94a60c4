import Foundation

/// The weights of one decoder block, widened to Float32 and materialised only while the block is worked on.
public struct LlamaBlockWeights: Sendable {
    public let layer: Int
    public let hiddenSize: Int
    public let headDim: Int
    public let numAttentionHeads: Int
    public let numKeyValueHeads: Int
    public let intermediateSize: Int
    public let rmsNormEps: Float
    /// [hidden] each.
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    /// [out, in] row-major per linear (PyTorch nn.Linear layout).
    public private(set) var weights: PerLinear<[Float]>
    /// [out] for linears that have one (attention_bias, Qwen2 q/k/v, mlp_bias), nil for the others.
    public private(set) var biases: PerLinear<[Float]?>

    /// Reads block `layer` from the checkpoint, checking every shape against config.json.
    /// With `checkFinite`, a NaN or Inf anywhere in the block is an error naming the tensor.
    public init(checkpoint: Checkpoint, layer: Int, checkFinite: Bool = true) throws {
        let config = checkpoint.config
        func load(_ name: String, _ shape: [Int]) throws -> [Float] {
            checkFinite ? try checkpoint.floatsCheckedFinite(name, shape: shape) : try checkpoint.floats(name, shape: shape)
        }
        let inputNorm = try load(LlamaTensorNames.inputNorm(layer: layer), [config.hiddenSize])
        let postAttentionNorm = try load(LlamaTensorNames.postAttentionNorm(layer: layer), [config.hiddenSize])
        let linears = try PerLinear { linear -> (weight: [Float], bias: [Float]?) in
            let shape = linear.shape(config: config, layer: layer)
            let weight = try load(linear.weightName(layer: layer), shape)
            let bias = checkpoint.contains(linear.biasName(layer: layer)) ? try load(linear.biasName(layer: layer), [shape[0]]) : nil
            return (weight, bias)
        }
        self.init(config: config, layer: layer, inputNorm: inputNorm, postAttentionNorm: postAttentionNorm,
                  weights: linears.map(\.weight), biases: linears.map(\.bias))
    }

    /// Zero weights and unit norms of the given widths, no biases: to be filled by the caller (e.g. from a
    /// broadcast by the rank that read the checkpoint).
    public init(zerosWithConfig config: LlamaConfig, layer: Int) {
        let ones = [Float](repeating: 1, count: config.hiddenSize)
        self.init(config: config, layer: layer, inputNorm: ones, postAttentionNorm: ones,
                  weights: PerLinear { [Float](repeating: 0, count: $0.shape(config: config, layer: layer).reduce(1, *)) },
                  biases: PerLinear(repeating: nil))
    }

    /// Random weights of the given widths, for benchmarks and tests: N(0, 1/in) linears, norms near 1.
    public init(randomWithConfig config: LlamaConfig, layer: Int, seed: UInt64) {
        var random = SplitMix64(seed: seed &+ UInt64(layer) &* 0x9E37_79B9)
        let inputNorm = (0..<config.hiddenSize).map { _ in Float(0.5 + random.nextUnit()) }
        let postAttentionNorm = (0..<config.hiddenSize).map { _ in Float(0.5 + random.nextUnit()) }
        // PerLinear calls the closure in LlamaLinear.allCases order, so the draws are in that order.
        let weights = PerLinear { linear in
            let shape = linear.shape(config: config, layer: layer)
            let scale = 1 / Float(shape[1]).squareRoot()
            return (0..<(shape[0] * shape[1])).map { _ in Float(random.nextGaussian()) * scale }
        }
        self.init(config: config, layer: layer, inputNorm: inputNorm, postAttentionNorm: postAttentionNorm, weights: weights,
                  biases: PerLinear(repeating: nil))
    }

    /// Block `layer`'s widths as config.json gives them (per-layer widths of a structured model included).
    private init(config: LlamaConfig, layer: Int, inputNorm: [Float], postAttentionNorm: [Float], weights: PerLinear<[Float]>,
                 biases: PerLinear<[Float]?>) {
        let widths = config.widths(ofLayer: layer)
        self.init(layer: layer, hiddenSize: config.hiddenSize, headDim: config.headDim, numAttentionHeads: widths.numAttentionHeads,
                  numKeyValueHeads: widths.numKeyValueHeads, intermediateSize: widths.intermediateSize,
                  rmsNormEps: Float(config.rmsNormEps), inputNorm: inputNorm, postAttentionNorm: postAttentionNorm,
                  weights: weights, biases: biases)
    }

    /// A block from explicit tensors, e.g. after structured pruning has removed heads and channels.
    /// - weights: [out, in] per linear, shapes as `shape(_:)` gives for these widths
    /// - biases: [out] per linear that has one
    public init(layer: Int, hiddenSize: Int, headDim: Int, numAttentionHeads: Int, numKeyValueHeads: Int,
                intermediateSize: Int, rmsNormEps: Float, inputNorm: [Float], postAttentionNorm: [Float],
                weights: PerLinear<[Float]>, biases: PerLinear<[Float]?>) {
        self.layer = layer
        self.hiddenSize = hiddenSize
        self.headDim = headDim
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.intermediateSize = intermediateSize
        self.rmsNormEps = rmsNormEps
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.weights = weights
        self.biases = biases
        for linear in LlamaLinear.allCases {
            let shape = self.shape(linear)
            precondition(weights[linear].count == shape[0] * shape[1],
                         "LlamaBlockWeights: \(linear.rawValue) has \(weights[linear].count) values, expected \(shape)")
            precondition((biases[linear]?.count ?? shape[0]) == shape[0], "LlamaBlockWeights: \(linear.rawValue) bias size")
        }
    }

    public func weight(_ linear: LlamaLinear) -> [Float] { weights[linear] }
    public func bias(_ linear: LlamaLinear) -> [Float]? { biases[linear] }

    /// Replaces a linear's weight, e.g. by its pruned version; the shape must not change.
    public mutating func setWeight(_ linear: LlamaLinear, _ weight: [Float]) {
        precondition(weight.count == weights[linear].count, "setWeight(\(linear.rawValue)): \(weight.count) values, expected \(weights[linear].count)")
        weights[linear] = weight
    }

    /// Gives a linear a bias (or removes it), e.g. to test the Qwen2-style q/k/v biases on random weights.
    /// - bias: [out_features] or nil
    public mutating func setBias(_ linear: LlamaLinear, _ bias: [Float]?) {
        precondition(bias == nil || bias!.count == shape(linear)[0], "setBias(\(linear.rawValue)): \(bias!.count) values, expected \(shape(linear)[0])")
        biases[linear] = bias
    }

    /// [out_features, in_features] of every linear.
    public var shapes: PerLinear<[Int]> { PerLinear { shape($0) } }

    /// [out_features, in_features].
    public func shape(_ linear: LlamaLinear) -> [Int] {
        let qDim = numAttentionHeads * headDim, kvDim = numKeyValueHeads * headDim
        switch linear {
        case .q: return [qDim, hiddenSize]
        case .k, .v: return [kvDim, hiddenSize]
        case .o: return [hiddenSize, qDim]
        case .gate, .up: return [intermediateSize, hiddenSize]
        case .down: return [hiddenSize, intermediateSize]
        }
    }

    /// Width of the input a group of linears reads.
    public func inputDimension(_ input: LlamaLinearInput) -> Int {
        shape(input.linears[0])[1]
    }
}
