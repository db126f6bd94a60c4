import Engine
import Foundation

/// Writes a structurally pruned checkpoint: the input's tensors, with the pruned blocks' linears (and row
/// biases) cut to the kept groups, so the shapes are smaller. config.json gets the new widths: when every
/// block has the same widths, `num_attention_heads`, `num_key_value_heads` and `intermediate_size` are set
/// (and `head_dim` written out, since hidden / heads no longer gives it), which Hugging Face transformers
/// loads; otherwise `prune_dist_layer_widths` lists every block's widths (our loader reads it).
/// Written under a temporary name and renamed when complete, like OutputCheckpoint.
enum StructuredOutputCheckpoint {
    /// - keeps: kept groups of the pruned blocks, by layer; other blocks are copied unchanged
    /// - lock: rank 0's lock on the output's partial folder (OutputFolder), held since the run started
    static func write(source: Checkpoint, keeps: [Int: StructuredKeep], out: URL, lock: OutputLock, dtype: DType?, reportData: Data?,
                      reportURL: URL?) throws {
        let config = source.config
        let outputDType = dtype ?? source.storageDType
        let temporary = lock.partial
        try lock.clearPartialFolder()
        var keepPartial = false
        defer { if !keepPartial { lock.removePartialFolder() } }

        // Every pruned tensor, cut once, block by block (one block of Float32 at a time is held).
        let widths = (0..<config.numHiddenLayers).map { layerWidths(config: config, layer: $0, keep: keeps[$0]) }
        let order = OutputCheckpoint.tensorOrder(source.tensorNames)
        var shapes: [String: [Int]] = [:]
        for (layer, keep) in keeps {
            for linear in LlamaLinear.allCases {
                var shape = linear.shape(config: config, layer: layer)
                let w = widths[layer]
                switch linear {
                case .q: shape[0] = w.numAttentionHeads * config.headDim
                case .k, .v: shape[0] = w.numKeyValueHeads * config.headDim
                case .o: shape[1] = w.numAttentionHeads * config.headDim
                case .gate, .up: shape[0] = keep.channels.count
                case .down: shape[1] = keep.channels.count
                }
                shapes[linear.weightName(layer: layer)] = shape
                if !linear.prunesColumns { shapes[linear.biasName(layer: layer)] = [shape[0]] }
            }
        }
        let entries = try order.map { name -> SafetensorsWriter.Entry in
            let info = try source.info(name)
            return SafetensorsWriter.Entry(name: name, dtype: info.dtype.isWeightType ? outputDType : info.dtype,
                                           shape: shapes[name] ?? info.shape)
        }
        let writer = try CheckpointWriter(directory: temporary, tensors: entries)
        var cut: [String: [Float]] = [:]
        var cutLayer = -1
        for name in order {
            if shapes[name] != nil, let layer = layerOf(name), layer != cutLayer {
                let block = StructuredPruning.removing(try LlamaBlockWeights(checkpoint: source, layer: layer, checkFinite: true),
                                                       keep: keeps[layer]!)
                cut = [:]
                for linear in LlamaLinear.allCases {
                    cut[linear.weightName(layer: layer)] = block.weight(linear)
                    if let b = block.bias(linear) { cut[linear.biasName(layer: layer)] = b }
                }
                cutLayer = layer
            }
            if let values = cut[name] {
                try writer.append(name, floats: values)
            } else {
                let info = try source.info(name)
                if !info.dtype.isWeightType || info.dtype == outputDType {
                    try writer.append(name, bytes: try source.file(holding: name).rawBytes(name))
                } else {
                    try writer.append(name, floats: try source.floats(name))
                }
            }
        }
        try writer.finish()

        var configObject = try JSONSerialization.jsonObject(with: Data(contentsOf: source.directory.appendingPathComponent("config.json"))) as? [String: Any] ?? [:]
        if configObject["dtype"] != nil { configObject["dtype"] = outputDType.torchName }
        configObject["torch_dtype"] = configObject["dtype"] == nil ? outputDType.torchName : nil
        configObject["head_dim"] = config.headDim
        let first = widths[0]
        if widths.allSatisfy({ $0 == first }) {
            configObject["num_attention_heads"] = first.numAttentionHeads
            configObject["num_key_value_heads"] = first.numKeyValueHeads
            configObject["intermediate_size"] = first.intermediateSize
            configObject["prune_dist_layer_widths"] = nil
        } else {
            configObject["prune_dist_layer_widths"] = widths.map {
                ["num_attention_heads": $0.numAttentionHeads, "num_key_value_heads": $0.numKeyValueHeads,
                 "intermediate_size": $0.intermediateSize]
            }
        }
        try OutputCheckpoint.completeFolder(temporary, config: configObject, source: source.directory, reportData: reportData,
                                            name: out.lastPathComponent)
        keepPartial = true  // complete: kept where the error says if it cannot be moved into place
        try OutputFolder.moveIntoPlace(temporary, out: out)
        if let reportData, let reportURL { try writeFileAtomically(reportData, to: reportURL) }
    }

    /// Widths of a block after pruning (its input widths when it is not pruned).
    static func layerWidths(config: LlamaConfig, layer: Int, keep: StructuredKeep?) -> LlamaConfig.LayerWidths {
        let w = config.widths(ofLayer: layer)
        guard let keep else { return w }
        let g = w.numAttentionHeads / w.numKeyValueHeads
        return LlamaConfig.LayerWidths(numAttentionHeads: keep.keyValueHeads.count * g, numKeyValueHeads: keep.keyValueHeads.count,
                                       intermediateSize: keep.channels.count)
    }

    private static func layerOf(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        guard parts.count >= 3, parts[0] == "model", parts[1] == "layers" else { return nil }
        return Int(parts[2])
    }
}
