import ArgumentParser
import Engine
import Foundation
import Logging
import Worker

/// An attack as `eval attack` and `prune --eval-attack` run it: the recipe and every setting that changes the figures.
struct AttackSettings: Sendable {
    enum Recipe: String, ExpressibleByArgument, CaseIterable, Sendable {
        case pwws, textfooler, none
    }

    var attack: Recipe = .pwws
    var task = "sst2"
    /// Folder holding sst2.validation.jsonl.
    var data: URL
    var shots = 0
    var template = "harness"
    var demoPool = 100
    var limit: Int?
    var maxPerturb = 0.25
    var queryBudget: Int?
    var seed: UInt64 = 0
    var wordnet: URL?
    var minCos = 0.5
    var maxCandidates = 50
    var batchTokens = 2048
    /// How the command spells these options: "" for `eval attack --shots`, "eval-attack-" for `prune --eval-attack-shots`.
    var optionPrefix = ""

    /// An option's name as the command spells it, for messages.
    func option(_ name: String) -> String { "--" + optionPrefix + name }

    /// The checks made before any work.
    func validate() throws {
        guard task == "sst2" else { throw ValidationError("\(option("task")) \(task): only sst2 is supported") }
        guard ClassificationPrompt.Template(rawValue: template) != nil else {
            throw ValidationError("\(option("template")) must be one of \(ClassificationPrompt.Template.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard shots >= 0 && shots <= 64 else { throw ValidationError("\(option("shots")) must be in 0...64, got \(shots)") }
        guard demoPool >= 0 else { throw ValidationError("\(option("demo-pool")) must not be negative") }
        guard shots == 0 || demoPool >= shots else { throw ValidationError("\(option("demo-pool")) \(demoPool) is smaller than \(option("shots")) \(shots)") }
        guard maxPerturb > 0 && maxPerturb <= 1 else { throw ValidationError("\(option("max-perturb")) must be in (0, 1], got \(maxPerturb)") }
        if let limit { try CommandLineLimits.check(limit, option("limit"), in: CommandLineLimits.count) }
        if let queryBudget { try CommandLineLimits.check(queryBudget, option("query-budget"), in: CommandLineLimits.count) }
        guard minCos >= -1 && minCos <= 1 else { throw ValidationError("\(option("min-cos")) must be in [-1, 1]") }
        guard maxCandidates >= 1 else { throw ValidationError("\(option("max-candidates")) must be at least 1") }
        try CommandLineLimits.check(batchTokens, option("batch-tokens"), in: CommandLineLimits.seqlen)
    }

    var file: URL { data.appendingPathComponent(ZeroShotTask.sst2.fileName) }
}

/// The result of an attack: every example's outcome (on rank 0; [] elsewhere), the demonstration pool's size
/// and the prompt.
struct AttackResult {
    var outcomes: [AttackOutcome]
    var pool: Int
    var prompt: ClassificationPrompt

    var summary: AttackSummary { AttackSummary(outcomes: outcomes) }
}

/// The attack over the ranks of a job: example i is attacked whole on rank i mod size and the outcomes are
/// gathered to rank 0, so every rank count gives the same figures and log.
enum DistributedAttack {
    static func run(_ settings: AttackSettings, model: URL, comm: Communicator, logger: Logger) throws -> AttackResult {
        let examples = try readExamples(settings.file)
        guard examples.count > settings.demoPool else {
            throw PruneDistError(.data, "\(settings.file.path): \(examples.count) examples, not more than the \(settings.option("demo-pool")) \(settings.demoPool) kept for demonstrations")
        }
        let attackable = examples.count - settings.demoPool
        let pool = Array(examples[attackable...])
        let targets = Array(examples.prefix(min(attackable, settings.limit ?? attackable)))
        let demonstrations = try ClassificationPrompt.drawDemonstrations(pool: pool, count: settings.shots, labelCount: 2, seed: settings.seed)
        let prompt = ClassificationPrompt(template: ClassificationPrompt.Template(rawValue: settings.template)!, demonstrations: demonstrations)

        let checkpoint = try Checkpoint(directory: model)
        let tokenizer = try Tokenizer.load(modelDirectory: checkpoint.directory)
        let victim = try LanguageModelClassifier(checkpoint: checkpoint, tokenizer: tokenizer, prompt: prompt, batchTokens: settings.batchTokens)
        let constraints = AttackConstraints(maxPerturbFraction: settings.maxPerturb, queryBudget: settings.queryBudget)
        let searcher: WordSwapAttack?
        switch settings.attack {
        case .none:
            searcher = nil
        case .pwws:
            searcher = WordSwapAttack(importance: .weightedSaliency, source: WordNetSynonyms(wordNet: try loadWordNet(settings.wordnet)), constraints: constraints)
        case .textfooler:
            let neighbours = EmbeddingNeighbours(embedding: try LlamaEmbedding(checkpoint: checkpoint), tokenizer: tokenizer,
                                                 wordNet: try loadWordNet(settings.wordnet),
                                                 minCosine: settings.minCos, maxCandidates: settings.maxCandidates)
            logger.info("textfooler: \(neighbours.vocabularyCount) whole-word tokens in the embedding neighbourhood vocabulary")
            searcher = WordSwapAttack(importance: .deletion, source: neighbours, constraints: constraints)
        }

        var mine: [AttackOutcome] = []
        let myIndices = targets.indices.filter { $0 % comm.size == comm.rank }
        for (done, i) in myIndices.enumerated() {
            let (sentence, label) = targets[i]
            if let searcher {
                mine.append(try searcher.attack(sentence, gold: label, index: i, victim: victim))
            } else {
                // Clean accuracy only: the attack with no word it may modify.
                let clean = WordSwapAttack(importance: .deletion, source: SubstitutionTable([:]),
                                           constraints: AttackConstraints(maxPerturbFraction: 1, queryBudget: 1))
                mine.append(try clean.attack(sentence, gold: label, index: i, victim: victim))
            }
            let o = mine.last!
            logger.info("example \(i) (\(done + 1)/\(myIndices.count) on rank \(comm.rank)): \(o.status.rawValue), \(o.queries) queries")
        }
        let gathered = try comm.gather(try JSONEncoder().encode(mine), root: 0)
        var all: [AttackOutcome] = []
        if comm.rank == 0 {
            for part in gathered { all += try JSONDecoder().decode([AttackOutcome].self, from: part) }
            all.sort { $0.index < $1.index }
            guard all.count == targets.count else {
                throw PruneDistError(.communication, "gathered \(all.count) outcomes for \(targets.count) examples")
            }
        }
        return AttackResult(outcomes: all, pool: pool.count, prompt: prompt)
    }

    /// (sentence, label) of every line of the SST-2 file.
    static func readExamples(_ url: URL) throws -> [(sentence: String, label: Int)] {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read task file (\(error.localizedDescription))")
        }
        var examples: [(String, Int)] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.allSatisfy(\.isWhitespace) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let sentence = object["sentence"] as? String, let label = object["label"] as? Int, label == 0 || label == 1 else {
                throw PruneDistError(.data, "\(url.path): line \(number + 1) is not an SST-2 object with \"sentence\" and \"label\" 0 or 1")
            }
            examples.append((sentence, label))
        }
        guard !examples.isEmpty else { throw PruneDistError(.data, "\(url.path): no examples") }
        return examples
    }

