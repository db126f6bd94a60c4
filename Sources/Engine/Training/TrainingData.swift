import Foundation

/// One training sequence: seqlen token ids and which predictions are in the loss.
public struct TrainingExample: Equatable, Sendable {
    /// [seqlen]
    public var ids: [Int]
    /// [seqlen]: counted[t] when position t's prediction of ids[t + 1] is in the loss (never the last position)
    public var counted: [Bool]
}

/// Fine-tuning data as sequences of one length.
///
/// - Text (plain text, JSONL with "text", token files `.u16` / JSON array of ids): the token stream of
///   CalibrationData.tokens cut into consecutive windows of seqlen; every prediction counts (language-model loss).
///   A last stretch shorter than seqlen is left out.
/// - Instructions in the Alpaca layout (JSONL lines or a JSON array of objects with "instruction", "output" and
///   optionally "input"): LLM-Pruner's (alpaca-lora's) prompt template, the response and EOS; only the response's
///   tokens (and EOS) are predicted in the loss, as with train_on_inputs = False. An example longer than seqlen is
///   cut to seqlen (as their cutoff_len); one whose prompt alone fills seqlen has nothing to learn and is left out
///   (counted in `dropped`). Shorter examples are padded with EOS, the padding not in the loss.
/// - Prompt-completion pairs (JSONL lines or a JSON array of objects with string "prompt" and "completion", the layout
///   of TRL's prompt-completion datasets): the prompt as it is, no template, then the completion and EOS, the loss on
///   the completion and EOS only, cut, left out and padded as Alpaca examples are. A classifier is taught this way
///   with the exact prompt it is scored with (e.g. `eval attack --template review`).
public struct TrainingSet: Sendable {
    public enum Format: String, Codable, Sendable { case text, alpaca, promptCompletion = "prompt-completion" }
    public var format: Format
    public var examples: [TrainingExample]
    /// Alpaca examples cut to seqlen, and left out because their prompt fills seqlen
    public var truncated = 0
    public var dropped = 0

    /// LLM-Pruner's Alpaca prompt (templates/alpaca.json of tloen/alpaca-lora), with and without an input.
    public static func alpacaPrompt(instruction: String, input: String) -> String {
        if input.isEmpty {
            return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
                + "### Instruction:\n\(instruction)\n\n### Response:\n"
        }
        return "Below is an instruction that describes a task, paired with an input that provides further context. "
            + "Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\n\(instruction)\n\n### Input:\n\(input)\n\n### Response:\n"
    }

    /// Reads every file in `urls` (their examples in order, file after file).
    /// - eos: the end-of-sequence id (Alpaca responses end with it; padding uses it)
    public static func load(_ urls: [URL], tokenizer: Tokenizer?, seqlen: Int, eos: Int?, vocabSize: Int) throws -> TrainingSet {
        guard seqlen >= 2 else { throw PruneDistError(.argument, "--seqlen must be at least 2, got \(seqlen)") }
        var set: TrainingSet?
        for url in urls {
            let part: TrainingSet
            if let records = try promptedRecords(url) {
                guard let tokenizer else {
                    throw PruneDistError(.argument, "\(url.path) holds \(records.format == .alpaca ? "instructions" : "prompt-completion pairs"); the model's tokenizer.json is needed to tokenize them")
                }
                guard let eos else {
                    throw PruneDistError(.data, "\(url.path): \(records.format == .alpaca ? "instruction data" : "prompt-completion data") needs the model's eos_token_id (config.json) to end responses")
                }
                part = promptedSet(records.pairs, format: records.format, tokenizer: tokenizer, seqlen: seqlen, eos: eos)
            } else {
                let ids = try CalibrationData.tokens(url: url, tokenizer: tokenizer)
                let windows = ids.count / seqlen
                guard windows > 0 else {
                    throw PruneDistError(.data, "\(url.path): \(ids.count) tokens, fewer than one sequence of --seqlen \(seqlen)")
                }
                let counted = (0..<seqlen).map { $0 != seqlen - 1 }
                part = TrainingSet(format: .text, examples: (0..<windows).map {
                    TrainingExample(ids: Array(ids[($0 * seqlen)..<(($0 + 1) * seqlen)]), counted: counted)
                })
            }
            if let largest = part.examples.lazy.flatMap(\.ids).max(), largest >= vocabSize {
                throw PruneDistError(.data, "\(url.path): token id \(largest) is outside the model's vocabulary of \(vocabSize)")
            }
            if var sum = set {
                guard sum.format == part.format else {
                    throw PruneDistError(.argument, "--data \(url.path) is \(part.format.rawValue) data, the files before it are \(sum.format.rawValue); give one kind")
                }
                sum.examples += part.examples
                sum.truncated += part.truncated
                sum.dropped += part.dropped
                set = sum
            } else {
                set = part
            }
        }
        guard let set, !set.examples.isEmpty else {
            throw PruneDistError(.data, "--data \(urls.map(\.path).joined(separator: ", ")): no training examples")
        }
        return set
    }

