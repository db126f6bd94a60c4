import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist eval`: how good a (pruned) model is.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model: perplexity on a token stream, zero-shot accuracy on multiple-choice tasks.",
        subcommands: [PerplexityCommand.self, ZeroShotCommand.self, AttackCommand.self])
}

/// `prune-dist eval perplexity`: exp of the mean over non-overlapping windows of each window's mean next-token NLL.
struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity over non-overlapping windows of a token stream.",
        discussion: "Under mpirun, window w is evaluated on rank w mod size; the result is the same as one process's.")

    @Option(name: .long, help: "Hugging Face model directory (config.json + safetensors).")
    var model: String

    @Option(name: .long, help: "Token ids: a JSON array of integers, or raw little-endian uint16 if the name ends in .u16.")
    var tokens: String?

    @Option(name: .long, help: "Plain text, tokenized with the model's tokenizer.json (instead of --tokens).")
    var text: String?

    @Option(name: .long, parsing: .unconditional, help: "Tokens per window (512, as prune's --eval-seqlen and --seqlen).")
    var seqlen: Int = 512

    @Option(name: .long, help: "Evaluate at most this many windows (from the start of the stream).")
    var maxWindows: Int?

    @Flag(name: .long, help: "Print one JSON object as the last line.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (tokens == nil) != (text == nil) else { throw ValidationError("give exactly one of --tokens FILE and --text FILE") }
        try CommandLineLimits.check(seqlen, "--seqlen", in: CommandLineLimits.seqlen)
        if let maxWindows { try CommandLineLimits.check(maxWindows, "--max-windows", in: CommandLineLimits.count) }
        for (option, path) in [("--tokens", tokens), ("--text", text)] {
            // A folder or FIFO is refused now; a missing file is named when it is read (after the model's checks).
            if let path { try asValidationError { try checkRegularFile(path, option: option, mustExist: false) } }
        }
    }

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let start = Date()
        let (perplexity, windows) = try comm.abortingJobOnError { () throws -> (Double, Int) in
            let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
            guard seqlen <= checkpoint.config.maxPositionEmbeddings else {
                throw PruneDistError(.argument, "--seqlen \(seqlen) is beyond the model's context: \(model)/config.json has max_position_embeddings \(checkpoint.config.maxPositionEmbeddings)")
            }
            let stream = try tokenStream(modelDirectory: checkpoint.directory)
            let layers = checkpoint.config.numHiddenLayers
            return try DistributedEvaluation.perplexity(checkpoint: checkpoint, tokens: stream, source: tokens ?? text!, seqlen: seqlen,
                                                        maxWindows: maxWindows, comm: comm) { layer in
                logger.debug("block \(layer + 1)/\(layers) done")
            }
        }
        guard comm.rank == 0 else { return }
        let seconds = Date().timeIntervalSince(start)
        let evaluated = windows * seqlen
        if json {
            printLine(try jsonLine([
                "perplexity": perplexity, "mean_nll": log(perplexity), "windows": windows, "tokens": evaluated,
                "seqlen": seqlen, "seconds": seconds, "tokens_per_second": Double(evaluated) / seconds, "ranks": comm.size,
                "model": model, (text == nil ? "token_file" : "text_file"): tokens ?? text!,
            ]))
        } else {
            printLine(String(format: "perplexity %.4f over %d windows of %d tokens (%d tokens, %.1f s)",
                             perplexity, windows, seqlen, evaluated, seconds))
        }
    }

    /// The ids to evaluate: read from --tokens, or --text encoded as one stream without special tokens, which is
    /// how protocol R's `eval_tokens.u16` was made.
    private func tokenStream(modelDirectory: URL) throws -> [Int] {
        if let tokens { return try TokenFile.read(URL(fileURLWithPath: tokens)) }
        return try PerplexityCommand.encodeTextFile(URL(fileURLWithPath: text!), modelDirectory: modelDirectory)
    }

    /// A text file encoded as one stream without special tokens (also used by `prune --eval-text`).
    static func encodeTextFile(_ url: URL, modelDirectory: URL) throws -> [Int] {
        let tokenizer = try Tokenizer.load(modelDirectory: modelDirectory)
        let contents: String
        do { contents = try String(contentsOf: url, encoding: .utf8) } catch {
            throw PruneDistError(.data, "\(url.path): cannot read as UTF-8 text (\(error.localizedDescription))")
        }
        let ids = tokenizer.encode(contents)
        guard !ids.isEmpty else { throw PruneDistError(.data, "\(url.path): holds no text to evaluate") }
        return ids
    }
}
