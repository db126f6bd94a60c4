import ArgumentParser
import Engine
import Foundation

/// `prune --eval-attack pwws|textfooler …`: after pruning, the result is attacked over the same ranks as
/// `eval attack` would attack it, and TextAttack's figures go into the run report (JSON and HTML).
struct AttackEvaluationOptions: ParsableArguments {
    @Option(name: .long, help: "Attack the result as a classifier: pwws, textfooler or none (clean accuracy only); needs --eval-attack-data.")
    var evalAttack: AttackSettings.Recipe?

    @Option(name: .long, help: "--eval-attack: the task (sst2).")
    var evalAttackTask: String?

    @Option(name: .long, help: "--eval-attack: folder holding sst2.validation.jsonl.")
    var evalAttackData: String?

    @Option(name: .long, help: "--eval-attack: attack only the first N examples.")
    var evalAttackLimit: Int?

    @Option(name: .long, help: "--eval-attack: prompt template harness, review or chat (default: harness).")
    var evalAttackTemplate: String?

    @Option(name: .long, help: "--eval-attack: demonstrations in the prompt (default: 0).")
    var evalAttackShots: Int?

    @Option(name: .long, help: "--eval-attack: examples at the end of the file kept for demonstrations, never attacked (default: 100).")
    var evalAttackDemoPool: Int?

    @Option(name: .long, help: "--eval-attack: at most this fraction of an example's words replaced (default: 0.25).")
    var evalAttackMaxPerturb: Double?

    @Option(name: .long, help: "--eval-attack: at most this many victim queries per example (default: unlimited).")
    var evalAttackQueryBudget: Int?

    @Option(name: .long, help: "--eval-attack: seed of the demonstration draw (default: 0).")
    var evalAttackSeed: UInt64?

    @Option(name: .long, help: "--eval-attack: write every attacked example of the pruned model to this JSONL file.")
    var evalAttackLog: String?

    @Option(name: .long, help: "--eval-attack: WordNet dict folder (default: /usr/share/wordnet).")
    var evalAttackWordnet: String?

    init() {}

    /// The attack asked for, nil without --eval-attack.
    var settings: AttackSettings? {
        guard let evalAttack, let evalAttackData else { return nil }
        var settings = AttackSettings(data: URL(fileURLWithPath: evalAttackData))
        settings.attack = evalAttack
        settings.optionPrefix = "eval-attack-"
        if let evalAttackTask { settings.task = evalAttackTask }
        settings.limit = evalAttackLimit
        if let evalAttackTemplate { settings.template = evalAttackTemplate }
        if let evalAttackShots { settings.shots = evalAttackShots }
        if let evalAttackDemoPool { settings.demoPool = evalAttackDemoPool }
        if let evalAttackMaxPerturb { settings.maxPerturb = evalAttackMaxPerturb }
        settings.queryBudget = evalAttackQueryBudget
        if let evalAttackSeed { settings.seed = evalAttackSeed }
        settings.wordnet = evalAttackWordnet.map { URL(fileURLWithPath: $0) }
        return settings
    }

    /// The options given besides --eval-attack (refused without it).
    private var given: [String] {
        [("--eval-attack-task", evalAttackTask != nil), ("--eval-attack-data", evalAttackData != nil), ("--eval-attack-limit", evalAttackLimit != nil),
         ("--eval-attack-template", evalAttackTemplate != nil), ("--eval-attack-shots", evalAttackShots != nil),
         ("--eval-attack-demo-pool", evalAttackDemoPool != nil), ("--eval-attack-max-perturb", evalAttackMaxPerturb != nil),
         ("--eval-attack-query-budget", evalAttackQueryBudget != nil), ("--eval-attack-seed", evalAttackSeed != nil),
         ("--eval-attack-log", evalAttackLog != nil), ("--eval-attack-wordnet", evalAttackWordnet != nil)].filter(\.1).map(\.0)
    }

    /// Everything that can be checked before pruning: the attack's options, its data file, WordNet, the log path.
    func validate() throws {
        guard let evalAttack else {
            if let option = given.first { throw ValidationError("\(option) needs --eval-attack pwws|textfooler|none") }
            return
        }
        guard let evalAttackData else { throw ValidationError("--eval-attack \(evalAttack.rawValue) needs --eval-attack-data DIR (the folder of sst2.validation.jsonl)") }
        let settings = settings!
        try settings.validate()
        guard FileManager.default.fileExists(atPath: settings.file.path) else {
            throw ValidationError("--eval-attack-data \(evalAttackData): no \(settings.file.lastPathComponent) for task \(settings.task)")
        }
        if evalAttack != .none {
            if let wordnet = settings.wordnet {
                guard FileManager.default.fileExists(atPath: wordnet.appendingPathComponent("index.noun").path) else {
                    throw ValidationError("--eval-attack-wordnet \(wordnet.path): no index.noun (a WordNet dict folder is expected)")
                }
            } else if WordNet.defaultDirectory() == nil {
                throw ValidationError("--eval-attack \(evalAttack.rawValue) needs WordNet: install Debian's wordnet-base or pass --eval-attack-wordnet DIR")
            }
        }
        if let evalAttackLog { try DistributedAttack.checkLogMayBeReplaced(URL(fileURLWithPath: evalAttackLog), option: "--eval-attack-log") }
    }
}
