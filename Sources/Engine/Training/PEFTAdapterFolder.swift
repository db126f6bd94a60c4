import Foundation

/// A Hugging Face PEFT LoRA adapter folder: adapter_config.json and adapter_model.safetensors with PEFT's tensor
/// names (see LoraAdapter.peftTensors), what `PeftModel.from_pretrained(base, folder)` loads.
public enum PEFTAdapterFolder {
    public static let configName = "adapter_config.json"
    public static let weightsName = "adapter_model.safetensors"

    /// adapter_config.json's keys that PEFT's LoraConfig reads for a plain LoRA (the others keep their defaults).
    public static func config(_ settings: LoraSettings, baseModel: String) -> [String: Any] {
        [
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": baseModel,
            "r": settings.rank,
            "lora_alpha": settings.alpha,
            "lora_dropout": settings.dropout,
            "target_modules": settings.targets.map(LoraSettings.moduleName),
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": NSNull(),
            "use_rslora": false,
            "use_dora": false,
        ]
    }

    /// Writes the two files into `folder` (which must exist), each atomically. The safetensors bytes depend only on
    /// the adapter's values, so equal adapters give identical files.
    public static func write(_ adapter: LoraAdapter, to folder: URL, baseModel: String) throws {
        let tensors = adapter.peftTensors
        let writer = try SafetensorsWriter(url: folder.appendingPathComponent(weightsName),
                                           tensors: tensors.map { ($0.name, DType.f32, $0.shape) }, metadata: ["format": "pt"])
        for tensor in tensors { try writer.append(tensor.name, floats: tensor.values) }
        try writer.finish()
        let json = try JSONSerialization.data(withJSONObject: config(adapter.settings, baseModel: baseModel),
                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try writeFileAtomically(json, to: folder.appendingPathComponent(configName))
    }

    /// Reads an adapter folder written by PEFT or by `write`, for a model whose linears have `shapes`.
    /// - shapes: [layer] of each linear's [out_features, in_features]
    public static func read(_ folder: URL, shapes: [PerLinear<[Int]>]) throws -> LoraAdapter {
        let configURL = folder.appendingPathComponent(configName)
        guard let data = try? Data(contentsOf: configURL),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PruneDistError(.data, "\(configURL.path): cannot read a JSON object (expected PEFT's adapter_config.json)")
        }
        guard object["peft_type"] as? String == "LORA" else {
            throw PruneDistError(.data, "\(configURL.path): peft_type is \(object["peft_type"] ?? "missing"), expected \"LORA\"")
        }
        guard let rank = (object["r"] as? NSNumber)?.intValue, rank > 0,
              let alpha = (object["lora_alpha"] as? NSNumber)?.doubleValue,
              let modules = object["target_modules"] as? [String] else {
            throw PruneDistError(.data, "\(configURL.path): expected r (positive integer), lora_alpha (number) and target_modules (array of names)")
        }
        if object["use_rslora"] as? Bool == true || object["use_dora"] as? Bool == true || object["fan_in_fan_out"] as? Bool == true {
            throw PruneDistError(.data, "\(configURL.path): rsLoRA, DoRA and fan_in_fan_out adapters are not supported")
        }
        let targets = try modules.map { module -> LlamaLinear in
            guard let linear = LlamaLinear.allCases.first(where: { LoraSettings.moduleName($0) == module }) else {
                throw PruneDistError(.data, "\(configURL.path): target module \(module) is not one of a LLaMA block's linears")
            }
            return linear
        }
        let settings = LoraSettings(rank: rank, alpha: alpha, dropout: (object["lora_dropout"] as? NSNumber)?.doubleValue ?? 0,
                                    targets: targets)
        let file = try SafetensorsFile(url: folder.appendingPathComponent(weightsName))
        let layers = try shapes.enumerated().map { layer, shapes in
            try PerLinear { linear -> LoraFactors? in
                guard settings.targets.contains(linear) else { return nil }
                let prefix = "base_model.model.model.layers.\(layer).\(linear.rawValue)"
                let (out, inFeatures) = (shapes[linear][0], shapes[linear][1])
                func tensor(_ name: String, _ shape: [Int]) throws -> [Float] {
                    let info = try file.info(name)
                    guard info.shape == shape else {
                        throw PruneDistError(.shape, "\(file.url.path): \(name) has shape \(info.shape), the model needs \(shape)")
                    }
                    return try file.floats(name)
                }
                return LoraFactors(a: try tensor(prefix + ".lora_A.weight", [rank, inFeatures]),
                                   b: try tensor(prefix + ".lora_B.weight", [out, rank]), inFeatures: inFeatures, outFeatures: out)
            }
        }
        return LoraAdapter(settings: settings, layers: layers)
    }
}
