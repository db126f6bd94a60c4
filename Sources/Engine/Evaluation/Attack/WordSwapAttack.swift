import Foundation

/// Where the substitutes of a word come from (WordNet synonyms, embedding neighbours, a hand-made table in
/// tests). The search asks only for words it may modify.
public protocol SubstitutionSource {
    /// Candidate replacements of `word`, in a fixed order, without `word` itself.
    func substitutes(for word: String) -> [String]
}

/// A fixed table: word (lowercase) → substitutes.
public struct SubstitutionTable: SubstitutionSource {
    public var table: [String: [String]]
    public init(_ table: [String: [String]]) { self.table = table }
    public func substitutes(for word: String) -> [String] { table[word.lowercased()] ?? [] }
}

/// PWWS's transformation: WordNet synonyms of the word (one word each), under each part of speech WordNet knows
/// the word in, inflected as the word is (`WordNet.synonyms(_:pos:)`), in the word's case as TextAttack's
/// recover_word_case gives it ("mr" → "mister", not WordNet's "Mister").
public struct WordNetSynonyms: SubstitutionSource {
    public let wordNet: WordNet
    public init(wordNet: WordNet) { self.wordNet = wordNet }
    public func substitutes(for word: String) -> [String] {
        var seen: Set<String> = [word]
        return wordNet.synonyms(word).map { WordNetSynonyms.inCase(of: word, $0.word) }
            .filter { $0.allSatisfy(AttackText.isWordCharacter) && seen.insert($0).inserted }
    }

    /// `synonym` in the case of `word`: all lowercase, all uppercase, or capitalised like it; as it is otherwise.
    public static func inCase(of word: String, _ synonym: String) -> String {
        if word == word.lowercased() { return synonym.lowercased() }
        if word == word.uppercased() { return synonym.uppercased() }
        if let first = word.first, first.isUppercase, word.dropFirst() == word.dropFirst().lowercased() {
            return synonym.prefix(1).uppercased() + synonym.dropFirst().lowercased()
        }
        return synonym
    }
}

/// How the search ranks words before swapping them greedily.
public enum WordImportance: String, Sendable, Codable {
    /// PWWS (Ren et al. 2019): softmax over the words' saliency (the gold label's probability drop when the word
    /// becomes an unknown token) times the largest drop one of its substitutes causes.
    case weightedSaliency = "weighted-saliency"
    /// TextFooler (Jin et al. 2020): the goal score with the word deleted.
    case deletion = "delete"
}

/// The constraints TextAttack's recipes share: no word modified twice (each position is tried once), at most
/// `maxPerturbFraction` of the words changed (⌈words × fraction⌉, TextAttack's MaxWordsPerturbed), stop words
/// never modified, at most `queryBudget` texts sent to the victim per example (the clean text included).
public struct AttackConstraints: Sendable {
    public var maxPerturbFraction: Double
    public var queryBudget: Int?
    public var stopWords: Set<String>

    public init(maxPerturbFraction: Double = 0.25, queryBudget: Int? = nil, stopWords: Set<String> = AttackStopWords.english) {
        self.maxPerturbFraction = maxPerturbFraction
        self.queryBudget = queryBudget
        self.stopWords = stopWords
    }

    public func maxPerturbed(words: Int) -> Int { Int((Double(words) * maxPerturbFraction).rounded(.up)) }

    public func isModifiable(_ word: String) -> Bool { !stopWords.contains(word.lowercased()) }
}

/// One substitution of an adversarial example.
public struct AttackSubstitution: Codable, Sendable, Equatable {
    public var index: Int
    public var original: String
    public var replacement: String
}

/// The result of attacking one example, TextAttack's three outcomes.
public struct AttackOutcome: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        /// the model was wrong on the clean text: not attacked
        case skipped
        /// the prediction flipped away from the gold label
        case succeeded
        /// no substitution within the constraints flipped it
        case failed
    }

    public var index: Int
    public var status: Status
    public var original: String
    public var adversarial: String
    public var gold: Int
    public var originalPrediction: Int
    public var adversarialPrediction: Int
    /// [labels] victim scores (label log-likelihoods) of the clean and the final text
    public var originalScores: [Double]
    public var adversarialScores: [Double]
    /// [labels] softmax of the scores
    public var originalProbabilities: [Double]
    public var adversarialProbabilities: [Double]
    public var queries: Int
    public var words: Int
    public var substitutions: [AttackSubstitution]

    public var perturbedWords: Int { substitutions.count }

    enum CodingKeys: String, CodingKey {
        case index, status, original, adversarial, gold, queries, words, substitutions
        case originalPrediction = "original_prediction", adversarialPrediction = "adversarial_prediction"
        case originalScores = "original_scores", adversarialScores = "adversarial_scores"
        case originalProbabilities = "original_probabilities", adversarialProbabilities = "adversarial_probabilities"
    }
}

/// TextAttack's GreedyWordSwapWIR search with an untargeted-classification goal: the goal score of a text is
/// 1 − p(gold | text), the attack succeeds once the prediction is not the gold label. Words are ranked once on
/// the clean text; then, in that order, each word's substitutes (within the constraints) are queried against the
/// current text and the best one is kept if it raises the goal score, until the prediction flips, the words run
/// out or the query budget is spent.
public struct WordSwapAttack {
    public var importance: WordImportance
    public var source: SubstitutionSource
    public var constraints: AttackConstraints
    /// What replaces a word when its saliency is measured (TextAttack's unk_token).
    public var unknownToken: String

    public init(importance: WordImportance, source: SubstitutionSource, constraints: AttackConstraints = AttackConstraints(), unknownToken: String = "[UNK]") {
        self.importance = importance
        self.source = source
        self.constraints = constraints
        self.unknownToken = unknownToken
    }

