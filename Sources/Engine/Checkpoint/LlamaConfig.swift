import Foundation

/// The model hyper-parameters from a Hugging Face config.json (LlamaConfig, also Qwen2 and Mistral
/// checkpoints with the same layout). Keys are read in both the transformers-4 spelling (top-level
/// `rope_theta`, `rope_scaling`, `torch_dtype`) and the transformers-5 spelling (`rope_parameters`,
/// `dtype`); missing optional keys take transformers' defaults.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public struct RopeScaling: Codable, Equatable, Sendable {
        /// "default" or "llama3".
        public var ropeType: String
        public var factor: Double?
        public var lowFreqFactor: Double?
        public var highFreqFactor: Double?
        public var originalMaxPositionEmbeddings: Int?

        enum CodingKeys: String, CodingKey {
            case ropeType = "rope_type", type, factor
            case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
            case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        }

        public init(ropeType: String, factor: Double? = nil, lowFreqFactor: Double? = nil,
                    highFreqFactor: Double? = nil, originalMaxPositionEmbeddings: Int? = nil) {
            self.ropeType = ropeType
            self.factor = factor
            self.lowFreqFactor = lowFreqFactor
            self.highFreqFactor = highFreqFactor
            self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType)
                ?? c.decodeIfPresent(String.self, forKey: .type) ?? "default"
            factor = try c.decodeIfPresent(Double.self, forKey: .factor)
            lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
            highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
            originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(ropeType, forKey: .ropeType)
            try c.encodeIfPresent(factor, forKey: .factor)
            try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
            try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
            try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
        }
    }

    public var modelType: String
    public var architectures: [String]
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    /// nil for plain RoPE.
    public var ropeScaling: RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// q, k and v projections carry biases (Qwen2 always; LLaMA when `attention_bias` is true).
    public var attentionBias: Bool
    public var mlpBias: Bool
    /// The dtype the checkpoint is stored in, when config.json says.
    public var dtype: DType?
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// Per-block widths after structured pruning with widths that differ between blocks (our extension:
    /// `prune_dist_layer_widths`); nil when every block has the widths above.
    public var layerWidths: [LayerWidths]?

    public struct LayerWidths: Codable, Equatable, Sendable {
        public var numAttentionHeads: Int
        public var numKeyValueHeads: Int
        public var intermediateSize: Int
        enum CodingKeys: String, CodingKey {
            case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
            case intermediateSize = "intermediate_size"
        }
        public init(numAttentionHeads: Int, numKeyValueHeads: Int, intermediateSize: Int) {
            self.numAttentionHeads = numAttentionHeads
            self.numKeyValueHeads = numKeyValueHeads
            self.intermediateSize = intermediateSize
        }
    }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", architectures
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case maxPositionEmbeddings = "max_position_embeddings", tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", torchDtype = "torch_dtype", dtype
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case layerWidths = "prune_dist_layer_widths"
    }

    /// The RoPE block of transformers 5: theta and the scaling in one object.
    private struct RopeParameters: Decodable {
        var ropeTheta: Double?
        var scaling: RopeScaling
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta" }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
            scaling = try RopeScaling(from: decoder)
        }
    }

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil, rmsNormEps: Double = 1e-6,
                ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil, maxPositionEmbeddings: Int = 2048,
                tieWordEmbeddings: Bool = false, attentionBias: Bool = false, modelType: String = "llama",
                dtype: DType? = nil) {
        self.modelType = modelType
        self.architectures = [modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"]
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.mlpBias = false
        self.dtype = dtype
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func required<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T {
            guard let value = try c.decodeIfPresent(type, forKey: key) else {
                throw PruneDistError(.config, "missing required key \"\(key.rawValue)\"")
            }
            return value
        }
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? "llama"
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures) ?? ["LlamaForCausalLM"]
        vocabSize = try required(Int.self, .vocabSize)
        hiddenSize = try required(Int.self, .hiddenSize)
        intermediateSize = try required(Int.self, .intermediateSize)
        numHiddenLayers = try required(Int.self, .numHiddenLayers)
        numAttentionHeads = try required(Int.self, .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        let parameters = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? parameters?.ropeTheta ?? 10000
        let scaling = try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling) ?? parameters?.scaling
        ropeScaling = scaling?.ropeType == "default" ? nil : scaling
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? (modelType == "qwen2")
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        let dtypeName = try c.decodeIfPresent(String.self, forKey: .torchDtype) ?? c.decodeIfPresent(String.self, forKey: .dtype)
        dtype = dtypeName.flatMap(DType.init(torchName:))
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        layerWidths = try c.decodeIfPresent([LayerWidths].self, forKey: .layerWidths)
    }

    /// Writes the transformers-4 spelling, which transformers 4 and 5 both load.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(architectures, forKey: .architectures)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encodeIfPresent(dtype?.torchName, forKey: .torchDtype)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
        try c.encodeIfPresent(layerWidths, forKey: .layerWidths)
    }

    /// Widths of block `layer` (per-layer widths after structured pruning, otherwise the global ones).
    public func widths(ofLayer layer: Int) -> LayerWidths {
        if let layerWidths, layer < layerWidths.count { return layerWidths[layer] }
        return LayerWidths(numAttentionHeads: numAttentionHeads, numKeyValueHeads: numKeyValueHeads,
                           intermediateSize: intermediateSize)
    }

    /// Checks the values are usable; `source` names the file in messages.
    public func validate(source: String) throws {
        let positive: [(String, Int)] = [
            ("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
            ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
            ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
        ]
        for (key, value) in positive where value <= 0 {
            throw PruneDistError(.config, "\(source): \(key) must be positive, found \(value)")
        }
        try checkLimits(source: source)
        for layer in 0..<numHiddenLayers {
            let w = widths(ofLayer: layer)
            guard w.numKeyValueHeads > 0, w.numAttentionHeads % w.numKeyValueHeads == 0 else {
                let which = layerWidths == nil ? "" : " in layer \(layer)"
                throw PruneDistError(.config, "\(source): num_attention_heads \(w.numAttentionHeads) is not divisible by num_key_value_heads \(w.numKeyValueHeads)\(which)")
            }
        }
        // Rotary embeddings rotate pairs of a head's dimensions (the first half against the second).
        guard headDim % 2 == 0 else {
            throw PruneDistError(.config, "\(source): head_dim \(headDim) is odd; rotary position embeddings need an even head size")
        }
        if let layerWidths, layerWidths.count != numHiddenLayers {
            throw PruneDistError(.config, "\(source): prune_dist_layer_widths has \(layerWidths.count) entries for \(numHiddenLayers) layers")
        }
        guard rmsNormEps > 0, ropeTheta > 0 else {
            throw PruneDistError(.config, "\(source): rms_norm_eps and rope_theta must be positive (found \(rmsNormEps), \(ropeTheta))")
        }
        if let s = ropeScaling {
            guard s.ropeType == "llama3" else {
                throw PruneDistError(.unsupported, "\(source): rope scaling type \"\(s.ropeType)\" is not supported (supported: default, llama3)")
            }
            guard s.factor != nil, s.lowFreqFactor != nil, s.highFreqFactor != nil, s.originalMaxPositionEmbeddings != nil else {
                throw PruneDistError(.config, "\(source): llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
            }
        }
    }

    /// Upper bounds on config.json's sizes, far above any LLaMA-family model (405B: 126 layers, hidden 16384,
    /// MLP 53248, vocabulary 128256), checked before anything is built per layer or sized from them: with
    /// these and the command-line limits no size product overflows an Int, and a header claiming 10^15
    /// layers is refused at once instead of being looped over.
    public enum Limits {
        public static let numHiddenLayers = 4096
        public static let hiddenSize = 1 << 18
        public static let intermediateSize = 1 << 20
        public static let vocabSize = 1 << 22
        public static let heads = 1 << 12
        public static let headDim = 1 << 12
        public static let maxPositionEmbeddings = 1 << 24
    }

    private func checkLimits(source: String) throws {
        let bounded: [(String, Int, Int)] = [
            ("num_hidden_layers", numHiddenLayers, Limits.numHiddenLayers), ("hidden_size", hiddenSize, Limits.hiddenSize),
            ("intermediate_size", intermediateSize, Limits.intermediateSize), ("vocab_size", vocabSize, Limits.vocabSize),
            ("num_attention_heads", numAttentionHeads, Limits.heads), ("num_key_value_heads", numKeyValueHeads, Limits.heads),
            ("head_dim", headDim, Limits.headDim), ("max_position_embeddings", maxPositionEmbeddings, Limits.maxPositionEmbeddings),
        ]
        for (key, value, limit) in bounded where value > limit {
            throw PruneDistError(.config, "\(source): \(key) is \(value), beyond the limit of \(limit) (no LLaMA-family model comes near it; the file is corrupt or hostile)")
        }
        // Query and key/value widths are heads × head_dim, bounded like the hidden size.
        for (key, heads) in [("num_attention_heads", numAttentionHeads), ("num_key_value_heads", numKeyValueHeads)]
        where heads * headDim > Limits.hiddenSize {
            throw PruneDistError(.config, "\(source): \(key) × head_dim is \(heads) × \(headDim) = \(heads * headDim), beyond the limit of \(Limits.hiddenSize)")
        }
        if let layerWidths, layerWidths.count > numHiddenLayers {
            throw PruneDistError(.config, "\(source): prune_dist_layer_widths has \(layerWidths.count) entries for \(numHiddenLayers) layers")
        }
        for (layer, w) in (layerWidths ?? []).enumerated() {
            for (key, value, limit) in [("num_attention_heads", w.numAttentionHeads, Limits.heads), ("num_key_value_heads", w.numKeyValueHeads, Limits.heads),
                                        ("intermediate_size", w.intermediateSize, Limits.intermediateSize)] where value < 0 || value > limit {
                throw PruneDistError(.config, "\(source): prune_dist_layer_widths[\(layer)].\(key) is \(value), outside 0…\(limit)")
            }
        }
    }

    /// Reads and validates config.json.
    public static func load(from url: URL) throws -> LlamaConfig {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw PruneDistError(.io, "\(url.path): cannot read config: \(error.localizedDescription)")
        }
        let config: LlamaConfig
        do {
            config = try JSONDecoder().decode(LlamaConfig.self, from: data)
        } catch let error as PruneDistError {
            throw PruneDistError(.config, "\(url.path): \(error.message)")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw PruneDistError(.config, "\(url.path): key \"\(key)\": \(context.debugDescription)")
        } catch {
            throw PruneDistError(.config, "\(url.path): not a valid config.json: \(error)")
        }
        try config.validate(source: url.path)
        return config
    }

    /// config.json bytes (sorted keys, indented), for writing a checkpoint.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}
