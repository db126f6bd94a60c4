import ArgumentParser
import Engine
import Foundation

/// `prune-dist generate`: try a (pruned) model by eye. One process, the whole model in memory in Float32,
/// a key/value cache so each new token costs one token's forward.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt, streaming tokens as they come (greedy unless --temperature is set).",
        discussion: """
            Greedy decoding gives the same tokens as transformers' generate(do_sample=False) with the weights in \
            float32. --chat applies the model's chat template (chat_template.jinja or tokenizer_config.json) to \
            the prompt as one user message and opens the assistant's turn; ChatML templates (SmolLM2, Qwen2) are \
            supported, with the default system message the template inserts. Generation stops after \
            --max-new-tokens or at an end token (generation_config.json's eos_token_id, else config.json's). \
            Sampling (--temperature > 0, --top-p) draws with prune-dist's own seeded generator: the same seed \
            gives the same text, but not the text torch's generator would give.
            """)

    @Option(name: .long, help: "Hugging Face model directory (config.json, safetensors, tokenizer.json).")
    var model: String

    @Option(name: .long, help: "The prompt text.")
    var prompt: String?

    @Option(name: .long, help: "The prompt as token ids, comma-separated (instead of --prompt; no tokenizer needed, ids are printed).")
    var promptIds: String?

    @Flag(name: .long, help: "Apply the model's chat template: the prompt is one user message, then the assistant's turn.")
    var chat = false

    @Option(name: .long, help: "Tokens to generate at most.")
    var maxNewTokens: Int = 128

    @Option(name: .long, help: "0 (default): greedy. Above 0: sample from the logits divided by this.")
    var temperature: Double = 0

    @Option(name: .long, help: "With --temperature: sample among the most probable tokens whose probabilities first reach this sum.")
    var topP: Double = 1

    @Option(name: .long, help: "Seed of the sampling draws.")
    var seed: UInt64 = 0

    @Flag(name: .long, help: "Do not stream; print one JSON object (prompt and generated ids, text, timing) at the end.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard (prompt == nil) != (promptIds == nil) else { throw ValidationError("give exactly one of --prompt TEXT and --prompt-ids IDS") }
        if chat && promptIds != nil { throw ValidationError("--chat needs --prompt TEXT (the template is applied to text)") }
        try CommandLineLimits.check(maxNewTokens, "--max-new-tokens", in: 1...1_000_000)
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0 (0 is greedy), got \(temperature)") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        if temperature == 0 && topP != 1 { throw ValidationError("--top-p applies to sampling: give --temperature above 0 too") }
        if let promptIds { _ = try GenerateCommand.parseIDs(promptIds) }
    }

    static func parseIDs(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let ids = parts.compactMap { Int($0) }
        guard ids.count == parts.count, !ids.isEmpty, ids.allSatisfy({ $0 >= 0 }) else {
            throw ValidationError("--prompt-ids must be comma-separated token ids ≥ 0, got \"\(text)\"")
        }
        return ids
    }

    func run() throws {
        let logger = try global.makeLogger()
        let directory = URL(fileURLWithPath: model)
        let checkpoint = try Checkpoint(directory: directory)
        let tokenizer: Tokenizer? = prompt == nil ? nil : try Tokenizer.load(modelDirectory: directory)
        let promptTokens: [Int]
        if let prompt, let tokenizer {
            var text = prompt
            if chat {
                let template = try ChatTemplate.load(modelDirectory: directory)
                text = template.render(userMessage: prompt)
                logger.debug("chat template (\(template.family.rawValue)) from \(template.source)")
            }
            let bos = chat ? nil : GenerateCommand.addedBOS(directory, config: checkpoint.config)
            promptTokens = (bos.map { [$0] } ?? []) + tokenizer.encode(text)
        } else {
            promptTokens = try GenerateCommand.parseIDs(promptIds!)
        }
        guard promptTokens.allSatisfy({ $0 < checkpoint.config.vocabSize }) else {
            throw PruneDistError(.argument, "a prompt token id is outside the model's vocabulary of \(checkpoint.config.vocabSize)")
        }
        let capacity = promptTokens.count + maxNewTokens
        guard capacity <= checkpoint.config.maxPositionEmbeddings else {
            throw PruneDistError(.argument, "the prompt's \(promptTokens.count) tokens plus --max-new-tokens \(maxNewTokens) exceed the model's context of \(checkpoint.config.maxPositionEmbeddings) (max_position_embeddings)")
        }
        let loadStart = Date()
        let decoder = try LlamaDecoder(checkpoint: checkpoint, capacity: capacity)
        let settings = GenerationSettings(maxNewTokens: maxNewTokens, temperature: temperature, topP: topP, seed: seed,
                                          endTokens: GenerationConfig.endTokens(modelDirectory: directory, config: checkpoint.config))
        logger.debug("model read in \(String(format: "%.1f", Date().timeIntervalSince(loadStart))) s; prompt of \(promptTokens.count) tokens")
        var detokenizer = tokenizer.map { IncrementalDetokenizer(tokenizer: $0) }
        let start = Date()
        var firstTokenSeconds: Double?
        let generated = try TextGeneration.generate(decoder: decoder, prompt: promptTokens, settings: settings) { token in
            if firstTokenSeconds == nil { firstTokenSeconds = Date().timeIntervalSince(start) }
            guard !json else { return }
            if var d = detokenizer {
                // An end token is not printed (transformers' skip_special_tokens would drop it too).
                let piece = settings.endTokens.contains(token) ? "" : d.push(token)
                detokenizer = d
                FileHandle.standardOutput.write(Data(piece.utf8))
            } else {
                FileHandle.standardOutput.write(Data("\(token) ".utf8))
            }
        }
        let seconds = Date().timeIntervalSince(start)
        let ended = generated.last.map { settings.endTokens.contains($0) } ?? false
        let text = tokenizer.map { $0.decode(ended ? Array(generated.dropLast()) : generated) }
        let rate = Double(max(generated.count - 1, 0)) / max(seconds - (firstTokenSeconds ?? 0), 1e-9)
        if json {
            var object: [String: Any] = [
                "prompt_ids": promptTokens, "generated_ids": generated, "stopped_at_end_token": ended,
                "seconds": seconds, "first_token_seconds": firstTokenSeconds ?? 0, "tokens_per_second_after_first": rate,
                "model": model, "chat": chat, "temperature": temperature, "top_p": topP, "seed": seed,
            ]
            if let text { object["text"] = text }
            printLine(try jsonLine(object))
        } else {
            if var d = detokenizer { FileHandle.standardOutput.write(Data(d.flush().utf8)) }
            printLine("")
            logger.info("\(generated.count) tokens\(ended ? " (end token)" : ""), first after \(String(format: "%.2f", firstTokenSeconds ?? 0)) s, then \(String(format: "%.1f", rate)) tokens/s")
        }
    }

    /// The BOS id to put before a plain prompt, when tokenizer_config.json says `add_bos_token` (LLaMA-1/2
    /// style; SmolLM2 and Qwen2 add none), as the tokenizer's own call would.
    static func addedBOS(_ directory: URL, config: LlamaConfig) -> Int? {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("tokenizer_config.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              object["add_bos_token"] as? Bool == true else { return nil }
        return config.bosTokenId
    }
}

/// generation_config.json, for what generation needs from it.
enum GenerationConfig {
    /// Its `eos_token_id` (an id or a list of ids), else config.json's.
    static func endTokens(modelDirectory: URL, config: LlamaConfig) -> Set<Int> {
        if let data = try? Data(contentsOf: modelDirectory.appendingPathComponent("generation_config.json")),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            if let id = object["eos_token_id"] as? Int { return [id] }
            if let ids = object["eos_token_id"] as? [Int] { return Set(ids) }
        }
        return config.eosTokenId.map { [$0] } ?? []
    }
}
