import Engine
import Foundation
import Logging
import Worker

/// Everything a structured prune run (LLM-Pruner, AdaPruner) needs, resolved from the command line.
struct StructuredPruneSettings: Sendable {
    var model: URL
    var out: URL
    var method: PruneMethod
    var ratio: Double
    var importance: TaylorTerm
    var aggregation: GroupAggregation
    var calibration: URL
    var samples: Int
    var seqlen: Int
    var seed: Int
    /// How LLM-Pruner's calibration windows are drawn from `calibration`
    var calibrationDraw: CalibrationDraw
    /// nil: LLM-Pruner's default, blocks 4..N−3
    var blocks: ClosedRange<Int>?
    var outputDType: DType?
    var reportURL: URL?
    var search: AdaPrunerSettings?
    /// The run as a recipe (`prune --recipe`), embedded in the report and config.json.
    var recipe: String?
    /// Rank 0's lock on the output's partial folder, taken before any work (nil on other ranks).
    var outputLock: OutputLock?
}

/// The JSON report of a structured prune run.
struct StructuredReport: Codable, Sendable {
    struct Widths: Codable, Sendable {
        var layer: Int
        var heads: Int
        var kvHeads: Int
        var intermediate: Int
        enum CodingKeys: String, CodingKey {
            case layer, heads, intermediate
            case kvHeads = "kv_heads"
        }
    }

    var tool = "prune-dist"
    var version = PruneDistVersion.string
    var model: String
    var output: String
    var method: String
    var ratio: Double
    var importance: String?
    var aggregation: String
    var samples: Int
    var seqlen: Int
    var seed: Int
    /// LLM-Pruner's calibration draw (nil for AdaPruner, whose trials draw from the pool)
    var calibrationDraw: String?
    var ranks: Int
    var blockStart: Int
    var blockEnd: Int
    /// Mean NLL of the calibration batch the gradients were taken on
    var calibrationLoss: Double?
    var parametersBefore: Int
    var parametersAfter: Int
    var parametersRemoved: Int
    /// Parameters of the blocks' linears before, and the fraction of them removed
    var blockLinearParametersBefore: Int
    var blockLinearFractionRemoved: Double
    /// The fraction removed of the pruned blocks' linears only (the figure LLM-Pruner's paper reports)
    var prunedBlocksFractionRemoved: Double
    var layerWidths: [Widths]
    var kept: [StructuredKeep]
    /// Importance of every group of the pruned blocks (the chosen configuration's)
    var scores: [StructuredGroupScores]
    var gradientSeconds: Double
    var totalSeconds: Double
    var rankUsage: [RunReport.Rank]
    var search: AdaPrunerReport?
    /// Command line, version and commit, date, hosts, calibration file, dtypes and every option.
    var provenance: RunProvenance? = nil
    /// `prune --eval-*` on the output and on the dense input (same keys as RunReport's).
    var evaluation: [String: Double]? = nil
    var denseEvaluation: [String: Double]? = nil
    /// The run as a `prune --recipe` YAML file.
    var recipe: String? = nil

    enum CodingKeys: String, CodingKey {
        case tool, version, model, output, method, ratio, importance, aggregation, samples, seqlen, seed, ranks, kept, scores, search, provenance, recipe
        case evaluation, denseEvaluation = "dense_evaluation"
        case blockStart = "block_start", blockEnd = "block_end", calibrationLoss = "calibration_loss", calibrationDraw = "calibration_draw"
        case parametersBefore = "parameters_before", parametersAfter = "parameters_after", parametersRemoved = "parameters_removed"
        case blockLinearParametersBefore = "block_linear_parameters_before", blockLinearFractionRemoved = "block_linear_fraction_removed"
        case prunedBlocksFractionRemoved = "pruned_blocks_fraction_removed"
        case layerWidths = "layer_widths", gradientSeconds = "gradient_seconds", totalSeconds = "total_seconds", rankUsage = "rank_usage"
    }
}

/// One structured prune run on one rank: gradients of the calibration loss split over ranks and summed onto
/// rank 0, which scores the groups of every pruned block and chooses what to keep; the choice is broadcast,
/// and rank 0 writes the smaller checkpoint and the report.
final class StructuredPruneRun {
    let settings: StructuredPruneSettings
    let comm: Communicator
    let logger: Logger

    init(settings: StructuredPruneSettings, comm: Communicator, logger: Logger) {
        self.settings = settings
        self.comm = comm
        self.logger = logger
    }

