import ArgumentParser
import Engine
import Foundation
import Worker

extension TaylorTerm: ExpressibleByArgument {}
extension GroupAggregation: ExpressibleByArgument {}
extension CalibrationDraw: ExpressibleByArgument {}

/// The options of `prune --method llm-pruner|adapruner` (structured pruning).
struct StructuredPruneOptions: ParsableArguments {
    @Option(name: .long, help: "Structured: LLM-Pruner pruning ratio, the fraction of each pruned block's query channels and MLP channels removed (whole KV groups only).")
    var ratio: Double?

    @Option(name: .long, help: "Structured: importance el1 (element-wise 1st order), el2 (adds the Fisher term), vector (default: el1).")
    var importance: TaylorTerm?

    @Option(name: .long, help: "Structured: aggregation over a group's structures: sum, prod, max, last (default: sum).")
    var aggregation: GroupAggregation?

    @Option(name: .long, help: "LLM-Pruner: how calibration windows are drawn: documents (LLM-Pruner's own: one window in each of --samples random documents of at least --seqlen tokens; the default for text and JSONL) or stream (anywhere in the token stream, as SparseGPT and Wanda; the default for token files).")
    var calibDraw: CalibrationDraw?

    @Option(name: .long, help: "Structured: first pruned block (default 4).")
    var blockStart: Int?

    @Option(name: .long, help: "Structured: last pruned block, inclusive (default N−3).")
    var blockEnd: Int?
}

/// The options of `prune --method adapruner`: its TPE search.
struct AdaPrunerOptions: ParsableArguments {
    @Option(name: .long, help: "AdaPruner: number of TPE trials (default: 20).")
    var trials: Int?

    @Option(name: .long, help: "AdaPruner: pool of documents for calibration subsets and the held-out objective (default: --calib).")
    var pool: String?

    @Option(name: .long, help: "AdaPruner: seed of the search (default: --seed).")
    var searchSeed: Int?

    @Option(name: .long, help: "AdaPruner: documents shorter than this many tokens are left out of the pool (default: 128).")
    var minDocumentTokens: Int?

    @Option(name: .long, help: "AdaPruner: calibration sizes the search chooses from (sequences of --seqlen) (default: 10,20,40).")
    var sampleChoices: String?

    @Option(name: .long, help: "AdaPruner: number of calibration seeds the search chooses from (default: 8).")
    var seedChoices: Int?

    @Option(name: .long, help: "AdaPruner: importance terms mixed (comma-separated: vector, el1, el2) (default: vector,el1).")
    var terms: String?

    @Option(name: .long, help: "AdaPruner: alignment factors β of the vector term (default: 1,10,100).")
    var betaVector: String?

    @Option(name: .long, help: "AdaPruner: alignment factors β of the el1 term (default: 1).")
    var betaEl1: String?

    @Option(name: .long, help: "AdaPruner: alignment factors β of the el2 term (default: 1).")
    var betaEl2: String?

    @Option(name: .long, help: "AdaPruner: held-out pool windows the objective perplexity is measured on (default: 16).")
    var objectiveWindows: Int?

    @Option(name: .long, help: "AdaPruner: tokens per objective window (default: 128).")
    var objectiveSeqlen: Int?

    @Option(name: .long, help: "AdaPruner: TPE's γ quantile (fraction of trials counted as good) (default: 0.25).")
    var gamma: Double?

    @Option(name: .long, help: "AdaPruner: trials drawn at random before TPE proposes (the first trial is always LLM-Pruner el1) (default: 6).")
    var startupTrials: Int?

    @Option(name: .long, help: "AdaPruner: K, trials proposed per TPE round (constant liar) and run side by side on min(K, ranks) groups of ranks. The search depends on --search-seed and K only, not on the number of ranks; 1 runs trials one after another (default: 4).")
    var parallelTrials: Int?
}

extension AdaPrunerOptions {
    /// Options given on the command line that only AdaPruner reads.
    var adaPrunerOptionsGiven: [String] {
        let given: [(String, Bool)] = [
            ("--trials", trials != nil), ("--pool", pool != nil), ("--search-seed", searchSeed != nil),
            ("--min-document-tokens", minDocumentTokens != nil), ("--sample-choices", sampleChoices != nil),
            ("--seed-choices", seedChoices != nil), ("--terms", terms != nil), ("--beta-vector", betaVector != nil),
            ("--beta-el1", betaEl1 != nil), ("--beta-el2", betaEl2 != nil),
            ("--objective-windows", objectiveWindows != nil), ("--objective-seqlen", objectiveSeqlen != nil),
            ("--gamma", gamma != nil), ("--startup-trials", startupTrials != nil),
            ("--parallel-trials", parallelTrials != nil),
        ]
        return given.filter(\.1).map(\.0)
    }
}

