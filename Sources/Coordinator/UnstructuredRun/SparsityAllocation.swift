import ArgumentParser
import Engine
import Foundation
import Worker

/// How an unstructured run spreads its target sparsity over the blocks.
public enum SparsityAllocation: String, CaseIterable, ExpressibleByArgument, Codable, Sendable {
    /// Every block at the target sparsity.
    case uniform
    /// OWL: blocks with more activation outliers pruned less, the mean kept at the target.
    case owl
}

/// OWL's per-block sparsities for a run (`owlSparsities`), from one pass of the dense model over every rank's
/// calibration sequences: each rank sums the squared input norms Σx_j² of every linear over its sequences,
/// the sums are all-reduced, and every rank scores the block's weights the same way.
/// - stream: this rank's sequences, each [seqlen, hidden], as embedded (not modified)
func owlBlockSparsities(weights: RunWeights, stream: [[Float]], rope: RopeTable, seqlen: Int, target: Double,
                        settings: OWLSettings, comm: Communicator) throws -> [Double] {
    let config = weights.config
    var hidden = stream
    var ratios: [Double] = []
    for layer in 0..<config.numHiddenLayers {
        let block = try weights.block(layer)
        let inputs = LlamaLinearInput.allCases
        var sums = inputs.map { InputStatistics(dimension: block.inputDimension($0), needs: StatisticsNeeds(columnNorms: true)) }
        for s in hidden.indices {
            let trace = llamaBlockTrace(hidden[s], weights: block, rope: rope, seqlen: seqlen)
            for (i, input) in inputs.enumerated() { sums[i].accumulate(pruned: trace.input(input), tokens: seqlen) }
            hidden[s] = trace.output
        }
        var buffer = sums.flatMap(\.columnNorms)
        try comm.allreduceSum(&buffer)
        var norms: [LlamaLinearInput: [Double]] = [:]
        var offset = 0
        for input in inputs {
            let d = block.inputDimension(input)
            norms[input] = Array(buffer[offset..<(offset + d)])
            offset += d
        }
        ratios.append(owlOutlierRatio(linears: LlamaLinear.allCases.map { linear in
            (block.weight(linear), block.shape(linear)[1], norms[linear.inputGroup]!)
        }, threshold: settings.threshold))
    }
    return owlSparsities(outlierRatios: ratios, target: target, spread: settings.spread)
}
