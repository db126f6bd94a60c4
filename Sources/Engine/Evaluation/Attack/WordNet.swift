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
                exceptions[pos] = WordNet.parseExceptions(try WordNet.read(exceptionURL))
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

    /// Synonyms of `word` under `pos`: every other lemma of every synset of its base forms, single words only
    /// (no `_` phrase), in index order (most frequent sense first), without repeats and without the word itself.
    public func synonyms(_ word: String, pos: PartOfSpeech) -> [String] {
        let lower = word.lowercased()
        var result: [String] = []
        var seen: Set<String> = [lower]
        for base in baseForms(word, pos: pos) {
            for offset in index[pos]?[base] ?? [] {
                for lemma in synsetWords(pos: pos, offset: offset) where !lemma.contains("_") {
                    if seen.insert(lemma.lowercased()).inserted { result.append(lemma) }
                }
            }
        }
        return result
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