extension StructuredPruneOptions {
    /// Options given on the command line that only the structured methods read.
    var structuredOptionsGiven: [String] {
        let given: [(String, Bool)] = [
            ("--ratio", ratio != nil), ("--importance", importance != nil), ("--aggregation", aggregation != nil),
            ("--calib-draw", calibDraw != nil), ("--block-start", blockStart != nil), ("--block-end", blockEnd != nil),
        ]
        return given.filter(\.1).map(\.0)
    }
}

extension PruneCommand {
    private func numbers(_ text: String, _ option: String) throws -> [Double] {
        let values = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! > 0 }) else {
            throw ValidationError("\(option) must be a comma-separated list of positive numbers, got \(text)")
        }
        return values.map { $0! }
    }

    func validateStructured() throws {
        let s = structured
        guard let ratio = s.ratio, ratio > 0, ratio < 1 else { throw ValidationError("--method \(method.rawValue) needs --ratio in (0, 1)") }
        guard sparsity == nil, pattern == nil else { throw ValidationError("--sparsity and --pattern are for unstructured methods; structured pruning takes --ratio") }
        guard calib != nil else { throw ValidationError("--method \(method.rawValue) needs calibration data: --calib FILE") }
        guard !resume, weights == .shared else {
            throw ValidationError("--resume and --weights broadcast are for unstructured methods; --method \(method.rawValue) runs in one pass from the shared model")
        }
        if (s.blockStart == nil) != (s.blockEnd == nil) { throw ValidationError("give both --block-start and --block-end, or neither") }
        if let a = s.blockStart, let b = s.blockEnd, a > b || a < 0 { throw ValidationError("--block-start \(a) … --block-end \(b) is not a block range") }
        if method == .adapruner {
            guard s.calibDraw == nil else {
                throw ValidationError("--calib-draw is for --method llm-pruner; AdaPruner's trials draw their windows from the pool's documents")
            }
            let search = try searchSettings()
            try CommandLineLimits.check(search.trials, "--trials", in: CommandLineLimits.count)
            try CommandLineLimits.check(search.seedChoices, "--seed-choices", in: CommandLineLimits.count)
            try CommandLineLimits.check(search.objectiveWindows, "--objective-windows", in: CommandLineLimits.count)
            try CommandLineLimits.check(search.objectiveSeqlen, "--objective-seqlen", in: CommandLineLimits.seqlen)
            try CommandLineLimits.check(search.minDocumentTokens, "--min-document-tokens", in: CommandLineLimits.count)
            try CommandLineLimits.check(search.parallelTrials, "--parallel-trials", in: CommandLineLimits.count)
            guard search.gamma > 0, search.gamma < 1 else { throw ValidationError("--gamma must be in (0, 1)") }
            // The first trial is LLM-Pruner's own configuration with --samples sequences: a calibration size the
            // search cannot choose would silently become another one.
            if let samples, !search.sampleChoices.contains(samples) {
                throw ValidationError("--samples \(samples) is not one of --sample-choices \(search.sampleChoices.map(String.init).joined(separator: ",")) (AdaPruner's first trial uses --samples sequences); give one of them or add \(samples) to --sample-choices")
            }
        }
    }

    func searchSettings() throws -> AdaPrunerSettings {
        let s = structured
        let terms = try (adapruner.terms ?? "vector,el1").split(separator: ",").map { name -> TaylorTerm in
            guard let term = TaylorTerm(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--terms: unknown term \(name) (vector, el1, el2)")
            }
            return term
        }
        guard !terms.isEmpty, Set(terms).count == terms.count else { throw ValidationError("--terms must name distinct terms") }
        let sampleChoices = try numbers(adapruner.sampleChoices ?? "10,20,40", "--sample-choices").map { value -> Int in
            // Int(…) of a Double beyond Int.max traps: the range is checked first.
            guard value == value.rounded(), value <= Double(CommandLineLimits.samples.upperBound) else {
                throw ValidationError("--sample-choices must be whole numbers of sequences no larger than \(CommandLineLimits.samples.upperBound), got \(value)")
            }
            return Int(value)
        }
        // The defaults of the AdaPruner options (their help says so) are applied here, once.
        return AdaPrunerSettings(trials: adapruner.trials ?? 20, pool: URL(fileURLWithPath: adapruner.pool ?? calib!), searchSeed: adapruner.searchSeed ?? seed,
                                 minDocumentTokens: adapruner.minDocumentTokens ?? 128, sampleChoices: sampleChoices, seedChoices: adapruner.seedChoices ?? 8,
                                 terms: terms,
                                 betaChoices: [.vector: try numbers(adapruner.betaVector ?? "1,10,100", "--beta-vector"),
                                               .el1: try numbers(adapruner.betaEl1 ?? "1", "--beta-el1"), .el2: try numbers(adapruner.betaEl2 ?? "1", "--beta-el2")],
                                 objectiveWindows: adapruner.objectiveWindows ?? 16, objectiveSeqlen: adapruner.objectiveSeqlen ?? 128, gamma: adapruner.gamma ?? 0.25,
                                 startupTrials: adapruner.startupTrials ?? 6, parallelTrials: adapruner.parallelTrials ?? 4)
    }

    func runStructured() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        let s = structured
        var settings = StructuredPruneSettings(
            model: URL(fileURLWithPath: model), out: URL(fileURLWithPath: out), method: method, ratio: s.ratio!,
            importance: s.importance ?? .el1, aggregation: s.aggregation ?? .sum, calibration: URL(fileURLWithPath: calib!),
            samples: method == .adapruner ? try samples ?? searchSettings().sampleChoices[0] : resolvedSamples, seqlen: seqlen, seed: seed,
            calibrationDraw: s.calibDraw ?? CalibrationDraw.defaultDraw(for: URL(fileURLWithPath: calib!)),
            blocks: s.blockStart.map { $0...s.blockEnd! }, outputDType: dtype,
            reportURL: report.map { URL(fileURLWithPath: $0) }, search: method == .adapruner ? try searchSettings() : nil,
            recipe: try runRecipe().yaml())
        var result = try comm.abortingJobOnError {
            try RankConsistency.check(rankFingerprint(), comm: comm)
            settings.outputLock = try lockOutput(rank: comm.rank)
            let interruptions = handleInterruptions(lock: settings.outputLock, ranks: comm.size)
            defer { interruptions?.uninstall() }
            return try RunJournal.cleaningUpAfterFailure(lock: settings.outputLock, resuming: false, resumeCommand: "") {
                try StructuredPruneRun(settings: settings, comm: comm, logger: logger).run()
            }
        }
        // The smaller checkpoint evaluated over the same ranks; rank 0 rewrites the report and the model card.
        let evaluation = try evaluationSettings()
        try comm.abortingJobOnError {
            guard let evaluated = try evaluateOutput(evaluation, model: settings.model, out: settings.out, comm: comm, logger: logger) else { return }
            result.evaluation = evaluated.entries
            result.denseEvaluation = evaluated.dense
            guard comm.rank == 0 else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(result)
            for url in [settings.out.appendingPathComponent("prune-report.json")] + (settings.reportURL.map { [$0] } ?? []) {
                try writeFileAtomically(data, to: url)
            }
            try CheckpointCompanions.writeModelCard(reportData: data, folder: settings.out)
        }
        if comm.rank == 0 {
            // A structured run's report is JSON only (no HTML page renders it yet).
            let reports = RunReportFiles.jsonURLs(out: settings.out, extra: settings.reportURL)
            logger.info("output \(settings.out.path); report \(reports.map(\.path).joined(separator: " and "))")
            printLine(try jsonLine([
                "evaluation": result.evaluation ?? [:], "dense_evaluation": result.denseEvaluation ?? [:],
                "output": settings.out.path, "reports": reports.map(\.path), "method": result.method, "ratio": result.ratio,
                "parameters_before": result.parametersBefore, "parameters_after": result.parametersAfter,
                "block_linear_fraction_removed": result.blockLinearFractionRemoved,
                "pruned_blocks_fraction_removed": result.prunedBlocksFractionRemoved, "seconds": result.totalSeconds,
                "ranks": result.ranks, "samples": result.samples, "seqlen": result.seqlen,
            ]))
        }
    }
}
