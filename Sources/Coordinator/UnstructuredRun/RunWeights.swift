import Engine
import Foundation
import Worker

/// Where the ranks of a prune run get the model from. `shared`: every rank reads the checkpoint (a shared
/// filesystem). `broadcast` (`--weights broadcast`): only rank 0 reads the model folder and the calibration
/// file; it broadcasts the config, the calibration windows, the embedding table once and each block's tensors
/// as the block starts, so other nodes need nothing but the binary. Both give the same bits.
final class RunWeights {
    let config: LlamaConfig
    /// The checkpoint, on ranks that read it (every rank when shared, rank 0 when broadcast).
    let checkpoint: Checkpoint?
    let source: WeightsSource
    private let comm: Communicator

    init(settings: PruneSettings, comm: Communicator) throws {
        self.comm = comm
        source = settings.weights
        let checkpoint = source == .shared || comm.rank == 0 ? try Checkpoint(directory: settings.model) : nil
        self.checkpoint = checkpoint
        if source == .broadcast {
            // Rank 0 keeps its own config; the others decode the one it sends.
            let sent = try comm.broadcast(checkpoint?.config, root: 0)
            config = checkpoint?.config ?? sent
        } else {
            config = checkpoint!.config
        }
    }

    /// The calibration windows (every rank draws the same ones, or rank 0 draws and broadcasts them).
    func windows(settings: PruneSettings) throws -> [[Int]] {
        func draw() throws -> [[Int]] {
            try CalibrationSource.windows(url: settings.calibration!, modelDirectory: settings.model, vocabSize: config.vocabSize, samples: settings.samples,
                                          seqlen: settings.seqlen, seed: settings.seed)
        }
        guard source == .broadcast else { return try draw() }
        return try comm.broadcast(comm.rank == 0 ? try draw() : nil, root: 0)
    }

    /// The embedding table, or nil on a rank that has no sequences (every rank must call this when broadcasting).
    func embedding(needed: Bool) throws -> LlamaEmbedding? {
        guard source == .broadcast else { return needed ? try LlamaEmbedding(checkpoint: checkpoint!) : nil }
        var table = comm.rank == 0 ? try LlamaEmbedding(checkpoint: checkpoint!).table
            : [Float](repeating: 0, count: config.vocabSize * config.hiddenSize)
        try comm.broadcast(&table, root: 0)
        return needed ? LlamaEmbedding(table: table, vocabSize: config.vocabSize, hiddenSize: config.hiddenSize) : nil
    }

    /// Block `layer` in Float32, checked finite (by the reading rank).
    func block(_ layer: Int) throws -> LlamaBlockWeights {
        guard source == .broadcast else { return try LlamaBlockWeights(checkpoint: checkpoint!, layer: layer, checkFinite: true) }
        var block = comm.rank == 0 ? try LlamaBlockWeights(checkpoint: checkpoint!, layer: layer, checkFinite: true)
            : LlamaBlockWeights(zerosWithConfig: config, layer: layer)
        try comm.broadcast(&block.inputNorm, root: 0)
        try comm.broadcast(&block.postAttentionNorm, root: 0)
        // Which linears have biases: one byte each, then the biases.
        var hasBias = Data(LlamaLinear.allCases.map { block.bias($0) == nil ? 0 : 1 })
        try comm.broadcast(&hasBias, root: 0)
        for (i, linear) in LlamaLinear.allCases.enumerated() {
            var weight = block.weight(linear)
            try comm.broadcast(&weight, root: 0)
            block.setWeight(linear, weight)
            if hasBias[hasBias.startIndex + i] == 1 {
                var bias = block.bias(linear) ?? [Float](repeating: 0, count: block.shape(linear)[0])
                try comm.broadcast(&bias, root: 0)
                block.setBias(linear, bias)
            }
        }
        return block
    }
}
