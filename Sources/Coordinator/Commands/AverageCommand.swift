import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist average`: model soups, the uniform or greedy average of fine-tunes of one model.
struct AverageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "average",
        abstract: "Average the weights of several checkpoints of one architecture (model soup): uniform, or greedy by a held-out score.",
        discussion: """
        Uniform: every tensor is the element-wise mean over --models (summed in Double). --greedy (Wortsman et al. 2022): \
        each model is scored alone (perplexity on --eval-text, lower is better; or the zero-shot average of --eval-tasks, \
        higher is better), then models are added best first and kept only if the soup's score improves. Under mpirun the \
        scoring is spread over the ranks.
        """)

    @Option(name: .long, parsing: .upToNextOption, help: "The checkpoints to average (Hugging Face folders with the same config, tensor names, shapes and dtypes).")
    var models: [String] = []

    @Option(name: .long, help: "Output directory (absent or empty; written under a temporary name, renamed when complete).")
    var out: String

    @Flag(name: .long, help: "Greedy soup: keep a model only if it improves the held-out score (needs --eval-text or --eval-tasks).")
    var greedy = false

    @Option(name: .long, help: "--greedy: score by perplexity on this text (or .u16 / .json token) file.")
    var evalText: String?

    @Option(name: .long, help: "--greedy with --eval-text: tokens per window (default: 512).")
    var evalSeqlen: Int?

    @Option(name: .long, help: "--greedy with --eval-text: evaluate only the first K windows.")
    var evalMaxWindows: Int?

    @Option(name: .long, help: "--greedy: score by the zero-shot average of these tasks (e.g. boolq,piqa or all); needs --eval-data.")
    var evalTasks: String?

    @Option(name: .long, help: "Folder of zero-shot task files for --eval-tasks.")
    var evalData: String?

    @Option(name: .long, help: "--eval-tasks: only the first N documents of each task.")
    var evalLimit: Int?

    @Option(name: .long, help: "Output dtype: bf16, f16 or f32 (default: the models').", transform: DType.commandLineWeightType)
    var dtype: DType?

    @OptionGroup var global: GlobalOptions

    var resolvedEvalSeqlen: Int { evalSeqlen ?? 512 }

    func validate() throws {
        guard models.count >= 2 else { throw ValidationError("--models needs at least two checkpoints to average, got \(models.count)") }
        let evaluationOptions: [(String, Bool)] = [
            ("--eval-text", evalText != nil), ("--eval-seqlen", evalSeqlen != nil), ("--eval-max-windows", evalMaxWindows != nil),
            ("--eval-tasks", evalTasks != nil), ("--eval-data", evalData != nil), ("--eval-limit", evalLimit != nil),
        ]
        if greedy {
            guard (evalText == nil) != (evalTasks == nil) else {
                throw ValidationError("--greedy needs exactly one held-out score: --eval-text FILE or --eval-tasks LIST --eval-data DIR")
            }
            if evalText == nil, let given = evaluationOptions.prefix(3).first(where: \.1)?.0 {
                throw ValidationError("\(given) applies to --eval-text, not --eval-tasks; remove it")
            }
            if evalTasks == nil, let given = evaluationOptions.suffix(3).first(where: \.1)?.0 {
                throw ValidationError("\(given) applies to --eval-tasks, not --eval-text; remove it")
            }
            if evalTasks != nil, evalData == nil { throw ValidationError("--eval-tasks needs --eval-data DIR (the task files)") }
        } else if let given = evaluationOptions.first(where: \.1)?.0 {
            throw ValidationError("\(given) scores a greedy soup; add --greedy or remove it")
        }
        try CommandLineLimits.check(resolvedEvalSeqlen, "--eval-seqlen", in: CommandLineLimits.seqlen)
        if let evalMaxWindows { try CommandLineLimits.check(evalMaxWindows, "--eval-max-windows", in: CommandLineLimits.count) }
        if let evalLimit { try CommandLineLimits.check(evalLimit, "--eval-limit", in: CommandLineLimits.count) }
        let tasks = try asValidationError { try evalTasks.map(DistributedEvaluation.parseTasks) ?? [] }
        try asValidationError {
            var inputs: [OutputFolder.Argument] = []
            var seen: [String: String] = [:]
            for model in models {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: model, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw PruneDistError(.io, "--models \(model): no such model folder")
                }
                let resolved = URL(fileURLWithPath: model).resolvingSymlinksInPath().standardizedFileURL.path
                if let earlier = seen[resolved] {
                    throw PruneDistError(.argument, "--models \(model) is the same folder as \(earlier); give each checkpoint once (a soup weighs its ingredients equally)")
                }
                seen[resolved] = model
                inputs.append(OutputFolder.Argument("--models", URL(fileURLWithPath: model)))
            }
            if let evalText {
                try checkRegularFile(evalText, option: "--eval-text")
                inputs.append(OutputFolder.Argument("--eval-text", URL(fileURLWithPath: evalText)))
            }
            if let evalData {
                for task in tasks where !FileManager.default.fileExists(atPath: URL(fileURLWithPath: evalData).appendingPathComponent(task.fileName).path) {
                    throw PruneDistError(.io, "--eval-data \(evalData): no \(task.fileName) for task \(task.rawValue)")
                }
                inputs.append(OutputFolder.Argument("--eval-data", URL(fileURLWithPath: evalData)))
            }
            try OutputFolder.checkFresh(OutputFolder.Argument("--out", URL(fileURLWithPath: out)), inputs: inputs)
            // Candidates are evaluated with the first model's tokenizer (copied beside their weights).
            let textNeedsTokenizer = evalText.map { !["u16", "json"].contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) } ?? false
            let tokenizer = URL(fileURLWithPath: models[0]).appendingPathComponent("tokenizer.json")
            if greedy, textNeedsTokenizer || evalTasks != nil, !FileManager.default.fileExists(atPath: tokenizer.path) {
                throw PruneDistError(.argument, "\(evalTasks != nil ? "--eval-tasks" : "--eval-text") needs a tokenizer, but the first of --models, \(models[0]), has no tokenizer.json")
            }
        }
    }

    func settings() throws -> SoupSettings {
        let scoring = greedy
            ? PruneRunEvaluation(texts: evalText.map { [URL(fileURLWithPath: $0)] } ?? [], seqlen: resolvedEvalSeqlen, maxWindows: evalMaxWindows,
                                 tasks: try evalTasks.map(DistributedEvaluation.parseTasks) ?? [],
                                 data: evalData.map { URL(fileURLWithPath: $0) }, limit: evalLimit)
            : nil
        return SoupSettings(models: models.map { URL(fileURLWithPath: $0) }, out: URL(fileURLWithPath: out), dtype: dtype, scoring: scoring)
    }

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let settings = try settings()
        let report = try comm.abortingJobOnError { () throws -> SoupReport in
            let files = settings.models.flatMap(RankConsistency.modelFiles)
            try RankConsistency.check(RankConsistency.fingerprint(arguments: CommandLine.arguments, files: files), comm: comm)
            let lock = comm.rank == 0 ? try OutputLock.acquire(partial: OutputFolder.partialFolder(for: settings.out), out: settings.out) : nil
            let interruptions = lock.map { lock in
                InterruptCleanup.install(message: "interrupted; removed \(lock.partial.path)", cleanup: { lock.removePartialFolder() })
            }
            defer { interruptions?.uninstall() }
            do {
                return try SoupRun(settings: settings, comm: comm, logger: logger, lock: lock).run()
            } catch {
                lock?.removePartialFolder()  // nothing to resume: a soup is made again from its inputs
                throw error
            }
        }
        guard comm.rank == 0 else { return }
        AverageCommand.summaryLines(report, out: out).forEach(printLine)
        var object = try report.jsonObject()
        object["output"] = out
        object["provenance"] = nil
        printLine(try jsonLine(object))
    }

    /// One line per ingredient (its score, kept or not) and the soup's.
    static func summaryLines(_ report: SoupReport, out: String) -> [String] {
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "–" }
        var lines: [String] = []
        if let steps = report.steps {
            for step in steps {
                let ingredient = report.ingredients[step.ingredient]
                lines.append("ingredient \(step.ingredient + 1) \(ingredient.path): score \(f(step.score)), soup with it \(f(step.soupScore)): \(step.kept ? "kept" : "not kept")")
            }
        } else {
            for (i, ingredient) in report.ingredients.enumerated() { lines.append("ingredient \(i + 1) \(ingredient.path): weight \(f(ingredient.weight))") }
        }
        let kept = report.ingredients.filter(\.kept).count
        lines.append("\(report.method) soup of \(kept) of \(report.ingredients.count) models -> \(out)\(report.score.map { ": score \(f($0)) (\(report.measure ?? ""))" } ?? "")")
        return lines
    }
}
