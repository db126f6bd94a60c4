import Engine
import Foundation

/// A copy of the checkpoint in `source` written to `target` as one `model.safetensors`, each tensor passed
/// through `change` (its name, shape and Float32 values in; the shape and values to store out, or nil to leave
/// the tensor out) and stored as `dtype` (default: the dtype it had). config.json and the other files are copied
/// as they are. Used to make soup ingredients, perturbed fine-tunes and mismatching checkpoints.
public func writeCheckpointVariant(of source: URL, to target: URL, dtype: DType? = nil,
                                   change: (_ name: String, _ shape: [Int], _ values: [Float]) -> (shape: [Int], values: [Float])? = { (shape: $1, values: $2) }) throws {
    let checkpoint = try Checkpoint(directory: source)
    try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
    var entries: [SafetensorsWriter.Entry] = []
    var tensors: [(name: String, values: [Float])] = []
    for name in checkpoint.tensorNames {
        let info = try checkpoint.info(name)
        guard let changed = change(name, info.shape, try checkpoint.floats(name)) else { continue }
        entries.append(SafetensorsWriter.Entry(name: name, dtype: dtype ?? info.dtype, shape: changed.shape))
        tensors.append((name, changed.values))
    }
    let writer = try SafetensorsWriter(url: target.appendingPathComponent("model.safetensors"), tensors: entries)
    for tensor in tensors { try writer.append(tensor.name, floats: tensor.values) }
    try writer.finish()
    for name in try FileManager.default.contentsOfDirectory(atPath: source.path)
    where !name.hasSuffix(".safetensors") && name != "model.safetensors.index.json" {
        try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: target.appendingPathComponent(name))
    }
}

/// Deterministic noise, uniform in [-scale, scale) (SplitMix64 from `seed`).
public func uniformNoise(count: Int, scale: Float, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float(generator.nextUnit() * 2 - 1) * scale }
}
