import Foundation

/// The LoRA hyper-parameters, with PEFT's names and meaning.
public struct LoraSettings: Codable, Equatable, Sendable {
    /// r: the rank of each update B·A
    public var rank: Int
    /// lora_alpha: the update is scaled by alpha / r
    public var alpha: Double
    /// lora_dropout: the probability of zeroing an element of the LoRA branch's input while training
    public var dropout: Double
    /// The linears that get an adapter, in LlamaLinear order
    public var targets: [LlamaLinear]

    public init(rank: Int, alpha: Double, dropout: Double, targets: [LlamaLinear]) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = LlamaLinear.allCases.filter(targets.contains)
    }

    /// alpha / r, PEFT's `scaling`.
    public var scaling: Float { Float(alpha / Double(rank)) }

    /// PEFT's module name of a linear: q_proj, …, down_proj.
    public static func moduleName(_ linear: LlamaLinear) -> String {
        String(linear.rawValue.split(separator: ".").last!)
    }
}

/// One linear's LoRA factors. The update to the weight is scaling · B · A.
public struct LoraFactors: Codable, Equatable, Sendable {
    /// [rank, in_features]
    public var a: [Float]
    /// [out_features, rank]
    public var b: [Float]
    public let inFeatures: Int
    public let outFeatures: Int
    /// [out_features, in_features] of 0 and 1, or nil: with it the update is M ⊙ (scaling · B · A), so a weight the
    /// base model has at zero (a pruned one) stays zero in training and in the merge (a mask-aware adapter)
    public var updateMask: [Float]? = nil

    public init(a: [Float], b: [Float], inFeatures: Int, outFeatures: Int) {
        self.a = a
        self.b = b
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
    }

    /// The weight change: scaling · B · A, masked by `updateMask` when there is one.
    /// - Returns: [out_features, in_features]
    public func delta(scaling: Float) -> [Float] {
        let rank = a.count / inFeatures
        var delta = [Float](repeating: 0, count: outFeatures * inFeatures)
        sgemm(.none, .none, m: outFeatures, n: inFeatures, k: rank, alpha: scaling, b, lda: rank, a, ldb: inFeatures,
              &delta, ldc: inFeatures)
        if let updateMask { delta = elementwiseProduct(delta, updateMask) }
        return delta
    }
}

/// Every LoRA factor of a model: for each layer, the targeted linears' factors (nil for the others).
/// Shapes follow each layer's own widths, so a structurally pruned model gets adapters of its smaller linears.
public struct LoraAdapter: Codable, Equatable, Sendable {
    public let settings: LoraSettings
    /// [layer] of the seven linears' factors, nil where not targeted
    public var layers: [PerLinear<LoraFactors?>]

    public init(settings: LoraSettings, layers: [PerLinear<LoraFactors?>]) {
        self.settings = settings
        self.layers = layers
    }

    /// PEFT's initialisation: A Kaiming-uniform with a = √5, that is U(−1/√in, 1/√in); B zero, so the adapted
    /// model starts equal to the base. A's values come from `seed` in layer, linear order.
    /// - shapes: [layer] of each linear's [out_features, in_features]
    public init(settings: LoraSettings, shapes: [PerLinear<[Int]>], seed: UInt64) {
        var random = SplitMix64(seed: seed)
        self.settings = settings
        layers = shapes.map { shapes in
            PerLinear { linear -> LoraFactors? in
                guard settings.targets.contains(linear) else { return nil }
                let (out, inFeatures) = (shapes[linear][0], shapes[linear][1])
                let bound = 1 / Double(inFeatures).squareRoot()
                let a = (0..<(settings.rank * inFeatures)).map { _ in Float((2 * random.nextUnit() - 1) * bound) }
                return LoraFactors(a: a, b: [Float](repeating: 0, count: out * settings.rank), inFeatures: inFeatures, outFeatures: out)
            }
        }
    }

    /// The same layout with every factor zero (a gradient accumulator).
    public var zeros: LoraAdapter {
        var copy = self
        copy.update { $0 = [Float](repeating: 0, count: $0.count) }
        return copy
    }

    /// Every factor in a fixed order (layer, linear, A then B): the layout of `flattened`.
    public var parameterCount: Int {
        layers.reduce(0) { sum, layer in
            sum + layer.all.reduce(0) { $0 + ($1.value.map { $0.a.count + $0.b.count } ?? 0) }
        }
    }

    /// Applies `body` to every factor array, A then B, layer by layer, linear by linear.
    public mutating func update(_ body: (inout [Float]) throws -> Void) rethrows {
        for l in layers.indices {
            for linear in LlamaLinear.allCases {
                guard var factors = layers[l][linear] else { continue }
                layers[l][linear] = nil  // uniquely held while mutated
                try body(&factors.a)
                try body(&factors.b)
                layers[l][linear] = factors
            }
        }
    }

    /// [parameterCount], the factors in `update`'s order.
    public var flattened: [Float] {
        var flat: [Float] = []
        flat.reserveCapacity(parameterCount)
        var copy = self
        copy.update { flat.append(contentsOf: $0) }
        return flat
    }

    /// Replaces every factor by the values of `flat` ([parameterCount], `update`'s order).
    public mutating func assign(flat: [Float]) {
        precondition(flat.count == parameterCount, "LoraAdapter.assign: \(flat.count) values for \(parameterCount) parameters")
        var offset = 0
        update { array in
            array.replaceSubrange(0..<array.count, with: flat[offset..<(offset + array.count)])
            offset += array.count
        }
    }

    /// PEFT's tensor names and values: base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight ([r, in]) and
    /// .lora_B.weight ([out, r]), in layer, linear order.
    public var peftTensors: [(name: String, shape: [Int], values: [Float])] {
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (layer, linears) in layers.enumerated() {
            for (linear, factors) in linears.all {
                guard let factors else { continue }
                let prefix = "base_model.model.model.layers.\(layer).\(linear.rawValue)"
                tensors.append((prefix + ".lora_A.weight", [settings.rank, factors.inFeatures], factors.a))
                tensors.append((prefix + ".lora_B.weight", [factors.outFeatures, settings.rank], factors.b))
            }
        }
        return tensors
    }

    /// The weight change scaling · B · A of one linear (masked for a mask-aware adapter).
    /// - Returns: [out_features, in_features]
    public func delta(layer: Int, linear: LlamaLinear) -> [Float]? {
        layers[layer][linear]?.delta(scaling: settings.scaling)
    }

    /// Makes the adapter mask-aware: each adapted linear's update is multiplied by (base weight ≠ 0), so training
    /// learns the update that a mask-keeping merge writes. Costs a dense [out, in] update per linear and step.
    /// - blocks: the base model's blocks, whose zeros are the masks
    public mutating func maskUpdates(by blocks: [LlamaBlockWeights]) {
        for (layer, block) in blocks.enumerated() {
            for linear in settings.targets {
                layers[layer][linear]?.updateMask = block.weight(linear).map { $0 == 0 ? 0 : 1 }
            }
        }
    }
}
