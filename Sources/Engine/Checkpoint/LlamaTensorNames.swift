/// The seven linear layers of a LLaMA decoder block, by their Hugging Face names.
public enum LlamaLinear: String, CaseIterable, Codable, Sendable {
    case q = "self_attn.q_proj"
    case k = "self_attn.k_proj"
    case v = "self_attn.v_proj"
    case o = "self_attn.o_proj"
    case gate = "mlp.gate_proj"
    case up = "mlp.up_proj"
    case down = "mlp.down_proj"

    /// `model.layers.{layer}.self_attn.q_proj.weight` and so on.
    public func weightName(layer: Int) -> String { "model.layers.\(layer).\(rawValue).weight" }
    public func biasName(layer: Int) -> String { "model.layers.\(layer).\(rawValue).bias" }

    /// Linears that read the same input share one input statistic (q/k/v, gate/up).
    public var inputGroup: LlamaLinearInput {
        switch self {
        case .q, .k, .v: return .attentionInput
        case .o: return .attentionOutput
        case .gate, .up: return .mlpInput
        case .down: return .mlpHidden
        }
    }

    /// [out_features, in_features] of this linear in a block with the given widths.
    public func shape(config: LlamaConfig, layer: Int) -> [Int] {
        let w = config.widths(ofLayer: layer)
        let qDim = w.numAttentionHeads * config.headDim, kvDim = w.numKeyValueHeads * config.headDim
        switch self {
        case .q: return [qDim, config.hiddenSize]
        case .k, .v: return [kvDim, config.hiddenSize]
        case .o: return [config.hiddenSize, qDim]
        case .gate, .up: return [w.intermediateSize, config.hiddenSize]
        case .down: return [config.hiddenSize, w.intermediateSize]
        }
    }

    /// Parses `model.layers.{i}.{linear}.weight` into (layer, linear).
    public static func parse(weightName name: String) -> (layer: Int, linear: LlamaLinear)? {
        let parts = name.split(separator: ".")
        guard parts.count == 6, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]),
              parts[5] == "weight", let linear = LlamaLinear(rawValue: "\(parts[3]).\(parts[4])") else { return nil }
        return (layer, linear)
    }
}

/// The four distinct inputs of a block's linears, in execution order.
public enum LlamaLinearInput: String, CaseIterable, Codable, Sendable {
    case attentionInput   // RMSNorm(x): input of q, k, v
    case attentionOutput  // attention result: input of o
    case mlpInput         // RMSNorm(h): input of gate, up
    case mlpHidden        // silu(gate)·up: input of down

    public var linears: [LlamaLinear] { LlamaLinear.allCases.filter { $0.inputGroup == self } }
}

/// Names of the tensors outside the blocks.
public enum LlamaTensorNames {
    public static let embedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let lmHead = "lm_head.weight"
    public static func inputNorm(layer: Int) -> String { "model.layers.\(layer).input_layernorm.weight" }
    public static func postAttentionNorm(layer: Int) -> String { "model.layers.\(layer).post_attention_layernorm.weight" }
}
