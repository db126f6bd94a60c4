import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist eval attack`: robustness of the language model as a classifier under word-substitution attacks
/// (TextAttack's PWWS and TextFooler recipes, our implementation).
struct AttackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attack",
        abstract: "Adversarial word-substitution attack (PWWS, TextFooler) on the model used as a zero-shot / few-shot classifier.",
        discussion: """
        The victim scores each label word (" negative", " positive") after the prompt by log-likelihood, as eval zeroshot \
        does; with --shots K the prompt starts with K demonstrations drawn with --seed from the last --demo-pool examples \
        of the file, which are never attacked. Examples i ≡ rank (mod size) are attacked on each rank and the outcomes \
        gathered to rank 0: every rank count gives the same figures. Prints TextAttack's summary (original accuracy, \
        accuracy under attack, attack success rate, average perturbed word %, average queries). --attack none measures \
        the clean accuracy only.
        """)

    enum AttackName: String, ExpressibleByArgument, CaseIterable {
        case pwws, textfooler, none
    }

    @Option(name: .long, help: "Hugging Face model directory (config.json, safetensors, tokenizer.json).")
    var model: String

    @Option(name: .long, help: "Folder holding the task files (sst2.validation.jsonl).")
    var data: String

    @Option(name: .long, help: "Task: sst2.")
    var task: String = "sst2"

    @Option(name: .long, help: "Attack recipe: pwws, textfooler, or none (clean accuracy only).")
    var attack: AttackName = .pwws

    @Option(name: .long, help: "Demonstrations in the prompt (K-shot).")
    var shots: Int = 0

    @Option(name: .long, help: "Prompt template: harness (eval zeroshot's SST-2 prompt), review (\"Review: … Sentiment:\") or chat (ChatML user/assistant turns).")
    var template: String = "harness"

    @Option(name: .long, help: "Examples at the end of the file kept for demonstrations and never attacked.")
    var demoPool: Int = 100

    @Option(name: .long, help: "Attack only the first N examples (of those outside the demonstration pool).")
    var limit: Int?

    @Option(name: .long, help: "At most this fraction of an example's words may be replaced (rounded up).")
    var maxPerturb: Double = 0.25

    @Option(name: .long, help: "At most this many victim queries per example (the clean text included); default unlimited.")
    var queryBudget: Int?

    @Option(name: .long, help: "Seed of the demonstration draw.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Write every example (original, adversarial text, labels, scores, queries) to this JSONL file.")
    var log: String?

    @Option(name: .long, help: "WordNet dict folder (index.noun, data.noun, …); default /usr/share/wordnet (Debian's wordnet-base).")
    var wordnet: String?

    @Option(name: .long, help: "TextFooler: least cosine similarity of an embedding neighbour.")
    var minCos: Double = 0.5

    @Option(name: .long, help: "TextFooler: nearest neighbours tried per word.")
    var maxCandidates: Int = 50

    @Option(name: .long, help: "Tokens per scoring batch (padded).")
    var batchTokens: Int = 2048

    @Flag(name: .long, help: "Print one JSON object as the last line.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let log { try Self.checkLogMayBeReplaced(URL(fileURLWithPath: log)) }
        guard task == "sst2" else { throw ValidationError("--task \(task): only sst2 is supported") }
        guard ClassificationPrompt.Template(rawValue: template) != nil else {
            throw ValidationError("--template must be one of \(ClassificationPrompt.Template.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard shots >= 0 && shots <= 64 else { throw ValidationError("--shots must be in 0...64, got \(shots)") }
        guard demoPool >= 0 else { throw ValidationError("--demo-pool must not be negative") }
        guard shots == 0 || demoPool >= shots else { throw ValidationError("--demo-pool \(demoPool) is smaller than --shots \(shots)") }
        guard maxPerturb > 0 && maxPerturb <= 1 else { throw ValidationError("--max-perturb must be in (0, 1], got \(maxPerturb)") }
        if let limit { try CommandLineLimits.check(limit, "--limit", in: CommandLineLimits.count) }
        if let queryBudget { try CommandLineLimits.check(queryBudget, "--query-budget", in: CommandLineLimits.count) }
        guard minCos >= -1 && minCos <= 1 else { throw ValidationError("--min-cos must be in [-1, 1]") }
        guard maxCandidates >= 1 else { throw ValidationError("--max-candidates must be at least 1") }
        try CommandLineLimits.check(batchTokens, "--batch-tokens", in: CommandLineLimits.seqlen)
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

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let start = Date()
        let (outcomes, pool, prompt) = try comm.abortingJobOnError { () throws -> ([AttackOutcome], Int, ClassificationPrompt) in
            let file = URL(fileURLWithPath: data).appendingPathComponent(ZeroShotTask.sst2.fileName)
            let examples = try AttackCommand.readExamples(file)
            guard examples.count > demoPool else {
                throw PruneDistError(.data, "\(file.path): \(examples.count) examples, not more than the --demo-pool \(demoPool) kept for demonstrations")
            }
            let attackable = examples.count - demoPool
            let pool = Array(examples[attackable...])
            let targets = Array(examples.prefix(min(attackable, limit ?? attackable)))
            let demonstrations = try ClassificationPrompt.drawDemonstrations(pool: pool, count: shots, labelCount: 2, seed: seed)
            let prompt = ClassificationPrompt(template: ClassificationPrompt.Template(rawValue: template)!, demonstrations: demonstrations)

            let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: model))
            let tokenizer = try Tokenizer.load(modelDirectory: checkpoint.directory)
            let victim = try LanguageModelClassifier(checkpoint: checkpoint, tokenizer: tokenizer, prompt: prompt, batchTokens: batchTokens)
            let constraints = AttackConstraints(maxPerturbFraction: maxPerturb, queryBudget: queryBudget)
            let searcher: WordSwapAttack?
            switch attack {
            case .none:
                searcher = nil
            case .pwws:
                let wordNet = try loadWordNet()
                searcher = WordSwapAttack(importance: .weightedSaliency, source: WordNetSynonyms(wordNet: wordNet), constraints: constraints)
            case .textfooler:
                let wordNet = try loadWordNet()
                let neighbours = EmbeddingNeighbours(embedding: try LlamaEmbedding(checkpoint: checkpoint), tokenizer: tokenizer, wordNet: wordNet,
                                                     minCosine: minCos, maxCandidates: maxCandidates)
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
            let payload = try JSONEncoder().encode(mine)
            let gathered = try comm.gather(payload, root: 0)
            var all: [AttackOutcome] = []
            if comm.rank == 0 {
                for part in gathered { all += try JSONDecoder().decode([AttackOutcome].self, from: part) }
                all.sort { $0.index < $1.index }
                guard all.count == targets.count else {
                    throw PruneDistError(.communication, "gathered \(all.count) outcomes for \(targets.count) examples")
                }
            }
            return (all, pool.count, prompt)
        }
        guard comm.rank == 0 else { return }
        let seconds = Date().timeIntervalSince(start)
        let summary = AttackSummary(outcomes: outcomes)
        if let log { try writeLog(outcomes, to: URL(fileURLWithPath: log), labels: prompt.labels) }
        printLine("attack \(attack.rawValue) on \(task): \(outcomes.count) examples, \(shots)-shot \(template) prompt (demonstrations from the last \(pool) examples, seed \(seed))")
        printLine(summary.table)
        printLine(String(format: "%.1f s over %d rank(s)", seconds, comm.size))
        if json {
            var object = summary.jsonObject
            object["attack"] = attack.rawValue
            object["task"] = task
            object["model"] = model
            object["shots"] = shots
            object["template"] = template
            object["seed"] = seed
            object["max_perturb"] = maxPerturb
            object["query_budget"] = queryBudget ?? NSNull()
            object["limit"] = limit ?? NSNull()
            object["ranks"] = comm.size
            object["seconds"] = seconds
            printLine(try jsonLine(object))
        }
    }

    func loadWordNet() throws -> WordNet {
        if let wordnet { return try WordNet(directory: URL(fileURLWithPath: wordnet)) }
        guard let directory = WordNet.defaultDirectory() else {
            throw PruneDistError(.io, "WordNet not found in /usr/share/wordnet; install Debian's wordnet-base (scripts/install-packages.sh) or pass --wordnet DIR")
        }
        return try WordNet(directory: directory)
    }

    /// One JSON object per example, written under a temporary name and renamed.
    func writeLog(_ outcomes: [AttackOutcome], to url: URL, labels: [String]) throws {
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

    /// `--log` may replace only an earlier attack log (its first line a JSON object with an "attack" key): any other
    /// file at that path is the user's, refused before the attack runs rather than overwritten after it.
    static func checkLogMayBeReplaced(_ url: URL) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else { return }
        let firstLine = isFolder.boolValue ? nil : (try? String(contentsOf: url, encoding: .utf8))?.split(separator: "\n").first
        let object = firstLine.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        guard object?["attack"] != nil else {
            throw ValidationError("--log \(url.path): exists and is not a prune-dist attack log; it would be overwritten. Remove it or choose another file name")
        }
    }
}
