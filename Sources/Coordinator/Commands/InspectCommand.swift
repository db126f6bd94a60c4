import ArgumentParser
import Engine
import Foundation

/// `prune-dist inspect`: what a checkpoint holds, and how sparse its linears are.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a checkpoint's config, every tensor's dtype and shape in block order, and the fraction of exact zeros in each linear.",
        discussion: """
        --pattern N:M checks that every group of M consecutive inputs of every row of every block linear holds at \
        least N zeros (at most M − N non-zeros), as prune --pattern N:M leaves them; the first group that does not \
        is named (tensor, row, inputs) and the command exits 1.
        """)

    @Option(name: .long, help: "Hugging Face model directory (config.json + safetensors).")
    var model: String

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    @Option(name: .long, help: "Check the N:M pattern: every group of M inputs in every row of every linear has at least N zeros; exit 1 naming the first that does not.",
            transform: SparsityPattern.commandLinePattern)
    var pattern: SparsityPattern?

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = try global.makeLogger()
        let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
        let report = try CheckpointInspection(checkpoint)
        var violation: NMViolation?
        if let pattern, case let .nOfM(n, m) = pattern { violation = try firstNMViolation(checkpoint, n: n, m: m) }
        if json {
            var object = try report.jsonObject()
            if let pattern {
                object["pattern_check"] = ["pattern": "\(pattern)", "ok": violation == nil, "first_violation": violation?.jsonObject ?? NSNull()] as [String: Any]
            }
            printLine(try jsonLine(object))
        } else {
            printLine(report.text())
            if let pattern, violation == nil { printLine("pattern \(pattern): every group of every linear holds it") }
        }
        if let violation, let pattern { throw PruneDistError(.data, "not \(pattern): \(violation.description)") }
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
        tensors = try checkpoint.tensorNames.sorted(by: blockOrder).map { name in
            let info = try checkpoint.info(name)
            return Tensor(name: name, dtype: info.dtype, shape: info.shape, file: try checkpoint.file(holding: name).url.lastPathComponent)
        }
        linears = try checkpoint.tensorNames.sorted(by: blockOrder).filter { LlamaLinear.parse(weightName: $0) != nil }.map { name in
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

/// Tensor names in the order a forward pass meets them: the embedding, then block 0, 1, …, 10 (numerically, not
/// model.layers.10 before model.layers.2), each block's tensors in execution order, then the final norm and head.
func blockOrder(_ a: String, _ b: String) -> Bool {
    func key(_ name: String) -> (Int, Int, Int, String) {
        let parts = name.split(separator: ".")
        if parts.count > 3, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) {
            let rest = parts[3...].joined(separator: ".")
            let order = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
            return (1, layer, order.firstIndex { rest.hasPrefix($0 + ".") } ?? order.count, rest)
        }
        if name.hasPrefix("model.embed_tokens") { return (0, 0, 0, name) }
        return (name.hasPrefix("lm_head") ? 3 : 2, 0, 0, name)
    }
    return key(a) < key(b)
}

/// The first group of M consecutive inputs (in one row of one block linear, in block order) with fewer than N zeros.
struct NMViolation {
    var tensor: String
    var row: Int
    var firstInput: Int
    var nonZeros: Int
    var n: Int, m: Int

    var description: String {
        "\(tensor) row \(row), inputs \(firstInput)..<\(firstInput + m) hold \(nonZeros) non-zeros (at most \(m - n) for \(n):\(m))"
    }

    var jsonObject: [String: Any] { ["tensor": tensor, "row": row, "first_input": firstInput, "non_zeros": nonZeros] }
}

/// Scans every block linear's rows group by group; a width that M does not divide is itself a violation.
func firstNMViolation(_ checkpoint: Checkpoint, n: Int, m: Int) throws -> NMViolation? {
    for name in checkpoint.tensorNames.sorted(by: blockOrder) where LlamaLinear.parse(weightName: name) != nil {
        let shape = try checkpoint.info(name).shape
        guard shape.count == 2 else { continue }
        let (rows, columns) = (shape[0], shape[1])
        guard columns % m == 0 else {
            throw PruneDistError(.data, "not \(n):\(m): \(name) has \(columns) inputs, not a multiple of \(m)")
        }
        let values = try checkpoint.floats(name)  // [rows, columns]
        for row in 0..<rows {
            for start in stride(from: 0, to: columns, by: m) {
                var nonZeros = 0
                for j in start..<(start + m) where values[row * columns + j] != 0 { nonZeros += 1 }
                if nonZeros > m - n { return NMViolation(tensor: name, row: row, firstInput: start, nonZeros: nonZeros, n: n, m: m) }
            }
        }
    }
    return nil
}
