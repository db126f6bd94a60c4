import Foundation

/// A Hugging Face model directory: config.json plus `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`. Shards are memory-mapped when opened; a tensor is converted to
/// Float32 only when asked for, so a block's weights are materialised only when that block is needed.
public final class Checkpoint: @unchecked Sendable {  // immutable after init
    public let directory: URL
    public let config: LlamaConfig
    /// The safetensors files, in name order.
    public let files: [SafetensorsFile]
    /// Which file holds each tensor.
    private let location: [String: SafetensorsFile]

    public init(directory: URL) throws {
        self.directory = directory
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PruneDistError(.io, "\(directory.path): model directory does not exist")
        }
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw PruneDistError(.config, "\(configURL.path): missing (a Hugging Face model directory needs config.json)")
        }
        config = try LlamaConfig.load(from: configURL)

        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        let singleURL = directory.appendingPathComponent("model.safetensors")
        var location: [String: SafetensorsFile] = [:]
        if FileManager.default.fileExists(atPath: indexURL.path) {
            let weightMap = try Checkpoint.readWeightMap(indexURL)
            var opened: [String: SafetensorsFile] = [:]
            for fileName in Set(weightMap.values).sorted() {
                let url = directory.appendingPathComponent(fileName)
                guard FileManager.default.fileExists(atPath: url.path) else {
                    throw PruneDistError(.io, "\(url.path): shard listed in \(indexURL.lastPathComponent) does not exist")
                }
                opened[fileName] = try SafetensorsFile(url: url)
            }
            for (name, fileName) in weightMap {
                let file = opened[fileName]!
                guard file.contains(name) else {
                    throw PruneDistError(.missingTensor, "\(file.url.path): tensor \(name) is listed in \(indexURL.lastPathComponent) under this shard, but the shard does not contain it")
                }
                location[name] = file
            }
            files = opened.keys.sorted().map { opened[$0]! }
        } else if FileManager.default.fileExists(atPath: singleURL.path) {
            let file = try SafetensorsFile(url: singleURL)
            for name in file.names { location[name] = file }
            files = [file]
        } else {
            throw PruneDistError(.io, "\(directory.path): no model.safetensors or model.safetensors.index.json")
        }
        self.location = location
        try Checkpoint.checkBlocksPresent(config: config, tensorNames: location.keys, directory: directory)
        try Checkpoint.checkWeightsAreFloatingPoint(location)
    }

    /// Weights and biases are pruned, evaluated and written as floating point: an integer tensor (a quantised
    /// or corrupt checkpoint) is refused on open rather than pruned and then written as garbage.
    private static func checkWeightsAreFloatingPoint(_ location: [String: SafetensorsFile]) throws {
        for (name, file) in location.sorted(by: { $0.key < $1.key }) where name.hasSuffix(".weight") || name.hasSuffix(".bias") {
            let dtype = try file.info(name).dtype
            guard dtype.isWeightType else {
                throw PruneDistError(.dtype, "\(file.url.path): tensor \(name) is stored as \(dtype.rawValue); model weights must be floating point (F32, F16 or BF16)")
            }
        }
    }

    /// config.json's num_hidden_layers must be backed by tensors: a header claiming more blocks than the
    /// weights hold would otherwise fail only when the run reaches the first missing block (or, for a huge
    /// count, loop for ever), so it is refused on open.
    private static func checkBlocksPresent(config: LlamaConfig, tensorNames: some Sequence<String>, directory: URL) throws {
        var blocks = Set<Int>()
        for name in tensorNames where name.hasPrefix("model.layers.") {
            if let index = Int(name.dropFirst("model.layers.".count).prefix { $0 != "." }) { blocks.insert(index) }
        }
        guard let missing = (0..<config.numHiddenLayers).first(where: { !blocks.contains($0) }) else { return }
        throw PruneDistError(.config, "\(directory.appendingPathComponent("config.json").path): num_hidden_layers is \(config.numHiddenLayers), but the weights hold \(blocks.count) blocks (no tensor model.layers.\(missing).*)")
    }

    private static func readWeightMap(_ url: URL) throws -> [String: String] {
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PruneDistError(.format, "\(url.path): not a JSON object")
        }
        guard let map = object["weight_map"] as? [String: String], !map.isEmpty else {
            throw PruneDistError(.format, "\(url.path): missing or empty \"weight_map\" (tensor name → shard file)")
        }
        for file in Set(map.values) where file.contains("/") || file.hasPrefix(".") {
            throw PruneDistError(.format, "\(url.path): shard name \(file) must be a plain file name in the model directory")
        }
        return map
    }

    /// Every tensor name, sorted.
    public var tensorNames: [String] { location.keys.sorted() }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    /// The file holding `name`, or a missing-tensor error naming the directory.
    public func file(holding name: String) throws -> SafetensorsFile {
        guard let file = location[name] else {
            throw PruneDistError(.missingTensor, "\(directory.path): tensor \(name) is missing from the checkpoint")
        }
        return file
    }

    public func info(_ name: String) throws -> TensorInfo {
        try file(holding: name).info(name)
    }

    /// The tensor widened to Float32.
    public func floats(_ name: String) throws -> [Float] {
        try file(holding: name).floats(name)
    }

    /// The tensor as Float32 with its shape checked against `shape`.
    public func floats(_ name: String, shape: [Int]) throws -> [Float] {
        let info = try info(name)
        guard info.shape == shape else {
            throw PruneDistError(.shape, "\(try file(holding: name).url.path): tensor \(name) has shape \(info.shape), expected \(shape) from config.json")
        }
        return try floats(name)
    }

    /// The tensor as Float32, refusing NaN or Inf (weights that are about to be pruned or evaluated).
    public func floatsCheckedFinite(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let info = try info(name)
        let values = try shape.map { try floats(name, shape: $0) } ?? floats(name)
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            let columns = info.shape.count >= 2 ? info.shape.last! : 0
            let position = columns > 0 ? " (row \(bad / columns), column \(bad % columns))" : ""
            throw PruneDistError(.nonFinite, "\(try file(holding: name).url.path): tensor \(name) holds \(values[bad]) at element \(bad)\(position); weights must be finite")
        }
        return values
    }

    /// The dtype most weights are stored in (the default output dtype).
    public var storageDType: DType {
        var counts: [DType: Int] = [:]
        for file in files {
            for name in file.names {
                if let info = try? file.info(name), info.dtype.isWeightType { counts[info.dtype, default: 0] += info.count }
            }
        }
        return counts.max { $0.value < $1.value }?.key ?? config.dtype ?? .f32
    }
}
