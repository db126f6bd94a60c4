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

    /// File name inside a tasks folder (../shared/data/tasks layout).
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
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if let limit, documents.count >= limit { break }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw PruneDistError(.data, "\(url.path): line \(index + 1) is not a JSON object")
            }
            do {
                documents.append(try document(object))
            } catch let error as FieldError {
                throw PruneDistError(.data, "\(url.path): line \(index + 1): \(error.message) (task \(rawValue))")
            }
        }
        guard !documents.isEmpty else { throw PruneDistError(.data, "\(url.path): no documents") }
        return documents
    }

    private struct FieldError: Error { let message: String }

    private func string(_ object: [String: Any], _ key: String) throws -> String {
        guard let value = object[key] as? String else { throw FieldError(message: "field \"\(key)\" missing or not a string") }
        return value
    }

    private func integer(_ object: [String: Any], _ key: String) throws -> Int {
        if let value = object[key] as? Int { return value }
        if let value = object[key] as? String, let number = Int(value) { return number }
        throw FieldError(message: "field \"\(key)\" missing or not an integer")
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
            guard let answer = o["answer"] as? Bool else { throw FieldError(message: "field \"answer\" missing or not a boolean") }
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
        var text = text.trimmingCharacters(in: .whitespaces)
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

    public init(context: String, continuation: String, encode: (String) -> [Int]) {
        var context = context, continuation = continuation
        let spaces = context.count - String(context.reversed().drop { $0 == " " }).count
        if spaces > 0 {
            continuation = String(context.suffix(spaces)) + continuation
            context = String(context.dropLast(spaces))
        }
        let whole = encode(context + continuation)
        let contextIDs = encode(context)
        ids = whole
        continuationStart = min(contextIDs.count, whole.count - 1)
    }
}
