import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist prune`: unstructured and N:M pruning, distributed over MPI ranks.
struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Prune every linear of every block (magnitude, Wanda, SparseGPT, KRP), one block at a time, over MPI ranks.",
        discussion: """
        Run as one process, or under mpirun: every rank takes the calibration sequences i ≡ rank (mod size), \
        statistics are reduced to the rank that owns each linear, owners solve and broadcast.
        """)

    @Option(name: .long, help: "Hugging Face model directory to prune.")
    var model: String

    @Option(name: .long, help: "Output directory (written under a temporary name, renamed when complete).")
    var out: String

    @Option(name: .long, help: "Pruning method: \(PruneMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: PruneMethod

    @Option(name: .long, help: "Fraction of each linear's weights set to zero (unstructured), in [0, 1).")
    var sparsity: Double?

    @Option(name: .long, help: "N:M semi-structured pattern, e.g. 2:4 or 4:8 (N of every M consecutive inputs zeroed).",
            transform: SparsityPattern.commandLinePattern)
    var pattern: SparsityPattern?

    @Option(name: .long, help: "Calibration data: plain text, JSONL (field \"text\"), token ids (.u16 or JSON array), or .u16 windows.")
    var calib: String?

    // .unconditional: `--samples -1` reaches the range check (a positive integer) instead of "missing value".
    // Optional so that AdaPruner can default to its first --sample-choices; the default is applied below.
    @Option(name: .long, parsing: .unconditional, help: "Number of calibration sequences (default: 128; AdaPruner: the first of --sample-choices, and it must be one of them).")
    var samples: Int?

    @Option(name: .long, parsing: .unconditional, help: "Tokens per calibration sequence.")
    var seqlen: Int = 512

    @Option(name: .long, help: "Seed for drawing calibration windows.")
    var seed: Int = 0

    @Flag(name: .long, inversion: .prefixedNo, help: "Collect statistics again between q,k,v → o → gate,up → down (default: on for KRP, off otherwise).")
    var trueSequential: Bool?

    // Optional so that giving it to a method that does not use it can be refused; the default is applied below.
    @Option(name: .long, help: "SparseGPT/KRP column block size (default: 128).")
    var blocksize: Int?

    @Option(name: .long, help: "SparseGPT/KRP dampening, as a fraction of the mean Hessian diagonal (default: 0.01).")
    var percdamp: Double?

    @Option(name: .long, help: "KRP: ridge λ pulling the rectified weight toward the dense one, relative to each input's mean square (legacy: the authors' ridge toward zero, ladder 1e-4…1).")
    var krpRidge: String = "3"

    @Flag(name: .long, inversion: .prefixedNo, help: "KRP: scale the ridge by each input's own mean square (diag Ĥ), not by their mean.")
    var krpRidgePerInput = true

    @Option(name: .long, help: "KRP: fraction α of the cumulative-error correction applied (0 = SparseGPT on the dense weights, 1 = the full refit; default 0.3).")
    var krpCorrection: Double = 0.3

    @Option(name: .long, help: "How the target --sparsity is spread over blocks: uniform, or owl (outlier-weighed, Yin et al. 2024).")
    var allocation: SparsityAllocation = .uniform

    @Option(name: .long, help: "OWL outlier threshold M: a Wanda score above M × its block's mean counts as an outlier.")
    var owlThreshold: Double = 5

    @Option(name: .long, help: "OWL λ: block sparsities range over the target ± λ.")
    var owlLambda: Double = 0.08

    @Option(name: .long, help: ArgumentHelp("Unstructured: leave this linear dense; a module name (model.layers.3.mlp.down_proj) or re:REGEX matching whole names (re:.*down_proj); repeatable.", valueName: "target"))
    var ignore: [String] = []

    @Option(name: .long, help: ArgumentHelp("Unstructured: prune the linears matching TARGET (as --ignore) to SPARSITY or N:M instead of the run's; the last matching override wins; repeatable.", valueName: "target=sparsity"))
    var sparsityOverride: [String] = []

    @Option(name: .long, help: ArgumentHelp("Read the method, its sparsity/pattern/ratio, calibration, options, ignore list and overrides from a YAML recipe (every run report embeds its own); options in the recipe may not be given again on the command line.", valueName: "file.yaml"))
    var recipe: String?

    @Option(name: .long, help: "Write the JSON run report here (default: OUT/prune-report.json).")
    var report: String?

    @Option(name: .long, help: "Output dtype: bf16, f16 or f32 (default: the input's).", transform: DType.commandLineWeightType)
    var dtype: DType?

    @Option(name: .long, help: "Evaluate perplexity of the result on this text (or .u16 token) file; repeat for several (e.g. in-domain and out-of-domain texts).")
    var evalText: [String] = []

    @Option(name: .long, help: "Evaluate only the first K windows of each --eval-text (as eval perplexity --max-windows).")
    var evalMaxWindows: Int?

    @Option(name: .long, help: "Sequence length for --eval-text perplexity (default: 512).")
    var evalSeqlen: Int?

    @Option(name: .long, help: "Zero-shot tasks to evaluate the result on, e.g. boolq,piqa,hellaswag (or all); needs --eval-data.")
    var evalTasks: String?

    @Option(name: .long, help: "Folder of zero-shot task files for --eval-tasks.")
    var evalData: String?

    @Option(name: .long, help: "Evaluate only the first N documents of each --eval-tasks task.")
    var evalLimit: Int?

    @Flag(name: .long, help: "With --eval-*: do not evaluate the dense input model for comparison (by default it is evaluated once and cached in the output's parent folder).")
    var noDenseEval = false

    @Flag(name: .long, help: "Continue an interrupted run with the same fingerprint after its last finished block (the same --out).")
    var resume = false

    @Option(name: .long, help: "Where ranks get weights: shared (every rank reads --model) or broadcast (only rank 0 reads; blocks are broadcast).")
    var weights: WeightsSource = .shared

    @OptionGroup var structured: StructuredPruneOptions

    @OptionGroup var global: GlobalOptions

    var resolvedSamples: Int { samples ?? 128 }
    var resolvedBlocksize: Int { blocksize ?? 128 }
    var resolvedPercdamp: Double { percdamp ?? 0.01 }
    var resolvedEvalSeqlen: Int { evalSeqlen ?? 512 }

    /// Everything that can be checked before a model is read: options, limits, and the files named.
    func validate() throws {
        try checkMethodOptions()
        try checkLimits()
        if method.isStructured { try validateStructured() } else { try validateUnstructured() }
        try checkPaths()
    }

    private func validateUnstructured() throws {
        _ = try sparsityPattern()
        _ = try linearRules()
        _ = try krpRectification()
        if allocation == .owl {
            if let pattern { throw ValidationError("--allocation owl spreads an unstructured --sparsity over blocks; it does not apply to --pattern \(pattern)") }
            guard owlThreshold.isFinite, owlThreshold > 0 else { throw ValidationError("--owl-threshold must be a positive number, got \(owlThreshold)") }
            guard owlLambda.isFinite, owlLambda >= 0, owlLambda < 0.5 else { throw ValidationError("--owl-lambda must be in [0, 0.5), got \(owlLambda)") }
            if let sparsity, sparsity - owlLambda < 0 || sparsity + owlLambda >= 1 {
                throw ValidationError("--sparsity \(sparsity) ± --owl-lambda \(owlLambda) leaves [0, 1); lower --owl-lambda")
            }
        }
        if method != .magnitude, calib == nil { throw ValidationError("--method \(method.rawValue) needs calibration data: --calib FILE") }
        if evalTasks != nil, evalData == nil { throw ValidationError("--eval-tasks needs --eval-data DIR (the task files)") }
        if let evalTasks { do { _ = try DistributedEvaluation.parseTasks(evalTasks) } catch let error as PruneDistError { throw ValidationError(error.message) } }
        // Evaluation inputs are checked now rather than after a long run.
        for text in evalText where !FileManager.default.fileExists(atPath: text) { throw ValidationError("--eval-text \(text): no such file") }
        if let evalMaxWindows, evalMaxWindows < 1 { throw ValidationError("--eval-max-windows must be at least 1, got \(evalMaxWindows)") }
        if let evalTasks, let evalData, let tasks = try? DistributedEvaluation.parseTasks(evalTasks) {
            for task in tasks where !FileManager.default.fileExists(atPath: URL(fileURLWithPath: evalData).appendingPathComponent(task.fileName).path) {
                throw ValidationError("--eval-data \(evalData): no \(task.fileName) for task \(task.rawValue)")
            }
        }
    }

    /// Exactly one of --sparsity and --pattern (each already parsed), as a pattern.
    func sparsityPattern() throws -> SparsityPattern {
        do {
            return try SparsityPattern.resolve(sparsity: sparsity, pattern: pattern)
        } catch let error as PruneDistError {
            throw ValidationError(error.message)
        }
    }

    /// --ignore and --sparsity-override, parsed.
    func linearRules() throws -> LinearRules {
        try asValidationError {
            for target in ignore { try LinearRules.checkTarget(target, option: "--ignore") }
            return LinearRules(ignore: ignore, overrides: try sparsityOverride.map(LinearRules.parseOverride))
        }
    }

    func settings() throws -> PruneSettings {
        PruneSettings(model: URL(fileURLWithPath: model), out: URL(fileURLWithPath: out), method: method,
                      pattern: try sparsityPattern(),
                      calibration: calib.map { URL(fileURLWithPath: $0) }, samples: resolvedSamples, seqlen: seqlen, seed: seed,
                      trueSequential: trueSequential ?? (method == .krp), blocksize: resolvedBlocksize, percdamp: resolvedPercdamp,
                      krpRectification: try krpRectification(), allocation: allocation,
                      owl: OWLSettings(threshold: owlThreshold, spread: owlLambda),
                      linearRules: try linearRules(), recipe: try runRecipe().yaml(),
                      outputDType: dtype,
                      reportURL: report.map { URL(fileURLWithPath: $0) })
    }

    func krpRectification() throws -> KRPRectification {
        if krpRidge == "legacy" { return .legacy }
        guard let ratio = Double(krpRidge), ratio.isFinite, ratio >= 0 else {
            throw ValidationError("--krp-ridge must be legacy or a non-negative number, got \(krpRidge)")
        }
        guard krpCorrection.isFinite, krpCorrection >= 0 else {
            throw ValidationError("--krp-correction must be a non-negative number, got \(krpCorrection)")
        }
        return .towardDense(ratio: ratio, correction: krpCorrection, perInput: krpRidgePerInput)
    }

    func run() throws {
        if method.isStructured { return try runStructured() }
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        var settings = try settings()
        settings.resume = resume
        settings.weights = weights
        var report = try comm.abortingJobOnError {
            try RankConsistency.check(rankFingerprint(), comm: comm)
            settings.outputLock = try lockOutput(rank: comm.rank)
            let interruptions = handleInterruptions(lock: settings.outputLock, ranks: comm.size)
            defer { interruptions?.uninstall() }
            return try RunJournal.cleaningUpAfterFailure(lock: settings.outputLock, resuming: resume, resumeCommand: resumeCommand(ranks: comm.size)) {
                try PruneRun(settings: settings, comm: comm, logger: logger).run()
            }
        }
        settings.outputLock = nil  // the output is in place; the lock file went with it
        // The result evaluated over the same ranks, then the JSON and HTML reports (re)written by rank 0.
        let evaluation = PruneRunEvaluation(texts: evalText.map { URL(fileURLWithPath: $0) }, seqlen: resolvedEvalSeqlen, maxWindows: evalMaxWindows,
                                            tasks: try evalTasks.map(DistributedEvaluation.parseTasks) ?? [],
                                            data: evalData.map { URL(fileURLWithPath: $0) }, limit: evalLimit)
        try comm.abortingJobOnError {
            if !evaluation.isEmpty {
                let result = try evaluation.evaluate(model: settings.out, comm: comm, logger: logger)
                report.evaluation = result.entries
                if comm.rank == 0 { result.lines.forEach(printLine) }
                if !noDenseEval, let dense = try DenseEvaluation.entries(evaluation: evaluation, model: settings.model, out: settings.out,
                                                                        weights: weights, comm: comm, logger: logger) {
                    report.denseEvaluation = dense.entries
                    if comm.rank == 0 { DenseEvaluation.comparisonLines(dense: dense.entries, pruned: result.entries).forEach(printLine) }
                }
            }
            if comm.rank == 0 {
                try RunReportFiles.write(report, jsonURLs: RunReportFiles.jsonURLs(out: settings.out, extra: settings.reportURL))
                if !evaluation.isEmpty { try CheckpointCompanions.writeModelCard(reportData: report.jsonData(), folder: settings.out) }
            }
        }
        let reports = RunReportFiles.reportURLs(out: settings.out, extra: settings.reportURL)
        if comm.rank == 0 {
            logger.info("output \(settings.out.path); reports \(reports.map(\.path).joined(separator: " and "))")
            printLine(try jsonLine([
                "output": settings.out.path, "reports": reports.map(\.path), "method": report.method, "pattern": report.pattern,
                "overall_sparsity": report.overallSparsity, "seconds": report.totalSeconds, "ranks": report.ranks,
                "samples": report.samples, "seqlen": report.seqlen, "evaluation": report.evaluation ?? [:],
                "dense_evaluation": report.denseEvaluation ?? [:],
            ]))
        }
    }
}
