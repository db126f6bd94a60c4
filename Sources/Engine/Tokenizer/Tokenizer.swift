import Foundation

/// A Hugging Face tokenizer.json: byte-level BPE (GPT-2, LLaMA-3, SmolLM, Qwen2) or SentencePiece-style
/// BPE with byte fallback (LLaMA-1/2). Encoding follows the library's pipeline: added tokens are cut out of
/// the raw text, the rest is normalized, pre-tokenized into words, and each word goes through BPE.
/// No BOS/EOS is added (add_special_tokens = false); decoding keeps special tokens.
public final class Tokenizer: Sendable {
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    /// Added tokens matched in the raw text / in the normalized text.
    let rawAddedTokens: AddedTokenMatcher
    let normalizedAddedTokens: AddedTokenMatcher
    /// Added tokens' contents by id, which take precedence over the model's vocabulary when decoding.
    let addedContent: [Int: String]

    /// Ids 0 ..< vocabularySize cover the model's vocabulary and every added token.
    public let vocabularySize: Int

    public init(url: URL) throws {
        let file = url.path
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw PruneDistError(.io, "cannot read tokenizer \(file): \(error.localizedDescription)")
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw PruneDistError(.format, "\(file) is not valid JSON: \(error.localizedDescription)")
        }
        guard let root = parsed as? [String: Any] else {
            throw PruneDistError(.format, "\(file): expected a JSON object at the top level of tokenizer.json")
        }
        guard let modelObject = root["model"] as? [String: Any] else {
            throw PruneDistError(.format, "\(file): field \"model\" is missing or not an object")
        }
        let model = try BPEModel(json: modelObject, file: file)
        self.model = model
        normalizer = try parseNormalizer(root["normalizer"], field: "normalizer", file: file)
        preTokenizer = try parsePreTokenizer(root["pre_tokenizer"], field: "pre_tokenizer", file: file)
        decoder = try parseDecoder(root["decoder"], field: "decoder", file: file)

        var raw = [AddedToken]()
        var normalized = [AddedToken]()
        var addedContent = [Int: String]()
        for (index, entry) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
            let field = "added_tokens[\(index)]"
            guard let object = entry as? [String: Any], let id = object["id"].flatMap(integerFromJSON),
                  let content = object["content"] as? String, id >= 0 else {
                throw PruneDistError(.format, "\(file): \(field) needs an integer \"id\" ≥ 0 and a string \"content\"")
            }
            let special = object["special"] as? Bool ?? false
            let token = AddedToken(id: id, content: Array(content.unicodeScalars), special: special,
                                   leftStrip: object["lstrip"] as? Bool ?? false,
                                   rightStrip: object["rstrip"] as? Bool ?? false,
                                   singleWord: object["single_word"] as? Bool ?? false,
                                   normalized: object["normalized"] as? Bool ?? !special)
            // Without a normalizer both passes see the same text; one pass keeps leftmost-longest exact.
            if token.normalized && normalizer != nil { normalized.append(token) } else { raw.append(token) }
            addedContent[id] = content
        }
        rawAddedTokens = AddedTokenMatcher(raw)
        normalizedAddedTokens = AddedTokenMatcher(normalized)
        self.addedContent = addedContent
        vocabularySize = max(model.maximumID, addedContent.keys.max() ?? -1) + 1
    }

    /// The tokenizer of a Hugging Face model directory: `<dir>/tokenizer.json`.
    public static func load(modelDirectory: URL) throws -> Tokenizer {
        let url = modelDirectory.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw PruneDistError(.io, "no tokenizer.json in \(modelDirectory.path)")
        }
        return try Tokenizer(url: url)
    }

    /// The ids of `text`, without BOS/EOS; added and special tokens written in the text are recognised.
    public func encode(_ text: String) -> [Int] {
        var cache = WordCache()
        return encode(text, cache: &cache)
    }

    /// Encodes several texts sharing one word cache (faster than one `encode` per text).
    /// texts: [d]; returns [d][n_d] ids
    public func encode(_ texts: [String]) -> [[Int]] {
        var cache = WordCache()
        return texts.map { encode($0, cache: &cache) }
    }

    /// The text of `ids` with special tokens kept; ids outside the vocabulary are skipped.
    public func decode(_ ids: [Int]) -> String {
        let tokens = ids.compactMap { id -> String? in
            if let content = addedContent[id] { return content }
            return id >= 0 && id < model.tokenForID.count ? model.tokenForID[id] : nil
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decode(tokens).joined()
    }

    /// Ids of words already seen in this call: natural text repeats words, and BPE is the costly step.
    typealias WordCache = [ArraySlice<Unicode.Scalar>: [Int]]

    private func encode(_ text: String, cache: inout WordCache) -> [Int] {
        let scalars = Array(text.unicodeScalars)
        var ids = [Int]()
        ids.reserveCapacity(scalars.count / 3)
        for segment in rawAddedTokens.split(scalars[...], atTextStart: true) {
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let stretch, let atTextStart):
                guard let normalizer else {
                    encodeText(stretch, atTextStart: atTextStart, into: &ids, cache: &cache)
                    continue
                }
                var raw = String()
                raw.unicodeScalars.append(contentsOf: stretch)
                let normalized = Array(normalizer.apply(raw).unicodeScalars)
                for inner in normalizedAddedTokens.split(normalized[...], atTextStart: atTextStart) {
                    switch inner {
                    case .token(let id): ids.append(id)
                    case .text(let text, let start): encodeText(text, atTextStart: start, into: &ids, cache: &cache)
                    }
                }
            }
        }
        return ids
    }

    /// Pre-tokenizes normalized text and runs BPE on each word.
    /// text: [n] scalars; ids: grows by the text's token count
    private func encodeText(_ text: ArraySlice<Unicode.Scalar>, atTextStart: Bool, into ids: inout [Int],
                            cache: inout WordCache) {
        let whole = TextPiece(scalars: text, atTextStart: atTextStart)
        let words = preTokenizer?.apply([whole]) ?? [whole]
        for word in words where !word.scalars.isEmpty {
            if let known = cache[word.scalars] {
                ids.append(contentsOf: known)
                continue
            }
            var wordIDs = [Int]()
            model.tokenize(word.scalars, into: &wordIDs)
            if cache.count > 500_000 { cache.removeAll(keepingCapacity: true) }
            cache[word.scalars] = wordIDs
            ids.append(contentsOf: wordIDs)
        }
    }
}

