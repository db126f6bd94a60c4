import Engine
import Foundation
import TestSupport
import XCTest

/// A scripted classifier: label scores from a closure, every text it is asked about recorded.
private final class ScriptedVictim: AttackVictim {
    let labelCount = 2
    let rule: (String) -> [Double]
    var asked: [String] = []
    init(_ rule: @escaping (String) -> [Double]) { self.rule = rule }
    func scores(_ texts: [String]) throws -> [[Double]] {
        asked += texts
        return texts.map(rule)
    }
}

final class AttackTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("attack")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    // MARK: WordNet

    /// A hand-made excerpt in the database's format: license lines, hex word counts, adjective markers, phrases,
    /// offsets that are byte offsets, exceptions.
    private func wordNetExcerpt() throws -> URL {
        let folder = scratch.appendingPathComponent("dict")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        func writeData(_ pos: String, _ synsets: [[String]]) throws -> [Int] {
            var text = "  1 This is a license line  \n  2 another one  \n"
            var offsets: [Int] = []
            for words in synsets {
                let offset = text.utf8.count
                offsets.append(offset)
                let wordFields = words.map { "\($0) 0" }.joined(separator: " ")
                text += String(format: "%08d 00 %@ %02x ", offset, pos, words.count) + wordFields + " 000 | a gloss; \"an example\"  \n"
            }
            try Data(text.utf8).write(to: folder.appendingPathComponent("data.\(pos == "a" ? "adj" : pos == "n" ? "noun" : "verb")"))
            return offsets
        }
        let adj = try writeData("a", [["good", "full(p)", "estimable"], ["good", "well_behaved", "goodish(a)"], ["bad", "big"]])
        let noun = try writeData("n", [["film", "movie", "picture", "moving_picture"], ["film", "celluloid"]])
        let verb = try writeData("v", [["film", "shoot", "take", "stop"]])
        func line(_ lemma: String, _ pos: String, _ offsets: [Int]) -> String {
            "\(lemma) \(pos) \(offsets.count) 2 @ ~ \(offsets.count) 0 " + offsets.map { String(format: "%08d", $0) }.joined(separator: " ") + "  "
        }
        let license = "  1 license\n"
        try Data((license + [line("bad", "a", [adj[2]]), line("good", "a", [adj[0], adj[1]]), line("big", "a", [adj[2]])].joined(separator: "\n") + "\n").utf8)
            .write(to: folder.appendingPathComponent("index.adj"))
        // "celluloid" is left out of the index: morphy cannot map "celluloids" back, so it is not offered.
        try Data((license + [line("film", "n", noun), line("movie", "n", [noun[0]]), line("picture", "n", [noun[0]])].joined(separator: "\n") + "\n").utf8)
            .write(to: folder.appendingPathComponent("index.noun"))
        try Data((license + ["film", "shoot", "stop", "take"].map { line($0, "v", verb) }.joined(separator: "\n") + "\n").utf8)
            .write(to: folder.appendingPathComponent("index.verb"))
        try Data("better good well\nworse bad\n".utf8).write(to: folder.appendingPathComponent("adj.exc"))
        try Data("shot shoot\nstopped stop\ntaken take\ntook take\n".utf8).write(to: folder.appendingPathComponent("verb.exc"))
        return folder
    }

    func testWordNetParserReadsSynonymsByPartOfSpeechWithMorphy() throws {
        let wordNet = try WordNet(directory: try wordNetExcerpt())
        XCTAssertEqual(wordNet.synonyms("good", pos: .adjective), ["full", "estimable", "goodish"], "markers dropped, phrases skipped, sense order")
        XCTAssertEqual(wordNet.synonyms("film", pos: .noun), ["movie", "picture", "celluloid"])
        XCTAssertEqual(wordNet.synonyms("film", pos: .verb), ["shoot", "take", "stop"])
        XCTAssertEqual(wordNet.synonyms("films", pos: .noun), ["movies", "pictures"], "plural in, plurals out; film itself is not a synonym")
        XCTAssertEqual(wordNet.synonyms("films", pos: .verb), ["shoots", "takes", "stops"], "third person: irregular verbs keep a regular -s")
        XCTAssertEqual(wordNet.synonyms("filming", pos: .verb), ["shooting", "taking"], "e dropped; stop → stopping is not listed and would double")
        XCTAssertEqual(wordNet.synonyms("filmed", pos: .verb), ["stopped"], "shot and took/taken are not -ed forms; stopped is listed")
        XCTAssertEqual(wordNet.synonyms("better", pos: .adjective), [], "an irregular form that is no lemma: no synonym of the same form")
        XCTAssertEqual(WordNet.Inflection.plural.apply(to: "church"), "churches")
        XCTAssertEqual(WordNet.Inflection.plural.apply(to: "story"), "stories")
        XCTAssertEqual(WordNet.Inflection.past.apply(to: "agree"), "agreed")
        XCTAssertEqual(WordNet.Inflection.past.apply(to: "carry"), "carried")
        XCTAssertEqual(WordNet.Inflection.past.apply(to: "visit"), nil, "visited or visitted: stress decides")
        XCTAssertEqual(WordNet.Inflection.progressive.apply(to: "see"), "seeing")
        XCTAssertEqual(WordNet.Inflection.comparative.apply(to: "happy"), "happier")
        XCTAssertEqual(wordNet.baseForms("worse", pos: .adjective), ["bad"])
        XCTAssertEqual(wordNet.partsOfSpeech("film"), [.noun, .verb])
        XCTAssertEqual(wordNet.synonyms("unknown", pos: .noun), [])
        let all = wordNet.synonyms("film")
        XCTAssertEqual(all.map(\.word), ["movie", "picture", "celluloid", "shoot", "take", "stop"])
        XCTAssertEqual(all.map(\.pos), [.noun, .noun, .noun, .verb, .verb, .verb])
        XCTAssertThrowsError(try WordNet(directory: scratch.appendingPathComponent("nowhere")))
    }

    /// Debian's wordnet-base (scripts/install-packages.sh) parsed whole.
    func testInstalledWordNet30() throws {
        let directory = try XCTUnwrap(WordNet.defaultDirectory(), "install wordnet-base (scripts/install-packages.sh)")
        let wordNet = try WordNet(directory: directory)
        XCTAssertTrue(wordNet.synonyms("movie", pos: .noun).contains("film"))
        XCTAssertTrue(wordNet.synonyms("movies", pos: .noun).contains("films"))
        XCTAssertFalse(wordNet.synonyms("movies", pos: .noun).contains("film"))
        XCTAssertTrue(wordNet.synonyms("charming", pos: .verb).contains("bewitching"))
        XCTAssertFalse(wordNet.synonyms("charming").contains { $0.word == "bewitch" || $0.word == "capture" })
        XCTAssertTrue(wordNet.synonyms("allows", pos: .verb).contains("permits"))
        XCTAssertEqual(wordNet.synonyms("ran", pos: .verb), [])
        XCTAssertTrue(wordNet.synonyms("good", pos: .adjective).contains("beneficial"))
        XCTAssertTrue(wordNet.synonyms("charming", pos: .adjective).contains("magical"))
        XCTAssertEqual(wordNet.baseForms("ran", pos: .verb), ["run"])
        let source = WordNetSynonyms(wordNet: wordNet)
        XCTAssertTrue(wordNet.synonyms("mr", pos: .noun).contains("Mister"), "WordNet's own case")
        XCTAssertTrue(source.substitutes(for: "mr").contains("mister"), "the word's case, as TextAttack recovers it")
        XCTAssertTrue(source.substitutes(for: "Movie").contains("Film"))
        XCTAssertTrue(source.substitutes(for: "MOVIE").contains("FILM"))
        XCTAssertFalse(source.substitutes(for: "mr").contains { $0 != $0.lowercased() })
        XCTAssertFalse(wordNet.synonyms("the").contains { $0.word.contains("_") })
    }

    // MARK: text

    func testAttackTextKeepsEverythingButTheSwappedWord() {
        let text = AttackText("it 's a charming , well-made journey . ")
        XCTAssertEqual(text.words, ["it", "'s", "a", "charming", "well-made", "journey"])
        XCTAssertEqual(text.text, "it 's a charming , well-made journey . ")
        XCTAssertEqual(text.replacing(3, with: "magic").text, "it 's a magic , well-made journey . ")
        XCTAssertEqual(text.deleting(3), "it 's a , well-made journey . ")
        XCTAssertEqual(text.deleting(0), "'s a charming , well-made journey . ")
        XCTAssertEqual(AttackText("good film").deleting(1), "good")
        let dashes = AttackText("a film -- sadly ' dull")
        XCTAssertEqual(dashes.words, ["a", "film", "sadly", "dull"])
        XCTAssertEqual(dashes.replacing(2, with: "alas").text, "a film -- alas ' dull")
        XCTAssertEqual(text.replacing(5, with: "trip").changedIndices(from: text), [5])
    }

    // MARK: search on scripted victims

    /// Label 1 (gold) unless the text holds a "bad" word; each holds some weight.
    private func sentimentVictim() -> ScriptedVictim {
        ScriptedVictim { text in
            let words = AttackText(text).words
            var negative = 0.0
            for w in words {
                if w == "dreadful" { negative += 3 }
                if w == "dull" { negative += 1.5 }
                if w == "poor" { negative += 1 }
                if w == "[UNK]" { negative += 0.5 }
            }
            return [negative, 2]
        }
    }

    func testPWWSFlipsAScriptedVictimAndCountsEveryQuery() throws {
        let victim = sentimentVictim()
        let table = SubstitutionTable(["good": ["fine", "dreadful"], "film": ["movie", "picture"], "the": ["dull"]])
        let attack = WordSwapAttack(importance: .weightedSaliency, source: table, constraints: AttackConstraints(maxPerturbFraction: 0.25))
        let outcome = try attack.attack("the good film was here", gold: 1, victim: victim)
        XCTAssertEqual(outcome.status, .succeeded)
        XCTAssertEqual(outcome.adversarial, "the dreadful film was here")
        XCTAssertEqual(outcome.substitutions.map(\.index), [1])
        XCTAssertEqual(outcome.substitutions.map(\.replacement), ["dreadful"])
        XCTAssertEqual(outcome.adversarialPrediction, 0)
        XCTAssertEqual(Set(victim.asked).count, victim.asked.count, "a text is computed once per example")
        XCTAssertGreaterThan(outcome.queries, victim.asked.count, "repeated texts still count as queries, as in TextAttack")
        XCTAssertGreaterThan(victim.asked.count, 1)
        XCTAssertFalse(victim.asked.contains { $0.contains("dull") }, "stop word \"the\" is never replaced")
        XCTAssertEqual(AttackSummary(outcomes: [outcome]).attackSuccessRate, 1)
        // The same through the deletion ranking (TextFooler's search).
        let fooler = WordSwapAttack(importance: .deletion, source: table)
        XCTAssertEqual(try fooler.attack("the good film was here", gold: 1, victim: sentimentVictim()).adversarial, "the dreadful film was here")
    }

    func testConstantClassifierGivesAsrZero() throws {
        let victim = ScriptedVictim { _ in [0, 1] }
        let table = SubstitutionTable(["good": ["fine", "dreadful"], "film": ["movie"]])
        let attack = WordSwapAttack(importance: .weightedSaliency, source: table)
        let outcomes = try ["a good film", "good good film", "film"].enumerated().map { try attack.attack($0.element, gold: 1, index: $0.offset, victim: victim) }
            + [try attack.attack("a good film", gold: 0, index: 3, victim: victim)]
        let summary = AttackSummary(outcomes: outcomes)
        XCTAssertEqual(summary.attackSuccessRate, 0)
        XCTAssertEqual(summary.skipped, 1)
        XCTAssertEqual(summary.cleanAccuracy, 0.75)
        XCTAssertEqual(summary.accuracyUnderAttack, 0.75)
        XCTAssertEqual(outcomes[3].queries, 1, "a wrong clean prediction is skipped after one query")
    }

    func testPerturbationLimitAndQueryBudgetAreKept() throws {
        // Each of "good" and "fine" replaced lowers p(gold); only both replaced flip it.
        let rule: (String) -> [Double] = { text in
            let present = AttackText(text).words.filter { $0 == "good" || $0 == "fine" }.count
            return [1.5 - 0.6 * Double(present), 1]
        }
        let table = SubstitutionTable(["good": ["nice"], "fine": ["okay"]])
        let text = "good and fine and so on for a while here"  // 10 words
        let tight = WordSwapAttack(importance: .deletion, source: table, constraints: AttackConstraints(maxPerturbFraction: 0.1))
        XCTAssertEqual(try tight.attack(text, gold: 1, victim: ScriptedVictim(rule)).status, .failed, "⌈10 × 0.1⌉ = 1 word")
        let loose = WordSwapAttack(importance: .deletion, source: table, constraints: AttackConstraints(maxPerturbFraction: 0.2))
        let outcome = try loose.attack(text, gold: 1, victim: ScriptedVictim(rule))
        XCTAssertEqual(outcome.status, .succeeded)
        XCTAssertEqual(outcome.adversarial, "nice and okay and so on for a while here")
        for budget in [1, 2, 4] {
            let victim = ScriptedVictim(rule)
            let limited = WordSwapAttack(importance: .weightedSaliency, source: table, constraints: AttackConstraints(maxPerturbFraction: 1, queryBudget: budget))
            let result = try limited.attack(text, gold: 1, victim: victim)
            XCTAssertLessThanOrEqual(victim.asked.count, budget)
            XCTAssertLessThanOrEqual(result.queries, budget)
            XCTAssertGreaterThanOrEqual(result.queries, victim.asked.count)
        }
    }

    // MARK: the language model as victim (tiny-llama)

    private func tinyVictim(shots: [(sentence: String, label: Int)] = []) throws -> (LanguageModelClassifier, URL) {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let checkpoint = try Checkpoint(directory: model)
        let tokenizer = try Tokenizer.load(modelDirectory: model)
        return (try LanguageModelClassifier(checkpoint: checkpoint, tokenizer: tokenizer,
                                            prompt: ClassificationPrompt(demonstrations: shots), batchTokens: 256), model)
    }

    /// Brute force over every combination of substitutions within the limit: the flipping texts with the fewest
    /// substitutions, best goal score first.
    private func bruteForce(_ text: String, gold: Int, table: [String: [String]], limit: Int, victim: AttackVictim) throws -> [(text: String, goal: Double, changes: Int)] {
        let original = AttackText(text)
        var texts: [(AttackText, Int)] = [(original, 0)]
        for i in original.words.indices {
            guard let options = table[original.words[i]] else { continue }
            texts += texts.filter { $0.1 < limit }.flatMap { base in options.map { (base.0.replacing(i, with: $0), base.1 + 1) } }
        }
        let scores = try victim.scores(texts.map(\.0.text))
        var flips: [(text: String, goal: Double, changes: Int)] = []
        for ((candidate, changes), s) in zip(texts, scores) where AttackScores.prediction(s) != gold {
            flips.append((candidate.text, 1 - AttackScores.probabilities(s)[gold], changes))
        }
        return flips.sorted { ($0.changes, -$0.goal) < ($1.changes, -$1.goal) }
    }

    /// With one attackable word, greedy search is exhaustive: its result must be brute force's best flip (or no
    /// flip when brute force finds none). Over several sentences and words both outcomes must occur.
    func testAttackOnTinyLlamaEqualsBruteForce() throws {
        let (victim, _) = try tinyVictim()
        let sentences = ["the film is a charming and warm tale", "dull plot but the acting is strong", "a sad and boring mess of a movie",
                         "bright funny clever and moving", "the story falls flat in the end"]
        let pool = ["lovely", "awful", "grim", "sunny", "bleak", "great", "lousy", "fine", "tedious", "superb", "zany", "quiet"]
        var flips = 0, holds = 0
        for (s, sentence) in sentences.enumerated() {
            let clean = try victim.scores([sentence])[0]
            let gold = AttackScores.prediction(clean)  // so the example is attacked
            let words = AttackText(sentence).words
            for (w, word) in words.enumerated() where AttackStopWords.english.contains(word) == false {
                let options = (0..<4).map { pool[(s * 5 + w * 3 + $0 * 7) % pool.count] }.filter { $0 != word }
                let table = [word: options]
                for importance in [WordImportance.weightedSaliency, .deletion] {
                    let attack = WordSwapAttack(importance: importance, source: SubstitutionTable(table))
                    let outcome = try attack.attack(sentence, gold: gold, victim: victim)
                    let best = try bruteForce(sentence, gold: gold, table: table, limit: 1, victim: victim)
                    if let top = best.first {
                        XCTAssertEqual(outcome.status, .succeeded, "\(sentence) / \(word)")
                        XCTAssertEqual(outcome.adversarial, top.text, "\(sentence) / \(word)")
                        if importance == .deletion { flips += 1 }
                    } else {
                        XCTAssertEqual(outcome.status, .failed, "\(sentence) / \(word)")
                        if importance == .deletion { holds += 1 }
                    }
                }
            }
            // Several attackable words: whatever the attack finds is one of brute force's flips.
            var table: [String: [String]] = [:]
            for (k, word) in words.filter({ !AttackStopWords.english.contains($0) }).prefix(3).enumerated() {
                let options: [String] = [pool[(k * 5 + s) % pool.count], pool[(k * 5 + s + 1) % pool.count]]
                table[word] = options.filter { $0 != word }
            }
            let limit = AttackConstraints().maxPerturbed(words: words.count)
            let outcome = try WordSwapAttack(importance: .weightedSaliency, source: SubstitutionTable(table)).attack(sentence, gold: gold, victim: victim)
            let all = try bruteForce(sentence, gold: gold, table: table, limit: limit, victim: victim)
            if outcome.status == .succeeded {
                XCTAssertTrue(all.contains { $0.text == outcome.adversarial }, outcome.adversarial)
            }
            if all.isEmpty { XCTAssertEqual(outcome.status, .failed) }
        }
        XCTAssertGreaterThan(flips, 0, "no substitution ever flipped the tiny model: the test would prove nothing")
        XCTAssertGreaterThan(holds, 0, "every substitution flipped: the test would prove nothing")
    }

    /// Every logged text, re-scored by eval zeroshot's path (a one-line SST-2 task file, ZeroShotScoring), gives
    /// the logged prediction and scores.
    func testLoggedTextsRescoreToTheLoggedPrediction() throws {
        let (victim, model) = try tinyVictim()
        let checkpoint = try Checkpoint(directory: model)
        let tokenizer = try Tokenizer.load(modelDirectory: model)
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let pool = ["lovely", "awful", "grim", "sunny", "bleak", "great", "lousy", "fine"]
        let table = SubstitutionTable(["film": pool, "charming": pool, "warm": pool, "plot": pool, "acting": pool, "strong": pool, "boring": pool])
        let attack = WordSwapAttack(importance: .weightedSaliency, source: table, constraints: AttackConstraints(maxPerturbFraction: 0.5))
        var checked = 0
        for (i, sentence) in ["the film is a charming and warm tale", "dull plot but the acting is strong", "a sad and boring film"].enumerated() {
            for gold in [0, 1] {
                let outcome = try attack.attack(sentence, gold: gold, index: i, victim: victim)
                for (text, prediction, scores) in [(outcome.original, outcome.originalPrediction, outcome.originalScores),
                                                   (outcome.adversarial, outcome.adversarialPrediction, outcome.adversarialScores)] {
                    let file = scratch.appendingPathComponent("one-\(checked).jsonl")
                    let line = try JSONSerialization.data(withJSONObject: ["sentence": text, "label": gold, "idx": 0], options: [.sortedKeys])
                    try line.write(to: file)
                    let document = try ZeroShotTask.sst2.documents(url: file)[0]
                    let pairs = zip(document.contexts, document.continuations).map { ScoredSequence(context: $0, continuation: $1, encode: tokenizer.encode) }
                    let rescored = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head, sequences: pairs)
                    XCTAssertEqual(ZeroShotScoring.predictions(document: document, scores: rescored).acc, prediction, text)
                    for l in 0..<2 { XCTAssertEqual(rescored[l], scores[l], accuracy: 1e-3, text) }
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 12)
    }

    func testDemonstrationsAreBalancedSeededAndPrependedLikeTheHarness() throws {
        let pool = (0..<20).map { (sentence: "s\($0)", label: $0 % 3 == 0 ? 1 : 0) }
        let a = try ClassificationPrompt.drawDemonstrations(pool: pool, count: 4, labelCount: 2, seed: 7)
        let b = try ClassificationPrompt.drawDemonstrations(pool: pool, count: 4, labelCount: 2, seed: 7)
        let c = try ClassificationPrompt.drawDemonstrations(pool: pool, count: 4, labelCount: 2, seed: 8)
        XCTAssertEqual(a.map(\.sentence), b.map(\.sentence))
        XCTAssertNotEqual(a.map(\.sentence), c.map(\.sentence))
        XCTAssertEqual(a.filter { $0.label == 1 }.count, 2)
        let prompt = ClassificationPrompt(demonstrations: [("great fun", 1)])
        XCTAssertEqual(prompt.context("dull"), "great fun\nQuestion: Is this sentence positive or negative?\nAnswer: positive\n\ndull\nQuestion: Is this sentence positive or negative?\nAnswer:")
        XCTAssertThrowsError(try ClassificationPrompt.drawDemonstrations(pool: Array(pool.prefix(2)), count: 4, labelCount: 2, seed: 0))
    }
}
