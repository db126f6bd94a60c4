import Foundation

/// WordNet 3.0 read from its database files (Debian's `wordnet-base`: /usr/share/wordnet, or any `dict/` folder):
/// `index.{noun,verb,adj,adv}` map a lemma to its synsets' byte offsets, `data.*` hold the synsets at those
/// offsets, `*.exc` list irregular inflections. Only what a synonym attack needs: lemmas, synonyms per part of
/// speech, and the base forms of an inflected word (WordNet's morphy).
public final class WordNet: @unchecked Sendable {
    public enum PartOfSpeech: String, CaseIterable, Sendable, Codable {
        case noun = "n", verb = "v", adjective = "a", adverb = "r"

        var fileSuffix: String {
            switch self {
            case .noun: return "noun"
            case .verb: return "verb"
            case .adjective: return "adj"
            case .adverb: return "adv"
            }
        }

        /// Morphy's suffix rules (inflected ending → base ending).
        var detachments: [(String, String)] {
            switch self {
            case .noun: return [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")]
            case .verb: return [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")]
            case .adjective: return [("er", ""), ("est", ""), ("er", "e"), ("est", "e")]
            case .adverb: return []
            }
        }
    }

    /// [pos][lemma] → synset offsets in data.pos, in the index file's order (most frequent sense first)
    private var index: [PartOfSpeech: [String: [Int]]] = [:]
    /// [pos][inflected form] → base forms
    private var exceptions: [PartOfSpeech: [String: [String]]] = [:]
    /// [pos][base form] → its irregular forms, in the exception file's order
    private var irregularForms: [PartOfSpeech: [String: [String]]] = [:]
    /// [pos]: the data file's bytes
    private var data: [PartOfSpeech: [UInt8]] = [:]
    private var synsetCache: [PartOfSpeech: [Int: [String]]] = [:]
    private let lock = NSLock()

    public let directory: URL

    /// The usual places: $WORDNET_DICT, /usr/share/wordnet (Debian), /usr/share/wordnet/dict.
    public static func defaultDirectory() -> URL? {
        var candidates: [String] = []
        if let environment = ProcessInfo.processInfo.environment["WORDNET_DICT"] { candidates.append(environment) }
        candidates += ["/usr/share/wordnet", "/usr/share/wordnet/dict", "/usr/local/share/wordnet/dict"]
        return candidates.map { URL(fileURLWithPath: $0) }
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("index.noun").path) }
    }

    /// Reads every index and exception file; data files are read whole and parsed at the offsets asked for.
    /// Parts of speech whose files are absent are left empty (a fixture may hold only some).
    public init(directory: URL) throws {
        self.directory = directory
        var found = 0
        for pos in PartOfSpeech.allCases {
            let indexURL = directory.appendingPathComponent("index.\(pos.fileSuffix)")
            let dataURL = directory.appendingPathComponent("data.\(pos.fileSuffix)")
            guard FileManager.default.fileExists(atPath: indexURL.path) else { continue }
            found += 1
            index[pos] = try WordNet.parseIndex(try WordNet.read(indexURL), file: indexURL)
            guard let bytes = FileManager.default.contents(atPath: dataURL.path) else {
                throw PruneDistError(.io, "\(dataURL.path): WordNet data file missing beside \(indexURL.lastPathComponent)")
            }
            data[pos] = [UInt8](bytes)
            let exceptionURL = directory.appendingPathComponent("\(pos.fileSuffix).exc")
            if FileManager.default.fileExists(atPath: exceptionURL.path) {
                let parsed = WordNet.parseExceptions(try WordNet.read(exceptionURL))
                exceptions[pos] = parsed
                var irregular: [String: [String]] = [:]
                for (form, bases) in parsed.sorted(by: { $0.key < $1.key }) {
                    for base in bases { irregular[base, default: []].append(form) }
                }
                irregularForms[pos] = irregular
            }
        }
        guard found > 0 else {
            throw PruneDistError(.io, "\(directory.path): no WordNet index files (index.noun, index.verb, index.adj, index.adv); install Debian's wordnet-base or pass the dict folder")
        }
    }

    private static func read(_ url: URL) throws -> String {
        do { return try String(contentsOf: url, encoding: .utf8) } catch {
            // WordNet 3.0 files are ASCII; Latin-1 never fails, so a stray byte does not stop the parse.
            do { return try String(contentsOf: url, encoding: .isoLatin1) } catch {
                throw PruneDistError(.io, "\(url.path): cannot read WordNet file (\(error.localizedDescription))")
            }
        }
    }

