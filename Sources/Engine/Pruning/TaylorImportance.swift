import Foundation

// Taylor importance of structured groups (LLM-Pruner, Ma et al. 2023, and AdaPruner's mix of its terms,
// Kong et al. 2025). Each structure (a row or a column of one linear) gets a score per term:
//   vector  |Σ_k w_k g_k|                      (first-order change of the loss when the structure is removed)
//   el1     Σ_k |w_k g_k|
//   el2     Σ_k |w_k g_k − ½ w_k² F_kk|,  F = (1/N) Σ_n g_n²  (LLM-Pruner's param_mix)
// A structure's score is Σ_t c_t · term_t (LLM-Pruner: one term, c = 1; AdaPruner: c_t = α_t β_t). Scores of
// the structures of a group are then aggregated (sum / prod / max / last), per channel as LLM-Pruner does.
// For an attention group (KV head j, query heads j·g ..< (j+1)·g) the channels are aligned as LLM-Pruner
// aligns q to k (summing query channels that meet the same key channel d), but over the group's *own* query
// heads: upstream's view(…).sum(0) adds heads {j, j+kv, j+2kv}, a scoring bug we do not copy. The group's
// importance is the sum over its headDim aligned channels.

public enum TaylorTerm: String, CaseIterable, Codable, Sendable {
    case vector, el1, el2
}

public enum GroupAggregation: String, CaseIterable, Codable, Sendable {
    case sum, prod, max
    /// The last-executing structure only: o_proj columns (attention), down_proj column (MLP).
    case last
}

/// Σ_t coefficient_t · term_t for each structure.
public struct ImportanceMix: Codable, Equatable, Sendable {
    public var coefficients: [TaylorTerm: Double]
    public init(_ coefficients: [TaylorTerm: Double]) { self.coefficients = coefficients }
    public static func single(_ term: TaylorTerm) -> ImportanceMix { ImportanceMix([term: 1]) }
    public var needsFisher: Bool { (coefficients[.el2] ?? 0) != 0 }
}

/// The reduced gradients of one block's linears.
public struct BlockGradientSums: Sendable {
    public var layer: Int
    /// [out, in] per linear: ∂L/∂W of the whole calibration batch
    public var gradients: PerLinear<[Double]>
    /// [out, in] per linear: Σ_n (∂L_n/∂W)² over the batch's sequences (nil unless the Fisher term is used)
    public var squaredPerSequence: PerLinear<[Double]>?
    /// Number of sequences N (F = squaredPerSequence / N)
    public var sequences: Int

    public init(layer: Int, gradients: PerLinear<[Double]>, squaredPerSequence: PerLinear<[Double]>?, sequences: Int) {
        self.layer = layer
        self.gradients = gradients
        self.squaredPerSequence = squaredPerSequence
        self.sequences = sequences
    }
}

/// Importance of every group of one block.
public struct StructuredGroupScores: Codable, Equatable, Sendable {
    public var layer: Int
    /// [kvHeads]
    public var keyValueHeads: [Double]
    /// [intermediate]
    public var channels: [Double]

    enum CodingKeys: String, CodingKey {
        case layer, channels
        case keyValueHeads = "key_value_heads"
    }
}

public enum TaylorImportance {
    /// Per-structure values of each term for one linear: one per row (output channel) or per column
    /// (input channel).
    /// - weight, gradient, fisherSum: [rows, columns]; fisherSum is Σ_n g_n² (divided by `sequences` here)
    /// - Returns: per term, [rows] or [columns]; el2 only when fisherSum is given
    public static func structureTerms(weight: [Float], gradient: [Double], fisherSum: [Double]?, sequences: Int,
                                      rows: Int, columns: Int, alongColumns: Bool) -> [TaylorTerm: [Double]] {
        let n = alongColumns ? columns : rows
        var signed = [Double](repeating: 0, count: n)
        var el1 = [Double](repeating: 0, count: n)
        var el2 = [Double](repeating: 0, count: n)
        let invN = 1 / Double(max(sequences, 1))
        for r in 0..<rows {
            let base = r * columns
            for c in 0..<columns {
                let i = base + c
                let w = Double(weight[i])
                let wg = w * gradient[i]
                let s = alongColumns ? c : r
                signed[s] += wg
                el1[s] += abs(wg)
                if let fisherSum { el2[s] += abs(wg - 0.5 * w * w * fisherSum[i] * invN) }
            }
        }
        var terms: [TaylorTerm: [Double]] = [.vector: signed.map(abs), .el1: el1]
        if fisherSum != nil { terms[.el2] = el2 }
        return terms
    }