    func run() throws -> StructuredReport {
        let start = Date()
        let checkpoint = try Checkpoint(directory: settings.model)
        let config = checkpoint.config
        let blocks = try settings.blocks ?? StructuredPruning.defaultBlocks(layers: config.numHiddenLayers)
        guard blocks.lowerBound >= 0, blocks.upperBound < config.numHiddenLayers else {
            throw PruneDistError(.argument, "blocks \(blocks.lowerBound)..\(blocks.upperBound) are outside the model's 0..\(config.numHiddenLayers - 1)")
        }
        let choice = try settings.search.map { try searched($0, checkpoint: checkpoint, blocks: blocks) }
            ?? llmPrunerChoice(checkpoint: checkpoint, blocks: blocks)

        let usage = RunReport.Rank(rank: comm.rank, host: comm.hostName, peakRSSBytes: peakResidentBytes(),
                                   cpuSeconds: processCPUSeconds(), sequences: 0)
        let usages = try comm.gather(usage, root: 0)  // [] on ranks other than 0
        var report = try makeReport(checkpoint: checkpoint, choice: choice, blocks: blocks, rankUsage: usages,
                                    totalSeconds: Date().timeIntervalSince(start))
        if comm.rank == 0 {
            guard let lock = settings.outputLock else {
                throw PruneDistError(.argument, "rank 0 writes the output and must hold its lock (settings.outputLock)")
            }
            report.recipe = settings.recipe
            report.provenance = try RunProvenance.make(settings: settings, calibration: settings.calibration, seed: settings.seed,
                                                       inputDType: checkpoint.storageDType, outputDType: settings.outputDType ?? checkpoint.storageDType,
                                                       hosts: report.rankUsage.map(\.host), start: start)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try StructuredOutputCheckpoint.write(source: checkpoint, keeps: choice.keeps, out: settings.out, lock: lock, dtype: settings.outputDType,
                                                 reportData: try encoder.encode(report), reportURL: settings.reportURL)
            logger.info("removed \(report.parametersRemoved) parameters (\(String(format: "%.1f", 100 * report.blockLinearFractionRemoved)) % of all block linears, \(String(format: "%.1f", 100 * report.prunedBlocksFractionRemoved)) % of the pruned blocks'): \(report.parametersBefore) → \(report.parametersAfter)")
        }
        try comm.barrier()
        return report
    }

    /// What was chosen and how: the kept groups, their scores, and the calibration they came from.
    private struct Choice {
        var keeps: [Int: StructuredKeep]
        var scores: [StructuredGroupScores]
        /// LLM-Pruner's calibration loss (nil for AdaPruner, whose trials report theirs)
        var calibrationLoss: Double?
        var gradientSeconds: Double
        /// The calibration the chosen groups came from (AdaPruner: its best trial's)
        var samples: Int
        var seed: Int
        /// LLM-Pruner's single importance term (nil for AdaPruner's mix)
        var importance: String?
        var search: AdaPrunerReport?
    }

    /// AdaPruner: the search's best trial.
    private func searched(_ search: AdaPrunerSettings, checkpoint: Checkpoint, blocks: ClosedRange<Int>) throws -> Choice {
        let result = try AdaPrunerSearch(settings: settings, search: search, checkpoint: checkpoint, blocks: blocks,
                                         comm: comm, logger: logger).run()
        return Choice(keeps: result.keeps, scores: result.scores, calibrationLoss: nil,
                      gradientSeconds: result.report.trials.reduce(0) { $0 + $1.gradientSeconds },
                      samples: result.report.best.samples, seed: result.report.best.calibrationSeed, importance: nil,
                      search: result.report)
    }

    /// LLM-Pruner: one importance term on the calibration windows.
    private func llmPrunerChoice(checkpoint: Checkpoint, blocks: ClosedRange<Int>) throws -> Choice {
        let windows = try CalibrationSource.windows(url: settings.calibration, modelDirectory: settings.model,
                                                    vocabSize: checkpoint.config.vocabSize, samples: settings.samples, seqlen: settings.seqlen, seed: settings.seed,
                                                    draw: settings.calibrationDraw)
        if comm.rank == 0 {
            logger.info("llm-pruner: \(settings.importance.rawValue) importance, ratio \(settings.ratio), blocks \(blocks.lowerBound)..\(blocks.upperBound), \(windows.count) sequences of \(settings.seqlen) tokens over \(comm.size) rank(s)")
        }
        let t = Date()
        let terms = try TaylorTermsOverRanks.compute(checkpoint: checkpoint, windows: windows, seqlen: settings.seqlen,
                                                     blocks: blocks, fisher: settings.importance == .el2, comm: comm)
        let gradientSeconds = Date().timeIntervalSince(t)
        let chosen = try TaylorTermsOverRanks.choose(terms: terms, mix: .single(settings.importance),
                                                     aggregation: settings.aggregation, ratio: settings.ratio, comm: comm)
        return Choice(keeps: chosen.keeps, scores: chosen.scores, calibrationLoss: terms.meanNLL, gradientSeconds: gradientSeconds,
                      samples: settings.samples, seed: settings.seed, importance: settings.importance.rawValue, search: nil)
    }