    /// The (prompt, completion) pairs of an Alpaca file (prompts in LLM-Pruner's template) or of a prompt-completion
    /// file, or nil when the file is neither (plain text, JSONL "text", token files).
    static func promptedRecords(_ url: URL) throws -> (format: Format, pairs: [(prompt: String, completion: String)])? {
        let ext = url.pathExtension.lowercased()
        guard ext == "json" || ext == "jsonl" else { return nil }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PruneDistError(.io, "cannot read --data \(url.path): \(error.localizedDescription)")
        }
        var objects: [(place: String, object: [String: Any])] = []
        if ext == "json" {
            guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any], array.first is [String: Any] else { return nil }
            for (i, element) in array.enumerated() {
                guard let object = element as? [String: Any] else {
                    throw PruneDistError(.data, "\(url.path) element \(i): expected a JSON object (\"instruction\" and \"output\", or \"prompt\" and \"completion\")")
                }
                objects.append(("element \(i)", object))
            }
        } else {
            guard let text = String(data: data, encoding: .utf8) else { throw PruneDistError(.data, "\(url.path) is not valid UTF-8 text") }
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.allSatisfy(\.isWhitespace) {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                    throw PruneDistError(.data, "\(url.path) line \(number + 1): expected a JSON object")
                }
                objects.append(("line \(number + 1)", object))
            }
        }
        // The first object says which layout the file is in; JSONL with "text" is language-model data.
        guard let first = objects.first?.object else { return nil }
        if first["prompt"] != nil && first["instruction"] == nil {
            return (.promptCompletion, try objects.map { place, object in
                guard let prompt = object["prompt"] as? String, let completion = object["completion"] as? String else {
                    throw PruneDistError(.data, "\(url.path) \(place): expected string fields \"prompt\" and \"completion\" (prompt-completion layout, as the file's first object)")
                }
                return (prompt, completion)
            })
        }
        if ext == "jsonl" && first["text"] != nil && first["instruction"] == nil { return nil }
        return (.alpaca, try objects.map { place, object in
            guard let instruction = object["instruction"] as? String, let output = object["output"] as? String else {
                throw PruneDistError(.data, "\(url.path) \(place): expected string fields \"instruction\" and \"output\" (Alpaca layout; "
                                     + "\"input\" optional), \"prompt\" and \"completion\", or \"text\" for language-model data")
            }
            guard object["input"] == nil || object["input"] is String || object["input"] is NSNull else {
                throw PruneDistError(.data, "\(url.path) \(place): \"input\" must be a string")
            }
            return (alpacaPrompt(instruction: instruction, input: object["input"] as? String ?? ""), output)
        })
    }

    static func promptedSet(_ pairs: [(prompt: String, completion: String)], format: Format, tokenizer: Tokenizer, seqlen: Int,
                            eos: Int) -> TrainingSet {
        var set = TrainingSet(format: format, examples: [])
        for (prompt, completion) in pairs {
            // As alpaca-lora: the prompt's length is that of the prompt tokenized alone.
            let promptLength = tokenizer.encode(prompt).count
            var ids = tokenizer.encode(prompt + completion) + [eos]
            if promptLength >= min(ids.count, seqlen) {
                set.dropped += 1
                continue
            }
            if ids.count > seqlen {
                ids = Array(ids.prefix(seqlen))
                set.truncated += 1
            }
            let length = ids.count
            // position t predicts ids[t + 1]: counted from the prompt's last token to the last real token's predecessor
            let counted = (0..<seqlen).map { t in t + 1 >= promptLength && t + 1 < length }
            ids += [Int](repeating: eos, count: seqlen - length)
            set.examples.append(TrainingExample(ids: ids, counted: counted))
        }
        return set
    }
}