// MARK: - tokenizer.json sections

private func typeName(_ object: [String: Any], field: String, file: String) throws -> String {
    guard let type = object["type"] as? String else {
        throw PruneDistError(.format, "\(file): \(field).type is missing")
    }
    return type
}

private func unsupported(_ file: String, _ field: String, _ type: String) -> PruneDistError {
    PruneDistError(.unsupported, "\(file): \(field).type \"\(type)\" is not supported")
}

private func objects(_ value: Any?, field: String, file: String) throws -> [[String: Any]] {
    guard let array = value as? [Any], let objects = array as? [[String: Any]] else {
        throw PruneDistError(.format, "\(file): \(field) is missing or not an array of objects")
    }
    return objects
}

private func singleScalar(_ value: Any?, field: String, file: String) throws -> Unicode.Scalar {
    guard let string = value as? String, string.unicodeScalars.count == 1 else {
        throw PruneDistError(.format, "\(file): \(field) must be a one-character string, found \(value ?? "nothing")")
    }
    return string.unicodeScalars.first!
}

/// Metaspace's prepend_scheme, or the older add_prefix_space flag.
private func prependScheme(_ object: [String: Any], field: String, file: String) throws -> PrependScheme {
    if let name = object["prepend_scheme"] as? String {
        guard let scheme = PrependScheme(rawValue: name) else {
            throw PruneDistError(.format, "\(file): \(field).prepend_scheme \"\(name)\" is not always, first or never")
        }
        return scheme
    }
    return (object["add_prefix_space"] as? Bool ?? true) ? .always : .never
}

/// A `{"String": s}` or `{"Regex": r}` pattern.
private func replacePattern(_ value: Any?, field: String, file: String) throws -> ReplacePattern {
    if let object = value as? [String: Any] {
        if let literal = object["String"] as? String { return .literal(literal) }
        if let regex = object["Regex"] as? String {
            do { return .regex(try CompiledRegex(regex)) } catch {
                throw PruneDistError(.unsupported, "\(file): \(field).Regex \(regex) cannot be compiled: \(error)")
            }
        }
    }
    throw PruneDistError(.format, "\(file): \(field) must be {\"String\": …} or {\"Regex\": …}")
}

/// A component of tokenizer.json (normalizer, pre-tokenizer, decoder): nil when absent or null, else its object and type.
private func component(_ value: Any?, field: String, file: String) throws -> (object: [String: Any], type: String)? {
    guard let value, !(value is NSNull) else { return nil }
    guard let object = value as? [String: Any] else {
        throw PruneDistError(.format, "\(file): \(field) is not an object")
    }
    return (object, try typeName(object, field: field, file: file))
}

/// The steps of a Sequence component, listed under `key`, each parsed by `parse`; null steps are dropped.
private func sequenceSteps<Step>(_ object: [String: Any], key: String, field: String, file: String,
                                 parse: (_ value: Any?, _ field: String, _ file: String) throws -> Step?) throws -> [Step] {
    try objects(object[key], field: "\(field).\(key)", file: file).enumerated().compactMap {
        try parse($1, "\(field).\(key)[\($0)]", file)
    }
}

