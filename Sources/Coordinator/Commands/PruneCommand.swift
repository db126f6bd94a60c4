import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist prune`: unstructured and N:M pruning, distributed over MPI ranks.
struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Prune a model over MPI ranks: unstructured or N:M (magnitude, wanda, sparsegpt, krp) or structured (llm-pruner, adapruner).",
        discussion: """
        Six methods. Unstructured and N:M, one block at a time, every linear: magnitude (|W|), wanda (|W|·‖x‖), \
        sparsegpt (OBS with the Hessian), krp (SparseGPT toward the dense outputs with a ridge-regularised refit). \
        Structured, whole KV groups and MLP channels by Taylor importance: llm-pruner, and adapruner (a TPE search \
        over calibration subsets and importance mixes). Options apply to the family their group names; others are \
        refused by name.

        Under mpirun every rank takes the calibration sequences i ≡ rank (mod size), statistics are reduced to the \
        rank that owns each linear, owners solve and broadcast. --recipe FILE.yaml runs a recipe (every report \
        embeds its own). --seqlen defaults to 512 tokens here, for --eval-seqlen, `eval perplexity` and `plan` alike.

        Exit codes: 0 done, 64 refused command line, 1 refused input or failed run, 130/143 interrupted; what each \
        leaves on disk and how to --resume: docs/operators.md. Shell completion: \
        prune-dist --generate-completion-script bash|zsh|fish.
        """)

    @OptionGroup(title: "Common (every method)") var common: PruneCommonOptions

    @OptionGroup(title: "Unstructured and N:M (magnitude, wanda, sparsegpt, krp)") var unstructured: UnstructuredPruneOptions

    @OptionGroup(title: "Structured (llm-pruner, adapruner)") var structured: StructuredPruneOptions

    @OptionGroup(title: "AdaPruner's search (adapruner)") var adapruner: AdaPrunerOptions

    @OptionGroup(title: "Evaluation of the result (every method)") var evaluation: PruneEvaluationOptions

    @OptionGroup(title: "Adversarial attack of the result (every method)") var attackEvaluation: AttackEvaluationOptions

    @OptionGroup(title: "Cluster (unstructured methods)") var cluster: PruneClusterOptions

    @OptionGroup(title: "Process") var global: GlobalOptions

    // The grouped options by name (PruneOptionGroups.swift).
    var model: String { common.model }
    var out: String { common.out }
    var method: PruneMethod { common.method }
    var calib: String? { common.calib }
    var samples: Int? { common.samples }
    var seqlen: Int { common.seqlen }
    var seed: Int { common.seed }
    var recipe: String? { common.recipe }
    var report: String? { common.report }
    var dtype: DType? { common.dtype }
    var sparsity: Double? { unstructured.sparsity }
    var pattern: SparsityPattern? { unstructured.pattern }
    var trueSequential: Bool? { unstructured.trueSequential }
    var blocksize: Int? { unstructured.blocksize }
    var percdamp: Double? { unstructured.percdamp }
    var krpRidge: String { unstructured.krpRidge }
    var krpRidgePerInput: Bool { unstructured.krpRidgePerInput }
    var krpCorrection: Double { unstructured.krpCorrection }
    var allocation: SparsityAllocation { unstructured.allocation }
    var owlThreshold: Double { unstructured.owlThreshold }
    var owlLambda: Double { unstructured.owlLambda }
    var ignore: [String] { unstructured.ignore }
    var sparsityOverride: [String] { unstructured.sparsityOverride }
    var evalText: [String] { evaluation.evalText }
    var evalMaxWindows: Int? { evaluation.evalMaxWindows }
    var evalSeqlen: Int? { evaluation.evalSeqlen }
    var evalTasks: String? { evaluation.evalTasks }
    var evalData: String? { evaluation.evalData }
    var evalLimit: Int? { evaluation.evalLimit }
    var noDenseEval: Bool { evaluation.noDenseEval }
    var resume: Bool { cluster.resume }
    var weights: WeightsSource { cluster.weights }

    var resolvedSamples: Int { samples ?? 128 }
    var resolvedBlocksize: Int { blocksize ?? 128 }
    var resolvedPercdamp: Double { percdamp ?? 0.01 }
    var resolvedEvalSeqlen: Int { evalSeqlen ?? 512 }

    /// Everything that can be checked before a model is read: options, limits, and the files named.
    func validate() throws {
        try checkMethodOptions()
        try checkLimits()
        if method.isStructured { try validateStructured() } else { try validateUnstructured() }
        try checkEvaluationOptions()
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
                      trueSequential: try trueSequential ?? method.trueSequentialByDefault(pattern: sparsityPattern()), blocksize: resolvedBlocksize, percdamp: resolvedPercdamp,
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
        let evaluation = try evaluationSettings()
        try comm.abortingJobOnError {
            if let result = try evaluateOutput(evaluation, model: settings.model, out: settings.out, comm: comm, logger: logger) {
                report.evaluation = result.entries
                report.denseEvaluation = result.dense
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
