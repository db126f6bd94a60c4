import ArgumentParser
import Engine
import Foundation

/// `prune-dist convert`: a llama.cpp GGUF file to a Hugging Face model directory.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a llama.cpp GGUF file (llama or qwen2) into a Hugging Face model directory: dequantised safetensors, config.json, tokenizer.json and tokenizer_config.json.",
        discussion: "--threads N tensors are dequantised at once, one per thread (default: every core); they are written in file order as their turn comes.")

    @Option(name: .long, help: "GGUF file to convert (v2 or v3; F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K tensors).")
    var gguf: String

    @Option(name: .long, help: "Output directory (absent or empty; written under a temporary name, renamed when complete).")
    var out: String

    @Option(name: .long, help: "Weight dtype of the output: bf16, f16 or f32.", transform: DType.commandLineWeightType)
    var dtype: DType = .bf16

    @Option(name: .long, help: "Split the safetensors into shards of at most this many bytes (default 5 GB, as transformers).")
    var maxShardBytes: Int = CheckpointWriter.defaultMaxShardBytes

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard maxShardBytes > 0 else { throw ValidationError("--max-shard-bytes must be positive, got \(maxShardBytes)") }
    }

    func run() throws {
        let logger = try global.makeLogger()
        let start = Date()
        let summary = try GGUFConversion.convert(gguf: URL(fileURLWithPath: gguf), out: URL(fileURLWithPath: out),
                                                 dtype: dtype, maxShardBytes: maxShardBytes,
                                                 threads: global.threads ?? ProcessInfo.processInfo.activeProcessorCount,
                                                 progress: { logger.info("\($0)") })
        let c = summary.config
        printLine("converted \(gguf) -> \(out): \(c.modelType), \(c.numHiddenLayers) blocks, hidden \(c.hiddenSize), vocab \(c.vocabSize), \(summary.tensors) tensors, \(summary.parameters) parameters in \(dtype.rawValue.lowercased()), tied embeddings \(c.tieWordEmbeddings), \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        printLine(try jsonLine(["out": out, "tensors": summary.tensors, "parameters": summary.parameters,
                                "files": summary.files, "dtype": dtype.rawValue.lowercased()]))
    }
}
