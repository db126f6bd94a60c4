import Foundation

/// One multiple-choice question: a context per choice (WinoGrande's differ, the others share one), the text
/// scored after it, and the index of the right choice. Follows lm-evaluation-harness's task definitions.
public struct ZeroShotDocument: Sendable, Equatable {
    /// [choices]: what the model reads before the scored text
    public var contexts: [String]
    /// [choices]: the scored text, target delimiter (" ") included
    public var continuations: [String]
    /// [choices]: lengths acc_norm divides by (the choice text's characters, as the harness counts them)
    public var normalisationLengths: [Int]
    public var gold: Int

    public init(contexts: [String], continuations: [String], normalisationLengths: [Int], gold: Int) {
        self.contexts = contexts
        self.continuations = continuations
        self.normalisationLengths = normalisationLengths
        self.gold = gold
    }
}

/// The zero-shot tasks of the LLM-Pruner/AdaPruner tables (plus SST-2), read from JSONL files.
public enum ZeroShotTask: String, CaseIterable, Sendable {
    case boolq, piqa, hellaswag, winogrande, arcEasy = "arc_easy", arcChallenge = "arc_challenge", openbookqa, sst2

    /// File name inside a tasks folder (the Hugging Face dataset's split, one JSON document per line).
    public var fileName: String {
        switch self {
        case .boolq: return "boolq.validation.jsonl"
        case .piqa: return "piqa.validation.jsonl"
        case .hellaswag: return "hellaswag.validation.jsonl"
        case .winogrande: return "winogrande_xl.validation.jsonl"
        case .arcEasy: return "arc_easy.test.jsonl"
        case .arcChallenge: return "arc_challenge.test.jsonl"
        case .openbookqa: return "openbookqa.test.jsonl"
        case .sst2: return "sst2.validation.jsonl"
        }
    }

    /// Whether acc_norm is reported (the harness reports it where choices differ in length meaningfully).
    public var hasNormalisedAccuracy: Bool {
        switch self {
        case .piqa, .hellaswag, .arcEasy, .arcChallenge, .openbookqa: return true
        case .boolq, .winogrande, .sst2: return false
        }
    }