    static func loadWordNet(_ folder: URL?) throws -> WordNet {
        if let folder { return try WordNet(directory: folder) }
        guard let directory = WordNet.defaultDirectory() else {
            throw PruneDistError(.io, "WordNet not found in /usr/share/wordnet; install Debian's wordnet-base (scripts/install-packages.sh) or pass --wordnet DIR")
        }
        return try WordNet(directory: directory)
    }

    /// One JSON object per example, written under a temporary name and renamed.
    static func writeLog(_ outcomes: [AttackOutcome], to url: URL, labels: [String], attack: AttackSettings.Recipe) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var text = ""
        for outcome in outcomes {
            let data = try encoder.encode(outcome)
            guard var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
            object["gold_label"] = labels[outcome.gold]
            object["original_label"] = labels[outcome.originalPrediction]
            object["adversarial_label"] = labels[outcome.adversarialPrediction]
            object["attack"] = attack.rawValue
            text += try jsonLine(object) + "\n"
        }
        try writeFileAtomically(Data(text.utf8), to: url)
    }

    /// A log path may replace only an earlier attack log (its first line a JSON object with an "attack" key): any
    /// other file at that path is the user's, refused before the attack runs rather than overwritten after it.
    static func checkLogMayBeReplaced(_ url: URL, option: String) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else { return }
        let firstLine = isFolder.boolValue ? nil : (try? String(contentsOf: url, encoding: .utf8))?.split(separator: "\n").first
        let object = firstLine.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        guard object?["attack"] != nil else {
            throw ValidationError("\(option) \(url.path): exists and is not a prune-dist attack log; it would be overwritten. Remove it or choose another file name")
        }
    }

    /// The flat entries of a run report's `evaluation` (TextAttack's figures; `attack.examples` is a count, not a measure).
    static func reportEntries(_ summary: AttackSummary, recipe: AttackSettings.Recipe) -> [String: Double] {
        let prefix = "attack.\(recipe.rawValue)."
        return [prefix + "clean_accuracy": summary.cleanAccuracy, prefix + "accuracy_under_attack": summary.accuracyUnderAttack,
                prefix + "attack_success_rate": summary.attackSuccessRate,
                prefix + "average_perturbed_word_percent": summary.averagePerturbedWordPercent,
                prefix + "average_queries": summary.averageQueries, prefix + "documents": Double(summary.examples)]
    }
}
