import Foundation

/// TextFooler's transformation without counter-fitted vectors (not available offline): the nearest neighbours of
/// a word among the victim's own input embeddings, restricted to whole-word tokens (a token that decodes to
/// " word", lowercase letters, and is what the tokenizer makes of " word"), at least `minCosine` similar, the
/// `maxCandidates` closest first; a neighbour must share a WordNet part of speech with the word (nouns and verbs
/// may swap, as TextAttack's PartOfSpeech(allow_verb_noun_swap) allows). A word that is not one whole-word token,
/// or that WordNet does not know, gets no substitutes.
public final class EmbeddingNeighbours: SubstitutionSource {
    let tokenizer: Tokenizer
    let wordNet: WordNet?
    public let minCosine: Double
    public let maxCandidates: Int
    /// whole-word tokens: id, word, unit-length embedding row
    let ids: [Int]
    let words: [String]
    let rows: [Float]
    let hidden: Int
    private var cache: [String: [String]] = [:]
    private var idOfWord: [String: Int] = [:]

    public init(embedding: LlamaEmbedding, tokenizer: Tokenizer, wordNet: WordNet?, minCosine: Double = 0.5, maxCandidates: Int = 50) {
        self.tokenizer = tokenizer
        self.wordNet = wordNet
        self.minCosine = minCosine
        self.maxCandidates = maxCandidates
        hidden = embedding.hiddenSize
        var ids: [Int] = [], words: [String] = [], rows: [Float] = []
        for id in 0..<min(embedding.vocabSize, tokenizer.vocabularySize) {
            let piece = tokenizer.decode([id])
            guard piece.hasPrefix(" ") else { continue }
            let word = String(piece.dropFirst())
            guard word.count >= 2, word.unicodeScalars.allSatisfy({ $0.value >= 97 && $0.value <= 122 }) else { continue }
            guard tokenizer.encode(piece) == [id] else { continue }
            var norm: Float = 0
            for k in 0..<hidden { norm += embedding.table[id * hidden + k] * embedding.table[id * hidden + k] }
            norm = norm.squareRoot()
            guard norm > 0 else { continue }
            ids.append(id)
            words.append(word)
            for k in 0..<hidden { rows.append(embedding.table[id * hidden + k] / norm) }
        }
        self.ids = ids
        self.words = words
        self.rows = rows
        for (i, word) in words.enumerated() { idOfWord[word] = i }
    }

    /// How many whole-word tokens the neighbours are drawn from.
    public var vocabularyCount: Int { words.count }

    func partsOfSpeech(_ word: String) -> Set<WordNet.PartOfSpeech> {
        guard let wordNet else { return Set(WordNet.PartOfSpeech.allCases) }
        var set = Set(wordNet.partsOfSpeech(word))
        if set.contains(.noun) || set.contains(.verb) { set.formUnion([.noun, .verb]) }
        return set
    }

    /// The neighbours and their cosine similarity, closest first.
    public func neighbours(of word: String) -> [(word: String, cosine: Double)] {
        guard let row = idOfWord[word.lowercased()] else { return [] }
        var similarities: [(Int, Double)] = []
        rows.withUnsafeBufferPointer { r in
            let base = r.baseAddress!
            for other in words.indices where other != row {
                var dot: Float = 0
                for k in 0..<hidden { dot += base[row * hidden + k] * base[other * hidden + k] }
                if Double(dot) >= minCosine { similarities.append((other, Double(dot))) }
            }
        }
        similarities.sort { ($0.1, -$0.0) > ($1.1, -$1.0) }
        return similarities.map { (words[$0.0], $0.1) }
    }

    public func substitutes(for word: String) -> [String] {
        let key = word.lowercased()
        if let cached = cache[key] { return cached }
        let own = partsOfSpeech(key)
        var result: [String] = []
        if !own.isEmpty {
            for (candidate, _) in neighbours(of: key) {
                if result.count >= maxCandidates { break }
                if !own.isDisjoint(with: partsOfSpeech(candidate)) { result.append(candidate) }
            }
        }
        cache[key] = result
        return result
    }
}
