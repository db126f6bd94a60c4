import ArgumentParser
import Engine
import Foundation

/// The pruning methods prune-dist runs.
public enum PruneMethod: String, CaseIterable, ExpressibleByArgument, Codable, Sendable {
    case magnitude, wanda, sparsegpt, krp
    /// Structured (whole heads and MLP channels, Taylor importance from gradients): StructuredPruneRun.
    case llmPruner = "llm-pruner", adapruner

    var isStructured: Bool { self == .llmPruner || self == .adapruner }
}

/// What each unstructured method is, in one place: the sums over a linear's input it needs (every rank collects
/// them on its sequences, they are reduced to the linear's owner) and how the owner solves with them. PruneRun,
/// the ownership plan and the memory plan read these; a new method is a new case here and its solver in Engine.
extension PruneMethod {
    /// Which statistics of each linear input the method needs.
    var statistics: StatisticsNeeds {
        switch self {
        case .magnitude: return .none
        case .wanda: return StatisticsNeeds(columnNorms: true)
        case .sparsegpt: return StatisticsNeeds(hessian: true)
        case .krp: return StatisticsNeeds(hessian: true, cross: true)
        case .llmPruner, .adapruner: return .none
        }
    }

    /// Whether statistics are collected phase by phase (q,k,v → o → gate,up → down, each phase's inputs from the
    /// linears already pruned) when `--[no-]true-sequential` is not given. KRP's refit needs the pruned inputs.
    /// Unstructured SparseGPT costs one forward per block instead of the reference's two (0.25 × the reference's time,
    /// against 0.45 ×) and scored no worse on any figure measured; at N:M its perplexities averaged over three dampings
    /// were worse (python 7 %), so N:M keeps the reference's order (bench/README.md, "SparseGPT's default"). Wanda
    /// phase by phase is mixed (worse wiki and zero-shot, better out of domain); magnitude reads no input.
    func trueSequentialByDefault(pattern: SparsityPattern?) -> Bool {
        switch self {
        case .krp: return true
        case .sparsegpt: if case .nOfM? = pattern { return false } else { return true }
        default: return false
        }
    }

    /// The statistics of `input`'s values: `statistics`, with KRP's cross term taken against the dense outputs when
    /// the input feeds down_proj and down_proj has fewer outputs than inputs (StatisticsNeeds.crossOutputs: the same
    /// refit, the cross term's GEMM and memory smaller by outputs/inputs; the dense trace keeps down's outputs).
    /// - shape: [outputs, inputs] of each linear of the block
    func statistics(for input: LlamaLinearInput, shape: (LlamaLinear) -> [Int]) -> StatisticsNeeds {
        var needs = statistics
        if needs.cross && input == .mlpHidden {
            let down = shape(.down)
            if down[0] < down[1] { needs.crossOutputs = down[0] }
        }
        return needs
    }

    /// KRP's target is the dense model's output, so it runs the dense stream beside the pruned one.
    var needsDenseStream: Bool { self == .krp }

    /// Input-width square matrices an owner holds per linear input (the Hessian, and KRP's cross term): what the
    /// ownership plan weighs a linear by (down_proj's cross term is hidden × n, less: the weight is an upper bound).
    var statisticsPerInput: Int { self == .krp ? 2 : 1 }

    /// Whether several ranks can solve one linear together, each on a band of its rows (RowBand): the methods whose
    /// solve is worth sharing, the OBS ones.
    var splitsRows: Bool { self == .sparsegpt || self == .krp }

    /// Prunes one linear.
    /// - weight: [rows, columns] as `shape` says; statistics: its input's sums, normalised (nil for magnitude)
    /// - band: this rank's rows when several solve the linear (`splitsRows` methods only); `weight` holds those rows
    func prune(weight: [Float], shape: [Int], statistics: InputStatistics?, pattern: SparsityPattern,
               settings: PruneSettings, band: RowBand? = nil) throws -> PruneResult {
        func collected() throws -> InputStatistics {
            guard let statistics, statistics.needs.hessian == self.statistics.hessian, statistics.needs.cross == self.statistics.cross,
                  statistics.needs.columnNorms == self.statistics.columnNorms else {
                throw PruneDistError(.argument, "\(rawValue): the statistics of the linear's input it needs were not collected")
            }
            return statistics
        }
        if band != nil && !splitsRows {
            throw PruneDistError(.argument, "\(rawValue) solves a linear on one rank; it has no row bands")
        }
        switch self {
        case .magnitude:
            return try pruneMagnitude(weight: weight, shape: shape, pattern: pattern)
        case .wanda:
            return try pruneWanda(weight: weight, shape: shape, columnNormsSquared: try collected().columnNorms, pattern: pattern)
        case .sparsegpt:
            return try pruneSparseGPT(weight: weight, shape: shape, hessian: try collected().hessian, pattern: pattern,
                                      blocksize: settings.blocksize, percdamp: settings.percdamp, band: band)
        case .krp:
            let statistics = try collected()
            var cross = KRPCrossTerm.inputs(statistics.cross)
            if statistics.needs.crossOutputs > 0 {
                // [outputs, columns] for the whole linear: this band's rows of it.
                let totalRows = band?.totalRows ?? shape[0]
                guard statistics.cross.count == totalRows * shape[1] else {
                    throw PruneDistError(.shape, "\(rawValue): cross term against the dense outputs has \(statistics.cross.count) values for a linear of \(totalRows) × \(shape[1])")
                }
                cross = .outputs(band?.slice(statistics.cross, columns: shape[1]) ?? statistics.cross)
            }
            return try pruneKRP(weight: weight, shape: shape, hessian: statistics.hessian, cross: cross,
                                pattern: pattern, blocksize: settings.blocksize, percdamp: settings.percdamp,
                                rectification: settings.krpRectification, band: band)
        case .llmPruner, .adapruner:
            throw PruneDistError(.argument, "structured methods run in StructuredPruneRun, not per linear")
        }
    }
}
