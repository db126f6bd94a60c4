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
public struct TrainingSet: Sendable {
    public enum Format: String, Codable, Sendable { case text, alpaca }
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
            if let records = try alpacaRecords(url) {
                guard let tokenizer else {
                    throw PruneDistError(.argument, "\(url.path) holds instructions; the model's tokenizer.json is needed to tokenize them")
                }
                guard let eos else {
                    throw PruneDistError(.data, "\(url.path): instruction data needs the model's eos_token_id (config.json) to end responses")
                }
                part = alpacaSet(records, tokenizer: tokenizer, seqlen: seqlen, eos: eos, source: url.path)
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

    /// (instruction, input, output) of an Alpaca file, or nil when the file is not instruction data.
    static func alpacaRecords(_ url: URL) throws -> [(instruction: String, input: String, output: String)]? {
        let ext = url.pathExtension.lowercased()
        guard ext == "json" || ext == "jsonl" else { return nil }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PruneDistError(.io, "cannot read --data \(url.path): \(error.localizedDescription)")
        }
        var objects: [(line: String, object: [String: Any])] = []
        if ext == "json" {
            guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any], array.first is [String: Any] else { return nil }
            for (i, element) in array.enumerated() {
                guard let object = element as? [String: Any] else {
                    throw PruneDistError(.data, "\(url.path) element \(i): expected a JSON object with \"instruction\" and \"output\"")
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
            // JSONL with "text" is language-model data
            guard let first = objects.first, first.object["text"] == nil || first.object["instruction"] != nil else { return nil }
        }
        return try objects.map { place, object in
            guard let instruction = object["instruction"] as? String, let output = object["output"] as? String else {
                throw PruneDistError(.data, "\(url.path) \(place): expected string fields \"instruction\" and \"output\" (Alpaca layout; "
                                     + "\"input\" optional), or \"text\" for language-model data")
            }
            guard object["input"] == nil || object["input"] is String || object["input"] is NSNull else {
                throw PruneDistError(.data, "\(url.path) \(place): \"input\" must be a string")
            }
            return (instruction, object["input"] as? String ?? "", output)
        }
    }

    static func alpacaSet(_ records: [(instruction: String, input: String, output: String)], tokenizer: Tokenizer, seqlen: Int,
                          eos: Int, source: String) -> TrainingSet {
        var set = TrainingSet(format: .alpaca, examples: [])
        for record in records {
            let prompt = alpacaPrompt(instruction: record.instruction, input: record.input)
            // As alpaca-lora: the prompt's length is that of the prompt tokenized alone.
            let promptLength = tokenizer.encode(prompt).count
            var ids = tokenizer.encode(prompt + record.output) + [eos]
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