    private func makeReport(checkpoint: Checkpoint, choice: Choice, blocks: ClosedRange<Int>, rankUsage: [RunReport.Rank],
                            totalSeconds: Double) throws -> StructuredReport {
        let keeps = choice.keeps
        let config = checkpoint.config
        let before = try checkpoint.tensorNames.reduce(0) { $0 + (try checkpoint.info($1)).count }
        var linearBefore = 0, linearAfter = 0, prunedBefore = 0
        var widths: [StructuredReport.Widths] = []
        for layer in 0..<config.numHiddenLayers {
            let w0 = config.widths(ofLayer: layer)
            let w1 = StructuredOutputCheckpoint.layerWidths(config: config, layer: layer, keep: keeps[layer])
            linearBefore += StructuredPruning.linearParameters(hidden: config.hiddenSize, headDim: config.headDim, heads: w0.numAttentionHeads,
                                                               kvHeads: w0.numKeyValueHeads, intermediate: w0.intermediateSize,
                                                               attentionBias: config.attentionBias)
            linearAfter += StructuredPruning.linearParameters(hidden: config.hiddenSize, headDim: config.headDim, heads: w1.numAttentionHeads,
                                                              kvHeads: w1.numKeyValueHeads, intermediate: w1.intermediateSize,
                                                              attentionBias: config.attentionBias)
            if blocks.contains(layer) {
                prunedBefore += StructuredPruning.linearParameters(hidden: config.hiddenSize, headDim: config.headDim, heads: w0.numAttentionHeads,
                                                                   kvHeads: w0.numKeyValueHeads, intermediate: w0.intermediateSize,
                                                                   attentionBias: config.attentionBias)
            }
            widths.append(.init(layer: layer, heads: w1.numAttentionHeads, kvHeads: w1.numKeyValueHeads, intermediate: w1.intermediateSize))
        }
        let removed = linearBefore - linearAfter
        return StructuredReport(model: settings.model.path, output: settings.out.path, method: settings.method.rawValue,
                                ratio: settings.ratio, importance: choice.importance, aggregation: settings.aggregation.rawValue,
                                samples: choice.samples, seqlen: settings.seqlen, seed: choice.seed,
                                calibrationDraw: settings.search == nil ? settings.calibrationDraw.rawValue : nil, ranks: comm.size,
                                blockStart: blocks.lowerBound, blockEnd: blocks.upperBound, calibrationLoss: choice.calibrationLoss,
                                parametersBefore: before, parametersAfter: before - removed, parametersRemoved: removed,
                                blockLinearParametersBefore: linearBefore,
                                blockLinearFractionRemoved: Double(removed) / Double(max(linearBefore, 1)),
                                prunedBlocksFractionRemoved: Double(removed) / Double(max(prunedBefore, 1)),
                                layerWidths: widths, kept: keeps.sorted { $0.key < $1.key }.map(\.value), scores: choice.scores,
                                gradientSeconds: choice.gradientSeconds, totalSeconds: totalSeconds, rankUsage: rankUsage, search: choice.search)
    }
}

/// The per-structure Taylor terms of the pruned blocks, from gradients computed over every rank (held on rank 0),
/// and the choice of kept groups made from them on rank 0 and broadcast.
enum TaylorTermsOverRanks {
    struct Terms {
        /// On rank 0 only: by layer
        var blocks: [Int: TaylorImportance.BlockTerms]
        var meanNLL: Double
        var sequences: Int
    }

    /// windows: every rank's [count][seqlen]; rank r differentiates those with index ≡ r (mod size)
    static func compute(checkpoint: Checkpoint, windows: [[Int]], seqlen: Int, blocks: ClosedRange<Int>, fisher: Bool,
                        comm: Communicator) throws -> Terms {
        let mine = comm.shard(windows)
        var terms: [Int: TaylorImportance.BlockTerms] = [:]
        let result = try DistributedGradients.compute(checkpoint: checkpoint, mine: mine, seqlen: seqlen, totalSequences: windows.count,
                                                      perSequenceSquares: fisher, layers: Set(blocks), comm: comm, root: 0) { sums in
            let block = try LlamaBlockWeights(checkpoint: checkpoint, layer: sums.layer, checkFinite: true)
            terms[sums.layer] = TaylorImportance.blockTerms(block: block, gradients: sums)
        }
        return Terms(blocks: terms, meanNLL: result.nllSum / Double(result.predictions), sequences: windows.count)
    }

    /// The kept groups of every pruned block (on every rank) and their scores (on rank 0).
    static func choose(terms: Terms, mix: ImportanceMix, aggregation: GroupAggregation, ratio: Double,
                       comm: Communicator) throws -> (keeps: [Int: StructuredKeep], scores: [StructuredGroupScores]) {
        var scores: [StructuredGroupScores] = []
        var keeps: [StructuredKeep] = []
        if comm.rank == 0 {
            for layer in terms.blocks.keys.sorted() {
                let blockTerms = terms.blocks[layer]!
                let s = TaylorImportance.groupScores(terms: blockTerms, mix: mix, aggregation: aggregation)
                scores.append(s)
                keeps.append(TaylorImportance.keep(scores: s, heads: blockTerms.heads, headDim: blockTerms.headDim, ratio: ratio))
            }
        }
        keeps = try comm.broadcast(keeps, root: 0)
        return (Dictionary(uniqueKeysWithValues: keeps.map { ($0.layer, $0) }), scores)
    }
}