/// A Replace step's pattern and the content that replaces it.
private func replaceStep(_ object: [String: Any], field: String, file: String) throws -> (pattern: ReplacePattern, content: String) {
    guard let content = object["content"] as? String else {
        throw PruneDistError(.format, "\(file): \(field).content is missing")
    }
    return (try replacePattern(object["pattern"], field: "\(field).pattern", file: file), content)
}

private func parseNormalizer(_ value: Any?, field: String, file: String) throws -> Normalizer? {
    guard let (object, type) = try component(value, field: field, file: file) else { return nil }
    switch type {
    case "Sequence":
        return .sequence(try sequenceSteps(object, key: "normalizers", field: field, file: file) { try parseNormalizer($0, field: $1, file: $2) })
    case "NFC": return .nfc
    case "NFD": return .nfd
    case "NFKC": return .nfkc
    case "NFKD": return .nfkd
    case "Lowercase": return .lowercase
    case "Prepend":
        guard let prefix = object["prepend"] as? String else {
            throw PruneDistError(.format, "\(file): \(field).prepend is missing")
        }
        return .prepend(prefix)
    case "Replace":
        let step = try replaceStep(object, field: field, file: file)
        return .replace(step.pattern, with: step.content)
    case "Strip":
        return .strip(left: object["strip_left"] as? Bool ?? true, right: object["strip_right"] as? Bool ?? true)
    default:
        throw unsupported(file, field, type)
    }
}

private func parsePreTokenizer(_ value: Any?, field: String, file: String) throws -> PreTokenizer? {
    guard let (object, type) = try component(value, field: field, file: file) else { return nil }
    switch type {
    case "Sequence":
        return .sequence(try sequenceSteps(object, key: "pretokenizers", field: field, file: file) { try parsePreTokenizer($0, field: $1, file: $2) })
    case "ByteLevel":
        return .byteLevel(addPrefixSpace: object["add_prefix_space"] as? Bool ?? false,
                          useRegex: object["use_regex"] as? Bool ?? true)
    case "Split":
        let pattern: SplitPattern
        let patternObject = object["pattern"] as? [String: Any]
        if let literal = patternObject?["String"] as? String {
            pattern = .literal(Array(literal.unicodeScalars))
        } else if let regex = patternObject?["Regex"] as? String {
            do { pattern = try SplitPattern.fromRegex(regex) } catch {
                throw PruneDistError(.unsupported, "\(file): \(field).pattern.Regex \(regex) cannot be compiled: \(error)")
            }
        } else {
            throw PruneDistError(.format, "\(file): \(field).pattern must be {\"String\": …} or {\"Regex\": …}")
        }
        let behaviorName = object["behavior"] as? String ?? ""
        guard let behavior = SplitBehavior(rawValue: behaviorName) else {
            throw PruneDistError(.format, "\(file): \(field).behavior \"\(behaviorName)\" is not one of Removed, "
                                 + "Isolated, MergedWithPrevious, MergedWithNext, Contiguous")
        }
        return .split(pattern, behavior: behavior, invert: object["invert"] as? Bool ?? false)
    case "Digits":
        return .digits(individual: object["individual_digits"] as? Bool ?? false)
    case "Metaspace":
        return .metaspace(replacement: try singleScalar(object["replacement"], field: "\(field).replacement", file: file),
                          prepend: try prependScheme(object, field: field, file: file),
                          split: object["split"] as? Bool ?? true)
    case "WhitespaceSplit":
        return .whitespaceSplit
    default:
        throw unsupported(file, field, type)
    }
}

private func parseDecoder(_ value: Any?, field: String, file: String) throws -> TokenDecoder? {
    guard let (object, type) = try component(value, field: field, file: file) else { return nil }
    switch type {
    case "Sequence":
        return .sequence(try sequenceSteps(object, key: "decoders", field: field, file: file) { try parseDecoder($0, field: $1, file: $2) })
    case "ByteLevel":
        return .byteLevel
    case "Metaspace":
        return .metaspace(replacement: try singleScalar(object["replacement"], field: "\(field).replacement", file: file),
                          prepend: try prependScheme(object, field: field, file: file))
    case "Replace":
        let step = try replaceStep(object, field: field, file: file)
        return .replace(step.pattern, with: step.content)
    case "ByteFallback":
        return .byteFallback
    case "Fuse":
        return .fuse
    case "Strip":
        guard let content = object["content"] as? String, content.count == 1 else {
            throw PruneDistError(.format, "\(file): \(field).content must be a one-character string")
        }
        return .strip(content: content.first!, start: object["start"].flatMap(integerFromJSON) ?? 0,
                      stop: object["stop"].flatMap(integerFromJSON) ?? 0)
    default:
        throw unsupported(file, field, type)
    }
}
