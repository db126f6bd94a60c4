import Engine
import Foundation

/// Gradients of the mean next-token NLL over a calibration batch split across ranks.
///
/// Every rank runs the streamed backward (one block's weights at a time) on its own sequences with the loss
/// divided by the *global* number of predictions, so the ranks' gradients are token-weighted shares that sum to
/// the whole batch's gradient. For each block in `layers` (last block first, as the backward produces them) the
/// linears' gradients, and the per-sequence squares when asked for, are summed in Double onto `root` only:
/// the importance scores are formed there. Other ranks get nothing back.
public enum DistributedGradients {
    public struct Result: Sendable {
        /// Σ NLL over the whole batch and the number of predictions (on every rank)
        public var nllSum: Double
        public var predictions: Int
    }

    /// - mine: this rank's sequences, [count][seqlen] (may be empty)
    /// - totalSequences: the whole batch's number of sequences (over every rank)
    /// - onBlock: called on `root` with each reduced block, last block first
    public static func compute(checkpoint: Checkpoint, mine: [[Int]], seqlen: Int, totalSequences: Int,
                               perSequenceSquares: Bool, layers: Set<Int>, comm: Communicator, root: Int = 0,
                               onBlock: (BlockGradientSums) throws -> Void) throws -> Result {
        let config = checkpoint.config
        let predictions = totalSequences * (seqlen - 1)
        /// tensors, squares: this rank's gradients of the block (nil when it holds no sequences)
        func reduce(layer: Int, _ tensors: PerLinear<[Float]>?, squares: PerLinear<[Float]>?) throws {
            guard layers.contains(layer) else { return }
            // One linear after another, gradient then squares: every rank joins the reductions in this order.
            let reduced = try PerLinear { linear -> (gradient: [Double], squares: [Double]?) in
                let shape = linear.shape(config: config, layer: layer)
                let count = shape[0] * shape[1]
                // A rank without sequences (or without this part) adds zeros.
                func widened(_ part: PerLinear<[Float]>?) -> [Double] {
                    guard let part else { return [Double](repeating: 0, count: count) }
                    return part[linear].map(Double.init)
                }
                var buffer = widened(tensors)
                try comm.reduceSum(&buffer, root: root)
                guard perSequenceSquares else { return (buffer, nil) }
                var s = widened(squares)
                try comm.reduceSum(&s, root: root)
                return (buffer, s)
            }
            if comm.rank == root {
                let squared = perSequenceSquares ? reduced.map { $0.squares ?? [] } : nil
                try onBlock(BlockGradientSums(layer: layer, gradients: reduced.map(\.gradient), squaredPerSequence: squared,
                                              sequences: totalSequences))
            }
        }

        var nll = [0.0]
        if mine.isEmpty {
            // Nothing to differentiate here, but every reduction must still be joined, in the same order.
            for layer in stride(from: config.numHiddenLayers - 1, through: 0, by: -1) {
                try reduce(layer: layer, nil, squares: nil)
            }
        } else {
            let model = try llamaGradientsStreamed(checkpoint: checkpoint, ids: mine.flatMap { $0 }, seqlen: seqlen,
                                                   lossDivisor: Double(predictions), perSequenceSquares: perSequenceSquares) { block in
                try reduce(layer: block.layer, block.weights, squares: block.squaredPerSequence)
            }
            nll[0] = model.nllSum
        }
        try comm.allreduceSum(&nll)
        return Result(nllSum: nll[0], predictions: predictions)
    }
}
