import ArgumentParser
import Engine
import Foundation

/// `prune-dist inspect`: what a checkpoint holds, and how sparse its linears are.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a checkpoint's config, every tensor's dtype and shape, and the fraction of exact zeros in each linear.")

    @Option(name: .long, help: "Hugging Face model directory (config.json + safetensors).")
    var model: String

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = try global.makeLogger()
        let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
        let report = try CheckpointInspection(checkpoint)
        if json {
            printLine(try jsonLine(report.jsonObject()))
        } else {
            printLine(report.text())
        }
    }
}

/// The facts `inspect` reports, computed once.
struct CheckpointInspection {
    struct Tensor { let name: String; let dtype: DType; let shape: [Int]; let file: String }
    struct Linear { let name: String; let zeros: Int; let total: Int }

    let config: LlamaConfig
    let directory: String
    let tensors: [Tensor]
    let linears: [Linear]

    init(_ checkpoint: Checkpoint) throws {
        config = checkpoint.config
        directory = checkpoint.directory.path
        tensors = try checkpoint.tensorNames.map { name in
            let info = try checkpoint.info(name)
            return Tensor(name: name, dtype: info.dtype, shape: info.shape, file: try checkpoint.file(holding: name).url.lastPathComponent)
        }
        linears = try checkpoint.tensorNames.filter { LlamaLinear.parse(weightName: $0) != nil }.map { name in
            let values = try checkpoint.floats(name)
            return Linear(name: name, zeros: values.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }, total: values.count)
        }
    }

    var linearZeros: Int { linears.reduce(0) { $0 + $1.zeros } }
    var linearTotal: Int { linears.reduce(0) { $0 + $1.total } }
    var parameters: Int { tensors.reduce(0) { $0 + $1.shape.reduce(1, *) } }

    func jsonObject() throws -> [String: Any] {
        let configObject = try JSONSerialization.jsonObject(with: config.jsonData())
        return [
            "model": directory,
            "config": configObject,
            "parameters": parameters,
            "tensors": Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, ["dtype": $0.dtype.rawValue, "shape": $0.shape, "file": $0.file] as [String: Any]) }),
            "linears": Dictionary(uniqueKeysWithValues: linears.map {
                ($0.name, ["zeros": $0.zeros, "total": $0.total, "sparsity": Double($0.zeros) / Double(max($0.total, 1))] as [String: Any])
            }),
            "linear_sparsity": Double(linearZeros) / Double(max(linearTotal, 1)),
        ]
    }

    func text() -> String {
        let c = config
        var lines = [
            "model: \(directory)",
            "architecture: \(c.architectures.joined(separator: ",")) (\(c.modelType)), \(c.numHiddenLayers) blocks, hidden \(c.hiddenSize), FFN \(c.intermediateSize)",
            "heads: \(c.numAttentionHeads) query / \(c.numKeyValueHeads) KV, head_dim \(c.headDim); vocab \(c.vocabSize); rope theta \(c.ropeTheta)\(c.ropeScaling.map { " (\($0.ropeType) scaling)" } ?? ""); tied embeddings: \(c.tieWordEmbeddings)",
            "parameters: \(parameters); linear sparsity \(String(format: "%.4f", Double(linearZeros) / Double(max(linearTotal, 1))))",
            "",
            "tensor".padding(toLength: 52, withPad: " ", startingAt: 0) + "dtype  shape                 zeros",
        ]
        let zerosByName = Dictionary(uniqueKeysWithValues: linears.map { ($0.name, $0) })
        for t in tensors {
            let zeros = zerosByName[t.name].map { String(format: "%.4f", Double($0.zeros) / Double(max($0.total, 1))) } ?? ""
            lines.append(t.name.padding(toLength: 52, withPad: " ", startingAt: 0)
                + t.dtype.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)
                + "\(t.shape)".padding(toLength: 22, withPad: " ", startingAt: 0) + zeros)
        }
        return lines.joined(separator: "\n")
    }
}
