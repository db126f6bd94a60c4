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

    @Option(name: .long, help: "Hugging Face model directory (config.json, safetensors, tokenizer.json).")
    var model: String

    @Option(name: .long, help: "Folder holding the task files (sst2.validation.jsonl).")
    var data: String

    @Option(name: .long, help: "Task: sst2.")
    var task: String = "sst2"

    @Option(name: .long, help: "Attack recipe: pwws, textfooler, or none (clean accuracy only).")
    var attack: AttackSettings.Recipe = .pwws

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
        if let log { try DistributedAttack.checkLogMayBeReplaced(URL(fileURLWithPath: log), option: "--log") }
        try settings.validate()
    }

    var settings: AttackSettings {
        AttackSettings(attack: attack, task: task, data: URL(fileURLWithPath: data), shots: shots, template: template, demoPool: demoPool,
                       limit: limit, maxPerturb: maxPerturb, queryBudget: queryBudget, seed: seed, wordnet: wordnet.map { URL(fileURLWithPath: $0) },
                       minCos: minCos, maxCandidates: maxCandidates, batchTokens: batchTokens)
    }

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let start = Date()
        let result = try comm.abortingJobOnError {
            try DistributedAttack.run(settings, model: URL(fileURLWithPath: model), comm: comm, logger: logger)
        }
        let (outcomes, pool, prompt) = (result.outcomes, result.pool, result.prompt)
        guard comm.rank == 0 else { return }
        let seconds = Date().timeIntervalSince(start)
        let summary = AttackSummary(outcomes: outcomes)
        if let log { try DistributedAttack.writeLog(outcomes, to: URL(fileURLWithPath: log), labels: prompt.labels, attack: attack) }
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
}
