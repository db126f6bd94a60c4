import Foundation

// Dependency groups of a LLaMA block for structured pruning (LLM-Pruner's block-wise mode, GQA-aware):
// - an attention group is one KV head with the query heads it serves (Hugging Face repeat_kv: query head h
//   reads KV head h / (heads / kvHeads)): its k and v rows, its query heads' q rows and o_proj columns;
// - an MLP group is one channel c: gate_proj row c, up_proj row c, down_proj column c.
// The hidden size (norms, embedding, residual stream) is never touched.

/// The groups of one block that structured pruning keeps.
public struct StructuredKeep: Codable, Equatable, Sendable {
    public var layer: Int
    /// KV heads kept, ascending; KV head j brings query heads j·g ..< (j+1)·g, g = heads / kvHeads.
    public var keyValueHeads: [Int]
    /// MLP channels kept, ascending.
    public var channels: [Int]

    enum CodingKeys: String, CodingKey {
        case layer, channels
        case keyValueHeads = "key_value_heads"
    }

    public init(layer: Int, keyValueHeads: [Int], channels: [Int]) {
        self.layer = layer
        self.keyValueHeads = keyValueHeads
        self.channels = channels
    }

    /// Everything of a block with these widths.
    public static func all(layer: Int, keyValueHeads: Int, channels: Int) -> StructuredKeep {
        StructuredKeep(layer: layer, keyValueHeads: Array(0..<keyValueHeads), channels: Array(0..<channels))
    }
}

public enum StructuredPruning {
    /// Units kept out of `total` at `ratio`: LLM-Pruner's `int(C · (1 − ratio))` (n_prune = C − that).
    public static func keptCount(total: Int, ratio: Double) -> Int {
        Int((Double(total) * (1 - ratio)).rounded(.towardZero))
    }

    /// KV groups removed at `ratio`: LLM-Pruner counts pruned query channels, C − int(C·(1 − ratio)) of
    /// C = heads·headDim, and removes whole units of (heads / kvHeads)·headDim of them; what is left over
    /// (less than a unit) is not removed. At 0.27 on 9/3 heads this removes none, at 0.34 one.
    public static func removedKeyValueHeads(heads: Int, kvHeads: Int, headDim: Int, ratio: Double) -> Int {
        let channels = heads * headDim
        let pruned = channels - keptCount(total: channels, ratio: ratio)
        return min(kvHeads - 1, pruned / ((heads / kvHeads) * headDim))
    }

    /// LLM-Pruner's default block range for an N-block model: blocks 4 to N−3 inclusive (4..29 of LLaMA-7B's 32).
    public static func defaultBlocks(layers: Int) throws -> ClosedRange<Int> {
        guard layers - 3 >= 4 else {
            throw PruneDistError(.argument, "the default structured-pruning blocks 4..N−3 are empty for a model of \(layers) blocks; give --block-start and --block-end")
        }
        return 4...(layers - 3)
    }

    /// Query heads served by the kept KV heads, ascending.
    public static func keptQueryHeads(_ keep: StructuredKeep, heads: Int, kvHeads: Int) -> [Int] {
        let g = heads / kvHeads
        return keep.keyValueHeads.flatMap { j in (j * g)..<((j + 1) * g) }
    }

    /// The block with only the kept groups: smaller q/k/v/gate/up (rows) and o/down (columns).
    public static func removing(_ block: LlamaBlockWeights, keep: StructuredKeep) -> LlamaBlockWeights {
        let headDim = block.headDim, heads = block.numAttentionHeads, kvHeads = block.numKeyValueHeads
        let queryRows = keptQueryHeads(keep, heads: heads, kvHeads: kvHeads).flatMap { h in (h * headDim)..<((h + 1) * headDim) }
        let kvRows = keep.keyValueHeads.flatMap { j in (j * headDim)..<((j + 1) * headDim) }
        let kept = PerLinear(q: queryRows, k: kvRows, v: kvRows, o: queryRows, gate: keep.channels, up: keep.channels, down: keep.channels)
        let linears = PerLinear { linear -> (weight: [Float], bias: [Float]?) in
            let shape = block.shape(linear)
            let indices = kept[linear]
            let w = block.weight(linear)
            if linear.prunesColumns {
                return (selectColumns(w, rows: shape[0], columns: shape[1], keep: indices), block.bias(linear))
            }
            return (selectRows(w, columns: shape[1], keep: indices), block.bias(linear).map { b in indices.map { b[$0] } })
        }
        return LlamaBlockWeights(layer: block.layer, hiddenSize: block.hiddenSize, headDim: headDim,
                                 numAttentionHeads: queryRows.count / headDim, numKeyValueHeads: keep.keyValueHeads.count,
                                 intermediateSize: keep.channels.count, rmsNormEps: block.rmsNormEps,
                                 inputNorm: block.inputNorm, postAttentionNorm: block.postAttentionNorm,
                                 weights: linears.map(\.weight), biases: linears.map(\.bias))
    }

    /// The block at its full widths with every removed group's rows and columns (and row biases) set to zero:
    /// computes the same function as `removing` (the oracle the removal is tested against).
    public static func zeroing(_ block: LlamaBlockWeights, keep: StructuredKeep) -> LlamaBlockWeights {
        let headDim = block.headDim
        let queryHeads = Set(keptQueryHeads(keep, heads: block.numAttentionHeads, kvHeads: block.numKeyValueHeads))
        let kvHeads = Set(keep.keyValueHeads), channels = Set(keep.channels)
        var result = block
        for linear in LlamaLinear.allCases {
            let shape = block.shape(linear)
            let keeps: (Int) -> Bool
            switch linear {
            case .q, .o: keeps = { queryHeads.contains($0 / headDim) }
            case .k, .v: keeps = { kvHeads.contains($0 / headDim) }
            case .gate, .up, .down: keeps = { channels.contains($0) }
            }
            var w = block.weight(linear)
            for r in 0..<shape[0] {
                for c in 0..<shape[1] where !keeps(linear.prunesColumns ? c : r) { w[r * shape[1] + c] = 0 }
            }
            result.setWeight(linear, w)
            if !linear.prunesColumns, var b = block.bias(linear) {
                for r in 0..<shape[0] where !keeps(r) { b[r] = 0 }
                result.setBias(linear, b)
            }
        }
        return result
    }

    /// Parameters of a block's seven linears (and their biases) with these widths.
    public static func linearParameters(hidden: Int, headDim: Int, heads: Int, kvHeads: Int, intermediate: Int,
                                        attentionBias: Bool = false) -> Int {
        let q = heads * headDim, kv = kvHeads * headDim
        return hidden * (q + 2 * kv) + q * hidden + 3 * hidden * intermediate + (attentionBias ? q + 2 * kv : 0)
    }

    /// - w: [rows, columns]; returns [keep.count, columns]
    static func selectRows(_ w: [Float], columns: Int, keep: [Int]) -> [Float] {
        var out = [Float](); out.reserveCapacity(keep.count * columns)
        for r in keep { out.append(contentsOf: w[(r * columns)..<((r + 1) * columns)]) }
        return out
    }

    /// - w: [rows, columns]; returns [rows, keep.count]
    static func selectColumns(_ w: [Float], rows: Int, columns: Int, keep: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: rows * keep.count)
        for r in 0..<rows {
            for (j, c) in keep.enumerated() { out[r * keep.count + j] = w[r * columns + c] }
        }
        return out
    }
}

extension LlamaLinear {
    /// o_proj and down_proj lose input columns when a group is removed; the others lose output rows.
    public var prunesColumns: Bool { self == .o || self == .down }
}
