import Engine
import Foundation

/// The checkpoint a run writes, block by block, in the input's layout: the same tensor names, shapes
/// and sharding, in the input's dtype unless told otherwise, with config.json, generation config and
/// tokenizer files copied. Everything is written into a hidden temporary folder beside the output,
/// which is renamed to the output's name only when complete: an interrupted run never leaves anything
/// that looks like a finished checkpoint.
final class OutputCheckpoint {
    let source: Checkpoint
    let out: URL
    let temporary: URL
    let dtype: DType
    private let writer: CheckpointWriter
    private let order: [String]
    private var written = 0
    private var finished = false

    /// - lock: rank 0's lock on the output's partial folder (OutputFolder), held since the run started
    /// - resumeAfter: tensors (in `tensorOrder`) an interrupted run already wrote into the partial folder: keep
    ///   them and continue after them (`--resume`); 0 starts afresh.
    init(source: Checkpoint, out: URL, lock: OutputLock, dtype: DType?, resumeAfter: Int = 0) throws {
        self.source = source
        self.out = out
        let outputDType = dtype ?? source.storageDType
        self.dtype = outputDType
        // A fixed name, so an interrupted run can be found and resumed (RunJournal).
        temporary = lock.partial
        if resumeAfter == 0 { try lock.clearPartialFolder() }
        written = resumeAfter
        order = OutputCheckpoint.tensorOrder(source.tensorNames)
        let entries = try order.map { name -> SafetensorsWriter.Entry in
            let info = try source.info(name)
            return SafetensorsWriter.Entry(name: name, dtype: info.dtype.isWeightType ? outputDType : info.dtype, shape: info.shape)
        }
        writer = try CheckpointWriter(directory: temporary, tensors: entries,
                                      maxShardBytes: OutputCheckpoint.maxShardBytes(like: source, dtype: outputDType),
                                      resumable: true, resumeAfter: resumeAfter)
    }

    deinit {
        // A run with finished blocks in its journal is kept for --resume (it stays hidden and named partial);
        // so is a finished one that could not be moved into place (the error says where it is).
        if !finished && !RunJournal.hasFinishedBlocks(in: temporary) { try? FileManager.default.removeItem(at: temporary) }
    }

    /// Shard like the input: a sharded input keeps roughly its shard size (scaled by the dtype change), a
    /// single-file one gets transformers' default.
    static func maxShardBytes(like source: Checkpoint, dtype outputDType: DType) -> Int {
        guard source.files.count > 1 else { return CheckpointWriter.defaultMaxShardBytes }
        let largest = source.files.map { (try? FileManager.default.attributesOfItem(atPath: $0.url.path)[.size] as? Int) ?? 0 }.max() ?? 0
        let ratio = Double(outputDType.size) / Double(source.storageDType.size)
        return max(1, Int(Double(largest) * ratio))
    }

    /// Tensors written so far (in `tensorOrder`): what a journal records at each block boundary.
    var tensorsWritten: Int { written }

    /// Makes every tensor written so far durable on disk (before the journal may call the block finished).
    func sync() throws { try writer.sync() }

    /// Embedding first, then each block's tensors (norms, then q k v o gate up down with their biases),
    /// then whatever else the checkpoint holds (final norm, head), so blocks can be written as they finish.
    static func tensorOrder(_ names: [String]) -> [String] {
        func key(_ name: String) -> (Int, Int, Int, String) {
            if name == LlamaTensorNames.embedding { return (0, 0, 0, name) }
            let parts = name.split(separator: ".")
            if parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) {
                let rest = parts[3...].joined(separator: ".")
                let linear = LlamaLinear.allCases.firstIndex { rest.hasPrefix($0.rawValue + ".") }
                let rank = rest.hasPrefix("input_layernorm") ? 0 : rest.hasPrefix("post_attention_layernorm") ? 1 : 2 + (linear ?? 7)
                return (1, layer, rank, rest)
            }
            return (2, 0, 0, name)
        }
        return names.sorted { key($0) < key($1) }
    }

    private func copyNext(upTo predicate: (String) -> Bool, replacing linears: [String: [Float]] = [:]) throws {
        while written < order.count, predicate(order[written]) {
            let name = order[written]
            if let values = linears[name] {
                try writer.append(name, floats: values)
            } else {
                let info = try source.info(name)
                if !info.dtype.isWeightType || info.dtype == dtype {
                    try writer.append(name, bytes: try source.file(holding: name).rawBytes(name))
                } else {
                    try writer.append(name, floats: try source.floats(name))
                }
            }
            written += 1
        }
    }

    /// Writes block `layer`: its pruned linears as given (by LlamaLinear), everything else copied.
    func writeBlock(layer: Int, linears: PerLinear<[Float]>) throws {
        try copyNext { $0 == LlamaTensorNames.embedding }
        let prefix = "model.layers.\(layer)."
        let replacements = Dictionary(uniqueKeysWithValues: linears.all.map { ($0.linear.weightName(layer: layer), $0.value) })
        try copyNext(upTo: { $0.hasPrefix(prefix) }, replacing: replacements)
    }

    /// Writes the remaining tensors, config and tokenizer files and the report, then moves the folder
    /// into place.
    func finish(reportData: Data?, reportURL: URL?) throws {
        try copyNext { _ in true }
        try writer.finish()
        var configObject = try JSONSerialization.jsonObject(with: Data(contentsOf: source.directory.appendingPathComponent("config.json"))) as? [String: Any] ?? [:]
        if configObject["dtype"] != nil { configObject["dtype"] = dtype.torchName }
        configObject["torch_dtype"] = configObject["dtype"] == nil ? dtype.torchName : nil
        try OutputCheckpoint.completeFolder(temporary, config: configObject, source: source.directory, reportData: reportData,
                                            name: out.lastPathComponent)
        finished = true  // complete: kept where the error says if it cannot be moved into place
        try OutputFolder.moveIntoPlace(temporary, out: out)
        if let reportData, let reportURL {
            try writeFileAtomically(reportData, to: reportURL)
        }
    }

    /// The last files of every output checkpoint: config.json (with `prune_dist` and, for sparse runs,
    /// `sparsity_config`), every file of `source` that is not weights or config (tokenizer, chat template,
    /// generation config, …: CheckpointCompanions), the report and a model card (README.md); the folder is then
    /// moved into place (OutputFolder.moveIntoPlace). `name`: the output's name, for the model card.
    static func completeFolder(_ temporary: URL, config: [String: Any], source: URL, reportData: Data?, name: String? = nil) throws {
        var config = config
        CheckpointCompanions.annotate(config: &config, reportData: reportData)
        let configData = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try writeFileAtomically(configData, to: temporary.appendingPathComponent("config.json"))
        try CheckpointCompanions.copy(from: source, to: temporary)
        if let reportData {
            try writeFileAtomically(reportData, to: temporary.appendingPathComponent("prune-report.json"))
            try CheckpointCompanions.writeModelCard(reportData: reportData, folder: temporary, name: name)
        }
    }
}