    /// The first `limit` documents of the task's file.
    public func documents(url: URL, limit: Int? = nil) throws -> [ZeroShotDocument] {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read task file (\(error.localizedDescription))")
        }
        var documents: [ZeroShotDocument] = []
        // Blank lines are skipped but still counted, so errors name the line an editor shows.
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let limit, documents.count >= limit { break }
            if line.allSatisfy(\.isWhitespace) { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw PruneDistError(.data, "\(url.path): line \(index + 1) is not a JSON object (task \(rawValue))")
            }
            do {
                documents.append(try document(object))
            } catch let error as FieldError {
                throw PruneDistError(.data, "\(url.path): line \(index + 1): \(error.message) (task \(rawValue))")
            }
        }
        guard !documents.isEmpty else {
            throw PruneDistError(.data, "\(url.path): line 1: the file holds no documents (empty or blank; task \(rawValue) expects one JSON object per line)")
        }
        return documents
    }

    private struct FieldError: Error { let message: String }

    private func string(_ object: [String: Any], _ key: String) throws -> String {
        guard let raw = object[key] else { throw FieldError(message: "field \"\(key)\" missing") }
        guard let value = raw as? String else { throw FieldError(message: "field \"\(key)\" is \(ZeroShotTask.describe(raw)), expected a string") }
        return value
    }

    private func integer(_ object: [String: Any], _ key: String) throws -> Int {
        guard let raw = object[key] else { throw FieldError(message: "field \"\(key)\" missing") }
        // JSON true/false arrive as NSNumber and would otherwise read as 1/0.
        if let number = raw as? NSNumber, !ZeroShotTask.isBoolean(number), let value = raw as? Int { return value }
        if let value = raw as? String, let number = Int(value) { return number }
        throw FieldError(message: "field \"\(key)\" is \(ZeroShotTask.describe(raw)), expected an integer")
    }

    private func boolean(_ object: [String: Any], _ key: String) throws -> Bool {
        guard let raw = object[key] else { throw FieldError(message: "field \"\(key)\" missing") }
        guard let number = raw as? NSNumber, ZeroShotTask.isBoolean(number) else {
            throw FieldError(message: "field \"\(key)\" is \(ZeroShotTask.describe(raw)), expected true or false")
        }
        return number.boolValue
    }

    /// JSON true/false: Foundation gives them the "c" (char) objCType; JSON numbers are "i", "q" or "d".
    static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }

    /// A JSON value's kind and text, for error messages.
    static func describe(_ value: Any) -> String {
        if let number = value as? NSNumber {
            return isBoolean(number) ? "the boolean \(number.boolValue)" : "the number \(number)"
        }
        if let string = value as? String { return "the string \"\(string.prefix(40))\"" }
        if value is NSNull { return "null" }
        if value is [Any] { return "a list" }
        return "an object"
    }

    private func strings(_ object: [String: Any], _ key: String) throws -> [String] {
        guard let value = object[key] as? [String], !value.isEmpty else { throw FieldError(message: "field \"\(key)\" missing or not a list of strings") }
        return value
    }

    /// Same context for every choice, " " + choice scored.
    private func shared(_ context: String, _ choices: [String], gold: Int) throws -> ZeroShotDocument {
        guard choices.indices.contains(gold) else { throw FieldError(message: "answer index \(gold) outside \(choices.count) choices") }
        return ZeroShotDocument(contexts: choices.map { _ in context }, continuations: choices.map { " " + $0 },
                                normalisationLengths: choices.map { $0.unicodeScalars.count }, gold: gold)
    }

    private func document(_ o: [String: Any]) throws -> ZeroShotDocument {
        switch self {
        case .boolq:
            let answer = try boolean(o, "answer")
            return try shared("\(try string(o, "passage"))\nQuestion: \(try string(o, "question"))?\nAnswer:", ["no", "yes"], gold: answer ? 1 : 0)
        case .piqa:
            return try shared("Question: \(try string(o, "goal"))\nAnswer:", [try string(o, "sol1"), try string(o, "sol2")], gold: try integer(o, "label"))
        case .hellaswag:
            let ctxB = try string(o, "ctx_b")
            let context = try string(o, "ctx_a") + " " + ctxB.prefix(1).uppercased() + ctxB.dropFirst().lowercased()
            let query = ZeroShotTask.hellaswagClean(try string(o, "activity_label") + ": " + context)
            return try shared(query, try strings(o, "endings").map(ZeroShotTask.hellaswagClean), gold: try integer(o, "label"))
        case .winogrande:
            // Partial scoring: each option fills the blank in the context; the text after the blank is scored.
            let sentence = try string(o, "sentence")
            guard let blank = sentence.firstIndex(of: "_") else { throw FieldError(message: "sentence has no \"_\" blank") }
            let prefix = String(sentence[..<blank])
            let target = String(sentence[sentence.index(after: blank)...]).trimmingCharacters(in: .whitespaces)
            let options = [try string(o, "option1"), try string(o, "option2")]
            let answer = try integer(o, "answer")
            guard answer == 1 || answer == 2 else { throw FieldError(message: "answer \(answer) is not 1 or 2") }
            return ZeroShotDocument(contexts: options.map { prefix + $0 }, continuations: options.map { _ in " " + target },
                                    normalisationLengths: options.map { _ in target.unicodeScalars.count }, gold: answer - 1)
        case .arcEasy, .arcChallenge:
            return try shared(try string(o, "query"), try strings(o, "choices"), gold: try integer(o, "gold"))
        case .openbookqa:
            // The harness reads the question stem alone, without the "Question: … Answer:" frame.
            return try shared(try string(o, "question"), try strings(o, "choices"), gold: try integer(o, "gold"))
        case .sst2:
            return try shared("\(try string(o, "sentence"))\nQuestion: Is this sentence positive or negative?\nAnswer:",
                              ["negative", "positive"], gold: try integer(o, "label"))
        }
    }

    /// HellaSwag's cleaning: WikiHow "[title]" markers become sentence breaks, other bracketed artefacts go.
    public static func hellaswagClean(_ text: String) -> String {
        var text = text.trimmingCharacters(in: .whitespacesAndNewlines)  // Python's str.strip()
        text = text.replacingOccurrences(of: " [title]", with: ". ")
        text = text.replacingOccurrences(of: #"\[.*?\]"#, with: "", options: .regularExpression)
        text = text.replacingOccurrences(of: "  ", with: " ")
        return text
    }
}

/// A (context, continuation) pair as token ids, split the way the harness splits it: trailing spaces of the
/// context move to the continuation, the pair is encoded whole and the context's tokens are cut off its front.
public struct ScoredSequence: Sendable, Equatable {
    /// [tokens]: context then continuation
    public var ids: [Int]
    /// index of the continuation's first token in `ids`
    public var continuationStart: Int

    public init(ids: [Int], continuationStart: Int) {
        self.ids = ids
        self.continuationStart = continuationStart
    }

    /// The harness's `_encode_pair`: trailing whitespace of the context (Python's `rstrip()`) joins the
    /// continuation; the continuation's tokens are those of `encode(context + continuation)` past the
    /// context's own token count, and the model reads `encode(context)` followed by them (which differs from
    /// the whole encoding when a token would straddle the boundary).
    public init(context: String, continuation: String, encode: (String) -> [Int]) {
        var context = Array(context.unicodeScalars), continuation = continuation
        var kept = context.count
        while kept > 0 && context[kept - 1].properties.isWhitespace { kept -= 1 }
        if kept < context.count {
            var moved = String.UnicodeScalarView()
            moved.append(contentsOf: context[kept...])
            continuation = String(moved) + continuation
            context.removeSubrange(kept...)
        }
        var contextView = String.UnicodeScalarView()
        contextView.append(contentsOf: context)
        let contextText = String(contextView)
        let whole = encode(contextText + continuation)
        let contextIDs = encode(contextText)
        let continuationIDs = whole.count > contextIDs.count ? Array(whole[contextIDs.count...]) : []
        ids = contextIDs + continuationIDs
        continuationStart = contextIDs.count
    }
}
