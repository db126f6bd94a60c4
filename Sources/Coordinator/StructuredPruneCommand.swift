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

    @Option(name: .long, help: "Structured: importance el1 (element-wise 1st order), el2 (adds the Fisher term), vector.")
    var importance: TaylorTerm = .el1

    @Option(name: .long, help: "Structured: aggregation over a group's structures: sum, prod, max, last.")
    var aggregation: GroupAggregation = .sum

    @Option(name: .long, help: "LLM-Pruner: how calibration windows are drawn: documents (LLM-Pruner's own: one window in each of --samples random documents of at least --seqlen tokens; the default for text and JSONL) or stream (anywhere in the token stream, as SparseGPT and Wanda; the default for token files).")
    var calibDraw: CalibrationDraw?

    @Option(name: .long, help: "Structured: first pruned block (default 4).")
    var blockStart: Int?

    @Option(name: .long, help: "Structured: last pruned block, inclusive (default N−3).")
    var blockEnd: Int?

    @Option(name: .long, help: "AdaPruner: number of TPE trials.")
    var trials: Int = 20

    @Option(name: .long, help: "AdaPruner: pool of documents for calibration subsets and the held-out objective (default: --calib).")
    var pool: String?

    @Option(name: .long, help: "AdaPruner: seed of the search (default: --seed).")
    var searchSeed: Int?

    @Option(name: .long, help: "AdaPruner: documents shorter than this many tokens are left out of the pool.")
    var minDocumentTokens: Int = 128

    @Option(name: .long, help: "AdaPruner: calibration sizes the search chooses from (sequences of --seqlen).")
    var sampleChoices: String = "10,20,40"

    @Option(name: .long, help: "AdaPruner: number of calibration seeds the search chooses from.")
    var seedChoices: Int = 8

    @Option(name: .long, help: "AdaPruner: importance terms mixed (comma-separated: vector, el1, el2).")
    var terms: String = "vector,el1"

    @Option(name: .long, help: "AdaPruner: alignment factors β of the vector term.")
    var betaVector: String = "1,10,100"

    @Option(name: .long, help: "AdaPruner: alignment factors β of the el1 term.")
    var betaEl1: String = "1"

    @Option(name: .long, help: "AdaPruner: alignment factors β of the el2 term.")
    var betaEl2: String = "1"

    @Option(name: .long, help: "AdaPruner: held-out pool windows the objective perplexity is measured on.")
    var objectiveWindows: Int = 16

    @Option(name: .long, help: "AdaPruner: tokens per objective window.")
    var objectiveSeqlen: Int = 128

    @Option(name: .long, help: "AdaPruner: TPE's γ quantile (fraction of trials counted as good).")
    var gamma: Double = 0.25

    @Option(name: .long, help: "AdaPruner: trials drawn at random before TPE proposes (the first trial is always LLM-Pruner el1).")
    var startupTrials: Int = 6

    @Option(name: .long, help: "AdaPruner: K, trials proposed per TPE round (constant liar) and run side by side on min(K, ranks) groups of ranks. The search depends on --search-seed and K only, not on the number of ranks; 1 runs trials one after another.")
    var parallelTrials: Int = 4
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
        guard samples > 0 else { throw ValidationError("--samples must be positive, got \(samples)") }
        guard seqlen > 1 else { throw ValidationError("--seqlen must be at least 2, got \(seqlen)") }
        if (s.blockStart == nil) != (s.blockEnd == nil) { throw ValidationError("give both --block-start and --block-end, or neither") }
        if let a = s.blockStart, let b = s.blockEnd, a > b || a < 0 { throw ValidationError("--block-start \(a) … --block-end \(b) is not a block range") }
        if let dtype, DType(torchName: dtype) == nil || !(DType(torchName: dtype)!.isWeightType) {
            throw ValidationError("--dtype must be bf16, f16 or f32, got \(dtype)")
        }
        if method == .adapruner {
            guard s.calibDraw == nil else {
                throw ValidationError("--calib-draw is for --method llm-pruner; AdaPruner's trials draw their windows from the pool's documents")
            }
            guard s.trials >= 1 else { throw ValidationError("--trials must be at least 1") }
            guard s.seedChoices >= 1, s.objectiveWindows >= 1, s.objectiveSeqlen >= 2, s.minDocumentTokens >= 1 else {
                throw ValidationError("--seed-choices, --objective-windows, --min-document-tokens must be positive and --objective-seqlen at least 2")
            }
            guard s.gamma > 0, s.gamma < 1 else { throw ValidationError("--gamma must be in (0, 1)") }
            guard s.parallelTrials >= 1 else { throw ValidationError("--parallel-trials must be at least 1, got \(s.parallelTrials)") }
            _ = try searchSettings()
        }
    }

    func searchSettings() throws -> AdaPrunerSettings {
        let s = structured
        let terms = try s.terms.split(separator: ",").map { name -> TaylorTerm in
            guard let term = TaylorTerm(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--terms: unknown term \(name) (vector, el1, el2)")
            }
            return term
        }
        guard !terms.isEmpty, Set(terms).count == terms.count else { throw ValidationError("--terms must name distinct terms") }
        let sampleChoices = try numbers(s.sampleChoices, "--sample-choices").map { Int($0) }
        return AdaPrunerSettings(trials: s.trials, pool: URL(fileURLWithPath: s.pool ?? calib!), searchSeed: s.searchSeed ?? seed,
                                 minDocumentTokens: s.minDocumentTokens, sampleChoices: sampleChoices, seedChoices: s.seedChoices,
                                 terms: terms,
                                 betaChoices: [.vector: try numbers(s.betaVector, "--beta-vector"), .el1: try numbers(s.betaEl1, "--beta-el1"),
                                               .el2: try numbers(s.betaEl2, "--beta-el2")],
                                 objectiveWindows: s.objectiveWindows, objectiveSeqlen: s.objectiveSeqlen, gamma: s.gamma,
                                 startupTrials: s.startupTrials, parallelTrials: s.parallelTrials)
    }

    func runStructured() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        var logger = try global.makeLogger()
        if comm.rank != 0 { logger.logLevel = max(logger.logLevel, .warning) }
        let s = structured
        let settings = StructuredPruneSettings(
            model: URL(fileURLWithPath: model), out: URL(fileURLWithPath: out), method: method, ratio: s.ratio!,
            importance: s.importance, aggregation: s.aggregation, calibration: URL(fileURLWithPath: calib!),
            samples: samples, seqlen: seqlen, seed: seed,
            calibrationDraw: s.calibDraw ?? CalibrationDraw.defaultDraw(for: URL(fileURLWithPath: calib!)),
            blocks: s.blockStart.map { $0...s.blockEnd! }, outputDType: dtype.flatMap { DType(torchName: $0) },
            reportURL: report.map { URL(fileURLWithPath: $0) }, search: method == .adapruner ? try searchSettings() : nil)
        let result = try comm.abortingJobOnError {
            try StructuredPruneRun(settings: settings, comm: comm, logger: logger).run()
        }
        if comm.rank == 0 {
            printLine(try jsonLine([
                "output": settings.out.path, "method": result.method, "ratio": result.ratio,
                "parameters_before": result.parametersBefore, "parameters_after": result.parametersAfter,
                "block_linear_fraction_removed": result.blockLinearFractionRemoved,
                "pruned_blocks_fraction_removed": result.prunedBlocksFractionRemoved, "seconds": result.totalSeconds,
                "ranks": result.ranks, "samples": result.samples, "seqlen": result.seqlen,
            ]))
        }
    }
}