    /// A victim behind the query budget: texts beyond the budget are not sent (TextAttack truncates the list).
    final class Queries {
        let victim: AttackVictim
        let budget: Int?
        let gold: Int
        var count = 0

        init(victim: AttackVictim, budget: Int?, gold: Int) {
            self.victim = victim
            self.budget = budget
            self.gold = gold
        }

        var exhausted: Bool { budget.map { count >= $0 } ?? false }

        /// Texts scored before in this example (TextAttack counts a repeated query again; it is not recomputed).
        var cache: [String: [Double]] = [:]

        /// Scores of as many of `texts` as the budget allows.
        func scores(_ texts: [String]) throws -> [[Double]] {
            var texts = texts
            if let budget { texts = Array(texts.prefix(max(0, budget - count))) }
            count += texts.count
            var fresh: [String] = [], pending = Set<String>()
            for text in texts where cache[text] == nil && pending.insert(text).inserted { fresh.append(text) }
            if !fresh.isEmpty {
                for (text, scores) in zip(fresh, try victim.scores(fresh)) { cache[text] = scores }
            }
            return texts.map { cache[$0]! }
        }

        func goal(_ scores: [Double]) -> Double { 1 - AttackScores.probabilities(scores)[gold] }
    }

    public func attack(_ text: String, gold: Int, index: Int = 0, victim: AttackVictim) throws -> AttackOutcome {
        let original = AttackText(text)
        let queries = Queries(victim: victim, budget: constraints.queryBudget, gold: gold)
        let clean = try queries.scores([text])[0]
        let cleanPrediction = AttackScores.prediction(clean)
        func outcome(_ status: AttackOutcome.Status, _ final: AttackText, _ scores: [Double]) -> AttackOutcome {
            AttackOutcome(index: index, status: status, original: text, adversarial: final.text, gold: gold,
                          originalPrediction: cleanPrediction, adversarialPrediction: AttackScores.prediction(scores),
                          originalScores: clean, adversarialScores: scores,
                          originalProbabilities: AttackScores.probabilities(clean), adversarialProbabilities: AttackScores.probabilities(scores),
                          queries: queries.count, words: original.words.count,
                          substitutions: final.changedIndices(from: original).map { AttackSubstitution(index: $0, original: original.words[$0], replacement: final.words[$0]) })
        }
        if cleanPrediction != gold { return outcome(.skipped, original, clean) }

        let limit = constraints.maxPerturbed(words: original.words.count)
        // Substitutes of word i on the clean text (the first swap of every word is made from it).
        var substituteCache: [Int: [String]] = [:]
        func substitutes(_ i: Int) -> [String] {
            if let cached = substituteCache[i] { return cached }
            let word = original.words[i]
            var seen: Set<String> = [word]
            let list = source.substitutes(for: word).filter { !$0.isEmpty && $0.allSatisfy(AttackText.isWordCharacter) && seen.insert($0).inserted }
            substituteCache[i] = list
            return list
        }
        /// Candidate texts changing word i of `current`, none if the perturbation limit forbids it.
        func candidates(_ current: AttackText, _ i: Int) -> [AttackText] {
            guard current.words[i] == original.words[i] else { return [] }  // no word modified twice
            guard current.changedIndices(from: original).count + 1 <= limit else { return [] }
            return substitutes(i).map { current.replacing(i, with: $0) }
        }

        let modifiable = original.words.indices.filter { constraints.isModifiable(original.words[$0]) }
        var order: [Int] = []
        if !modifiable.isEmpty {
            let cleanGoal = queries.goal(clean)
            var importances: [Double]
            switch importance {
            case .weightedSaliency:
                let masked = modifiable.map { original.replacing($0, with: unknownToken).text }
                let maskedScores = try queries.scores(masked)
                // Texts cut off by the budget count as no change.
                let saliency = modifiable.indices.map { $0 < maskedScores.count ? queries.goal(maskedScores[$0]) - cleanGoal : 0 }
                let weights = AttackScores.probabilities(saliency)
                var drops: [Double] = []
                for i in modifiable {
                    let texts = candidates(original, i).map(\.text)
                    if texts.isEmpty || queries.exhausted { drops.append(0); continue }
                    let swapped = try queries.scores(texts)
                    drops.append(swapped.map { queries.goal($0) - cleanGoal }.max() ?? 0)
                }
                importances = zip(weights, drops).map { $0 * $1 }
            case .deletion:
                let deleted = modifiable.map { original.deleting($0) }
                let deletedScores = try queries.scores(deleted)
                importances = modifiable.indices.map { $0 < deletedScores.count ? queries.goal(deletedScores[$0]) : 0 }
            }
            // Descending importance, ties by position.
            order = modifiable.indices.sorted { (-importances[$0], $0) < (-importances[$1], $1) }.map { modifiable[$0] }
        }

        var current = original
        var currentScores = clean
        var currentGoal = queries.goal(clean)
        for i in order {
            if queries.exhausted { break }
            let texts = candidates(current, i)
            if texts.isEmpty { continue }
            let scored = try queries.scores(texts.map(\.text))
            guard !scored.isEmpty else { break }
            // The best substitute; the first of equal goal scores.
            var best = 0
            for c in scored.indices where queries.goal(scored[c]) > queries.goal(scored[best]) { best = c }
            let bestGoal = queries.goal(scored[best])
            guard bestGoal > currentGoal else { continue }
            current = texts[best]
            currentScores = scored[best]
            currentGoal = bestGoal
            if AttackScores.prediction(currentScores) != gold { return outcome(.succeeded, current, currentScores) }
        }
        return outcome(.failed, current, currentScores)
    }
}