    /// index.pos lines: `lemma pos synset_cnt p_cnt [ptr_symbol…] sense_cnt tagsense_cnt offset…`; license lines start with spaces.
    static func parseIndex(_ text: String, file: URL) throws -> [String: [Int]] {
        var result: [String: [Int]] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.isEmpty || line.hasPrefix(" ") { continue }
            let fields = line.split(separator: " ")
            guard fields.count >= 6, let synsets = Int(fields[2]), let pointers = Int(fields[3]),
                  fields.count >= 4 + pointers + 2 + synsets else {
                throw PruneDistError(.data, "\(file.path): line \(number + 1) is not a WordNet index line")
            }
            let offsets = fields[(4 + pointers + 2)..<(4 + pointers + 2 + synsets)].compactMap { Int($0) }
            guard offsets.count == synsets else { throw PruneDistError(.data, "\(file.path): line \(number + 1): bad synset offset") }
            result[String(fields[0])] = offsets
        }
        return result
    }

    /// pos.exc lines: `inflected base [base…]`.
    static func parseExceptions(_ text: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.count >= 2 { result[fields[0], default: []] += fields.dropFirst() }
        }
        return result
    }

    /// The words of the synset at `offset` in data.pos: `offset lex_filenum ss_type w_cnt(hex) word lex_id …`;
    /// adjective markers such as `(a)`, `(p)`, `(ip)` are dropped, `_` stays (a multi-word lemma).
    public func synsetWords(pos: PartOfSpeech, offset: Int) -> [String] {
        lock.lock()
        defer { lock.unlock() }
        if let cached = synsetCache[pos]?[offset] { return cached }
        guard let bytes = data[pos], offset >= 0, offset < bytes.count else { return [] }
        var end = offset
        while end < bytes.count && bytes[end] != 0x0A { end += 1 }
        let line = String(decoding: bytes[offset..<end], as: UTF8.self)
        let fields = line.split(separator: " ")
        var words: [String] = []
        if fields.count > 4, Int(fields[0]) == offset, let count = Int(fields[3], radix: 16), fields.count >= 4 + 2 * count {
            for w in 0..<count {
                var word = String(fields[4 + 2 * w])
                if let paren = word.firstIndex(of: "("), word.hasSuffix(")") { word = String(word[..<paren]) }
                words.append(word)
            }
        }
        synsetCache[pos, default: [:]][offset] = words
        return words
    }

    /// Whether `lemma` (lowercase, `_` for spaces) is in index.pos.
    public func contains(_ lemma: String, pos: PartOfSpeech) -> Bool { index[pos]?[lemma] != nil }

    /// The base forms of `word` under `pos` that WordNet knows, as morphy finds them: the word itself and its
    /// listed exceptions if it is irregular, else the word and one step of suffix detachment.
    public func baseForms(_ word: String, pos: PartOfSpeech) -> [String] {
        let form = word.lowercased()
        var candidates = [form]
        if let irregular = exceptions[pos]?[form] {
            candidates += irregular
        } else {
            for (suffix, replacement) in pos.detachments where form.hasSuffix(suffix) && form.count > suffix.count {
                candidates.append(String(form.dropLast(suffix.count)) + replacement)
            }
        }
        var seen = Set<String>()
        return candidates.filter { contains($0, pos: pos) && seen.insert($0).inserted }
    }

    /// The parts of speech under which WordNet knows `word` (after morphy).
    public func partsOfSpeech(_ word: String) -> [PartOfSpeech] {
        PartOfSpeech.allCases.filter { !baseForms(word, pos: $0).isEmpty }
    }

    /// Synonyms of `word` under `pos`, in the word's own grammatical form, so that a swap keeps the sentence's
    /// grammar (PWWS picks synonyms of the word's part of speech in context; without a tagger, the form is what
    /// WordNet can vouch for):
    /// - the word is itself a lemma of `pos`: the other lemmas of its synsets ("charming" → "magical");
    /// - it is a regular inflection of a lemma (morphy's suffix rules): the other lemmas of the lemma's synsets,
    ///   inflected the same way, kept only when the regular inflection is unambiguous and morphy maps it back to
    ///   that lemma ("films" → "movies", "allows" → "permits", "charming" under verbs → "bewitching");
    /// - an irregular form (`pos.exc`) that is not a lemma itself gets none ("ran": no regular "-ran" form exists).
    /// Single words only (no `_` phrase), in index order (most frequent sense first), without repeats and without
    /// the word itself.
    public func synonyms(_ word: String, pos: PartOfSpeech) -> [String] {
        let form = word.lowercased()
        var result: [String] = []
        var seen: Set<String> = [form]
        func lemmas(of base: String) -> [String] {
            (index[pos]?[base] ?? []).flatMap { synsetWords(pos: pos, offset: $0) }.filter { !$0.contains("_") && $0.lowercased() != base }
        }
        if contains(form, pos: pos) {
            for lemma in lemmas(of: form) where seen.insert(lemma.lowercased()).inserted { result.append(lemma) }
            return result
        }
        if exceptions[pos]?[form] != nil { return [] }
        for (suffix, replacement) in pos.detachments where form.hasSuffix(suffix) && form.count > suffix.count {
            let base = String(form.dropLast(suffix.count)) + replacement
            guard contains(base, pos: pos), let inflection = Inflection(suffix: suffix) else { continue }
            for lemma in lemmas(of: base) {
                guard let inflected = inflect(lemma.lowercased(), inflection, pos: pos),
                      baseForms(inflected, pos: pos).contains(lemma.lowercased()) else { continue }
                if seen.insert(inflected).inserted { result.append(inflected) }
            }
        }
        return result
    }

    /// `lemma` inflected: an irregular form WordNet lists with the inflection's ending ("stopped", "knives",
    /// "better"), none when the lemma's listed irregular forms belong to this inflection but lack its ending
    /// ("shoot" has "shot", so no "-ed" form; "child" has "children"), else the regular spelling.
    func inflect(_ lemma: String, _ inflection: Inflection, pos: PartOfSpeech) -> String? {
        let irregular = irregularForms[pos]?[lemma] ?? []
        if let listed = irregular.first(where: { $0.hasSuffix(inflection.ending) }) { return listed }
        // Irregular verbs keep regular "-s" and "-ing" forms ("shoots", "shooting").
        let regularDespiteIrregulars = pos == .verb && (inflection == .plural || inflection == .progressive)
        if !irregular.isEmpty && !regularDespiteIrregulars { return nil }
        return inflection.apply(to: lemma)
    }

    /// A regular English inflection, named by the ending morphy detaches.
    public enum Inflection: Sendable {
        case plural, past, progressive, comparative, superlative

        public init?(suffix: String) {
            switch suffix {
            case "s", "es", "ses", "xes", "zes", "ches", "shes", "ies": self = .plural
            case "ed": self = .past
            case "ing": self = .progressive
            case "er": self = .comparative
            case "est": self = .superlative
            default: return nil  // "ves" → "f", "men" → "man": irregular stems, not produced for another word
            }
        }

        var ending: String {
            switch self {
            case .plural: return "s"
            case .past: return "ed"
            case .progressive: return "ing"
            case .comparative: return "er"
            case .superlative: return "est"
            }
        }

        /// The inflected form of `lemma`, or nil where spelling depends on what the rules cannot see: a final
        /// consonant–vowel–consonant may double ("stop" → "stopped", "visit" → "visited"), "-o" plurals vary,
        /// "-ie" verbs change ("die" → "dying").
        public func apply(to lemma: String) -> String? {
            let letters = Array(lemma)
            guard letters.count >= 2, letters.allSatisfy({ $0.isLetter || $0 == "-" }) else { return nil }
            let vowels: Set<Character> = ["a", "e", "i", "o", "u"]
            let last = letters[letters.count - 1], beforeLast = letters[letters.count - 2]
            let consonantY = last == "y" && !vowels.contains(beforeLast)
            let doubling = letters.count >= 3 && !vowels.contains(last) && !["w", "x", "y"].contains(last)
                && vowels.contains(beforeLast) && !vowels.contains(letters[letters.count - 3])
            switch self {
            case .plural:
                if ["s", "x", "z"].contains(last) || lemma.hasSuffix("ch") || lemma.hasSuffix("sh") { return lemma + "es" }
                if consonantY { return String(lemma.dropLast()) + "ies" }
                if last == "o" { return nil }
                return lemma + "s"
            case .past, .comparative, .superlative:
                if last == "e" { return lemma + ending.dropFirst() }
                if consonantY { return String(lemma.dropLast()) + "i" + ending }
                return doubling ? nil : lemma + ending
            case .progressive:
                if lemma.hasSuffix("ie") { return nil }
                if lemma.hasSuffix("ee") || lemma.hasSuffix("ye") || lemma.hasSuffix("oe") { return lemma + "ing" }
                if last == "e" { return String(lemma.dropLast()) + "ing" }
                return doubling ? nil : lemma + "ing"
            }
        }
    }

    /// Synonyms under every part of speech, each with the part of speech it shares with the word.
    public func synonyms(_ word: String) -> [(word: String, pos: PartOfSpeech)] {
        var result: [(String, PartOfSpeech)] = []
        var seen = Set<String>()
        for pos in PartOfSpeech.allCases {
            for synonym in synonyms(word, pos: pos) where seen.insert(synonym.lowercased()).inserted {
                result.append((synonym, pos))
            }
        }
        return result
    }
}
