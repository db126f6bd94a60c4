import Engine
import Foundation

/// `finetune --merge`: the input checkpoint with every adapted linear replaced by W + scaling·B·A, in the input's
/// layout (tensor order, dtypes, shard size, config.json and companion files). A weight that is exactly zero in
/// the input stays zero: a pruned model's mask (unstructured or N:M) survives the merge, at the price of the
/// update's share on pruned positions (the merged model then differs from base + adapter; the report measures it).
/// Structured models are merged at each layer's own widths.
enum MergedCheckpoint {
    /// Writes into `folder` (created); returns how many weights the mask held at zero.
    /// - dtype: the weights' dtype (default: the input's). A small update vanishes in BF16's 8 bits of mantissa; F32
    ///   keeps it (config.json then still names the input's dtype, which transformers converts to on load unless
    ///   asked for float32).
    /// - keepZeros: false adds the whole update, zeros included: the model as trained (what PEFT applies), for
    ///   evaluating it through a checkpoint; the written output always keeps the mask
    static func write(source: Checkpoint, adapter: LoraAdapter, to folder: URL, dtype: DType? = nil, keepZeros: Bool = true) throws -> Int {
        let order = OutputCheckpoint.tensorOrder(source.tensorNames)
        let entries = try order.map { name -> SafetensorsWriter.Entry in
            let info = try source.info(name)
            return SafetensorsWriter.Entry(name: name, dtype: info.dtype.isWeightType ? (dtype ?? info.dtype) : info.dtype, shape: info.shape)
        }
        let outputDType = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.dtype) })
        var maxShardBytes = CheckpointWriter.defaultMaxShardBytes
        if source.files.count > 1 {
            maxShardBytes = source.files.map { (try? FileManager.default.attributesOfItem(atPath: $0.url.path)[.size] as? Int) ?? 0 }.max() ?? maxShardBytes
        }
        let writer = try CheckpointWriter(directory: folder, tensors: entries, maxShardBytes: maxShardBytes)
        var adapted: [String: (layer: Int, linear: LlamaLinear)] = [:]
        for layer in adapter.layers.indices {
            for linear in adapter.settings.targets { adapted[linear.weightName(layer: layer)] = (layer, linear) }
        }
        var masked = 0
        for name in order {
            if let (layer, linear) = adapted[name], let delta = adapter.delta(layer: layer, linear: linear) {
                var weight = try source.floatsCheckedFinite(name)
                for i in 0..<weight.count {
                    if weight[i] == 0, keepZeros { if delta[i] != 0 { masked += 1 } } else { weight[i] += delta[i] }
                }
                try writer.append(name, floats: weight)
            } else if try source.info(name).dtype == outputDType[name] {
                try writer.append(name, bytes: try source.file(holding: name).rawBytes(name))
            } else {
                try writer.append(name, floats: try source.floats(name))
            }
        }
        try writer.finish()
        try FileManager.default.copyItem(at: source.directory.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))
        try CheckpointCompanions.copy(from: source.directory, to: folder)
        return masked
    }
}