    /// Every term of every structure of one block (what a mix of terms is formed from).
    public struct BlockTerms: Sendable {
        public var layer: Int
        public var headDim: Int
        public var heads: Int
        public var kvHeads: Int
        public var intermediate: Int
        /// per linear, per term: [rows] (q, k, v, gate, up) or [columns] (o, down)
        public var terms: PerLinear<[TaylorTerm: [Double]]>

        public init(layer: Int, headDim: Int, heads: Int, kvHeads: Int, intermediate: Int, terms: PerLinear<[TaylorTerm: [Double]]>) {
            self.layer = layer
            self.headDim = headDim
            self.heads = heads
            self.kvHeads = kvHeads
            self.intermediate = intermediate
            self.terms = terms
        }
    }

    public static func blockTerms(block: LlamaBlockWeights, gradients: BlockGradientSums) -> BlockTerms {
        let terms = PerLinear { linear in
            let shape = block.shape(linear)
            return structureTerms(weight: block.weight(linear), gradient: gradients.gradients[linear],
                                  fisherSum: gradients.squaredPerSequence?[linear], sequences: gradients.sequences,
                                  rows: shape[0], columns: shape[1], alongColumns: linear.prunesColumns)
        }
        return BlockTerms(layer: block.layer, headDim: block.headDim, heads: block.numAttentionHeads,
                          kvHeads: block.numKeyValueHeads, intermediate: block.intermediateSize, terms: terms)
    }

    /// The importance of every attention group and MLP channel of a block.
    public static func groupScores(block: LlamaBlockWeights, gradients: BlockGradientSums, mix: ImportanceMix,
                                   aggregation: GroupAggregation) -> StructuredGroupScores {
        groupScores(terms: blockTerms(block: block, gradients: gradients), mix: mix, aggregation: aggregation)
    }

    public static func groupScores(terms blockTerms: BlockTerms, mix: ImportanceMix, aggregation: GroupAggregation) -> StructuredGroupScores {
        let scores = blockTerms.terms.map { terms -> [Double] in
            let n = terms[.el1]!.count
            var combined = [Double](repeating: 0, count: n)
            for (term, coefficient) in mix.coefficients where coefficient != 0 {
                guard let values = terms[term] else {
                    preconditionFailure("groupScores: term \(term.rawValue) was not computed (el2 needs the per-sequence squared gradients)")
                }
                for i in 0..<n { combined[i] += coefficient * values[i] }
            }
            return combined
        }
        func reduce(_ values: [Double]) -> Double {
            switch aggregation {
            case .sum: return values.reduce(0, +)
            case .prod: return values.reduce(1, *)
            case .max: return values.max()!
            case .last: return values.last!
            }
        }
        let headDim = blockTerms.headDim, kvHeads = blockTerms.kvHeads, g = blockTerms.heads / kvHeads
        let (q, k, v, o) = (scores.q, scores.k, scores.v, scores.o)
        let heads = (0..<kvHeads).map { j -> Double in
            (0..<headDim).reduce(0.0) { total, d in
                var qAligned = 0.0, oAligned = 0.0
                for i in 0..<g {
                    qAligned += q[(j * g + i) * headDim + d]
                    oAligned += o[(j * g + i) * headDim + d]
                }
                // Execution order: q, k, v, then o last.
                return total + reduce([qAligned, k[j * headDim + d], v[j * headDim + d], oAligned])
            }
        }
        let (gate, up, down) = (scores.gate, scores.up, scores.down)
        let channels = (0..<blockTerms.intermediate).map { reduce([gate[$0], up[$0], down[$0]]) }
        return StructuredGroupScores(layer: blockTerms.layer, keyValueHeads: heads, channels: channels)
    }

    /// Keeps all but the lowest-scoring groups: LLM-Pruner's local rule, the same ratio in every pruned block
    /// (ties broken by index, lower index removed first, as a stable argsort does).
    public static func keep(scores: StructuredGroupScores, heads: Int, headDim: Int, ratio: Double) -> StructuredKeep {
        let kvHeads = scores.keyValueHeads.count
        let removedHeads = StructuredPruning.removedKeyValueHeads(heads: heads, kvHeads: kvHeads, headDim: headDim, ratio: ratio)
        let keptChannels = StructuredPruning.keptCount(total: scores.channels.count, ratio: ratio)
        func highest(_ values: [Double], keeping count: Int) -> [Int] {
            let ascending = values.indices.sorted { (values[$0], $0) < (values[$1], $1) }
            return ascending.suffix(count).sorted()
        }
        return StructuredKeep(layer: scores.layer, keyValueHeads: highest(scores.keyValueHeads, keeping: kvHeads - removedHeads),
                              channels: highest(scores.channels, keeping: keptChannels))
    }
}
