import Foundation

/// Averages of checkpoints of one architecture ("model soups", Wortsman et al. 2022): every tensor of the soup
/// is the element-wise mean of that tensor over the ingredients. Ingredients are read tensor by tensor from their
/// memory-mapped files and the soup is written tensor by tensor, so memory holds one tensor of each kind at a
/// time (the Double sum and the Float result of the largest tensor: 12 bytes per element), never a whole model.
public enum ModelSoup {
    /// The config.json entries that make two checkpoints the same network: each with its JSON name, for messages.
    static func architecture(_ config: LlamaConfig) -> [(key: String, value: String)] {
        [("model_type", config.modelType), ("architectures", "\(config.architectures)"),
         ("vocab_size", "\(config.vocabSize)"), ("hidden_size", "\(config.hiddenSize)"),
         ("intermediate_size", "\(config.intermediateSize)"), ("num_hidden_layers", "\(config.numHiddenLayers)"),
         ("num_attention_heads", "\(config.numAttentionHeads)"), ("num_key_value_heads", "\(config.numKeyValueHeads)"),
         ("head_dim", "\(config.headDim)"), ("rms_norm_eps", "\(config.rmsNormEps)"), ("rope_theta", "\(config.ropeTheta)"),
         ("rope_scaling", config.ropeScaling.map { "\($0)" } ?? "none"),
         ("max_position_embeddings", "\(config.maxPositionEmbeddings)"), ("tie_word_embeddings", "\(config.tieWordEmbeddings)"),
         ("attention_bias", "\(config.attentionBias)"), ("mlp_bias", "\(config.mlpBias)"),
         ("prune_dist_layer_widths", config.layerWidths.map { widths in
             widths.map { "(\($0.numAttentionHeads), \($0.numKeyValueHeads), \($0.intermediateSize))" }.joined(separator: " ")
         } ?? "none")]
    }

    /// Refuses ingredients that cannot be averaged, naming the first difference from the first ingredient: a
    /// config.json entry, a tensor one has and the other lacks, or a tensor's shape or dtype.
    public static func checkCompatible(_ models: [Checkpoint]) throws {
        guard let first = models.first else { throw PruneDistError(.argument, "a soup needs at least one model") }
        let reference = architecture(first.config)
        let names = first.tensorNames
        for model in models.dropFirst() {
            let configURL = model.directory.appendingPathComponent("config.json").path
            for (expected, found) in zip(reference, architecture(model.config)) where expected.value != found.value {
                throw PruneDistError(.config, "\(configURL): \(expected.key) is \(found.value), but \(first.directory.path)/config.json has \(expected.value); a soup averages models of one architecture")
            }
            let theirs = Set(model.tensorNames)
            if let missing = names.first(where: { !theirs.contains($0) }) {
                throw PruneDistError(.missingTensor, "\(model.directory.path): tensor \(missing) is missing (\(first.directory.path) has it); a soup needs the same tensors in every model")
            }
            let ours = Set(names)
            if let extra = model.tensorNames.first(where: { !ours.contains($0) }) {
                throw PruneDistError(.missingTensor, "\(model.directory.path): tensor \(extra) is not in \(first.directory.path); a soup needs the same tensors in every model")
            }
            for name in names {
                let (expected, found) = (try first.info(name), try model.info(name))
                guard expected.shape == found.shape else {
                    throw PruneDistError(.shape, "\(try model.file(holding: name).url.path): tensor \(name) has shape \(found.shape), expected \(expected.shape) as in \(first.directory.path)")
                }
                guard expected.dtype == found.dtype else {
                    throw PruneDistError(.dtype, "\(try model.file(holding: name).url.path): tensor \(name) is \(found.dtype.rawValue), expected \(expected.dtype.rawValue) as in \(first.directory.path) (convert one of them first)")
                }
            }
        }
    }

    /// The element-wise mean of tensor `name` over `models`, summed in Double and rounded once to Float.
    /// A NaN or infinity in an ingredient is an error naming its file, tensor and element.
    /// Returns [count of the tensor].
    public static func mean(of name: String, in models: [Checkpoint]) throws -> [Float] {
        var sum: [Double] = []  // [count]
        for model in models {
            let values = try model.floatsCheckedFinite(name)  // [count]
            if sum.isEmpty { sum = [Double](repeating: 0, count: values.count) }
            for i in values.indices { sum[i] += Double(values[i]) }
        }
        let count = Double(models.count)
        return sum.map { Float($0 / count) }
    }

    /// Writes the uniform soup of `models` (already checked compatible) into `directory`: weight tensors averaged
    /// and stored in `dtype` (default: each tensor's own dtype), other tensors (integer buffers) copied from the
    /// first model after checking every model holds the same bytes. Tensors are written in the first model's
    /// name order, sharded at `maxShardBytes`; only the weight files are written (no config.json).
    public static func write(_ models: [Checkpoint], to directory: URL, dtype: DType?,
                             maxShardBytes: Int = CheckpointWriter.defaultMaxShardBytes) throws {
        let first = models[0]
        let names = first.tensorNames
        let entries = try names.map { name -> SafetensorsWriter.Entry in
            let info = try first.info(name)
            return SafetensorsWriter.Entry(name: name, dtype: info.dtype.isWeightType ? dtype ?? info.dtype : info.dtype, shape: info.shape)
        }
        let writer = try CheckpointWriter(directory: directory, tensors: entries, maxShardBytes: maxShardBytes)
        for name in names {
            guard try first.info(name).dtype.isWeightType else {
                let bytes = try first.file(holding: name).rawBytes(name)
                for model in models.dropFirst() {
                    guard try !model.file(holding: name).rawBytes(name).elementsEqual(bytes) else { continue }
                    throw PruneDistError(.data, "\(try model.file(holding: name).url.path): tensor \(name) (\(try first.info(name).dtype.rawValue)) differs from \(first.directory.path)'s; only floating-point tensors can be averaged")
                }
                try writer.append(name, bytes: bytes)
                continue
            }
            try writer.append(name, floats: try mean(of: name, in: models))
        }
        try writer.finish()
    }
}
