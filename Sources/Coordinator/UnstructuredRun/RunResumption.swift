import Engine
import Foundation
import Logging
import Worker

/// Where a prune run starts: block 0 with a fresh output and journal, or (`--resume`) after the last block an
/// interrupted run with the same fingerprint finished, continuing its output. Rank 0 decides (it owns the
/// output folder) and tells the others.
struct RunResumption {
    /// Rank 0's output checkpoint; nil on other ranks.
    let output: OutputCheckpoint?
    /// Rank 0's journal; nil on other ranks.
    let journal: RunJournal?
    /// The first block still to prune; blocks before it are replayed, not pruned.
    let firstBlock: Int

    /// checkpoint: the model, on rank 0 (the only rank that needs it here)
    static func start(settings: PruneSettings, checkpoint: Checkpoint?, comm: Communicator, logger: Logger) throws -> RunResumption {
        var first = 0
        var output: OutputCheckpoint? = nil
        var journal: RunJournal? = nil
        if comm.rank == 0, let checkpoint, let lock = settings.outputLock {
            let fingerprint = try RunFingerprint.compute(settings: settings, checkpoint: checkpoint)
            let temporary = lock.partial
            if settings.resume, let earlier = try RunJournal.open(in: temporary, expecting: fingerprint),
               let last = earlier.records.last {
                output = try OutputCheckpoint(source: checkpoint, out: settings.out, lock: lock, dtype: settings.outputDType,
                                              resumeAfter: last.tensorsWritten)
                journal = earlier
                first = last.block + 1
                logger.info("resuming \(temporary.path): blocks 0-\(last.block) finished earlier, replaying them to rebuild the activations")
            } else {
                if settings.resume { logger.info("nothing to resume in \(temporary.path): starting from block 0") }
                output = try OutputCheckpoint(source: checkpoint, out: settings.out, lock: lock, dtype: settings.outputDType)
                journal = try RunJournal.create(in: output!.temporary, fingerprint: fingerprint)
            }
        }
        first = try comm.broadcast(first, root: 0)
        return RunResumption(output: output, journal: journal, firstBlock: first)
    }

    /// After block `layer`'s tensors went to the output (rank 0): make them durable, then journal the block.
    func blockFinished(_ layer: Int, pruned: LlamaBlockWeights) throws {
        guard let output, let journal else { return }
        try output.sync()
        try journal.blockFinished(layer, linears: pruned.weights, shapes: pruned.shapes, tensorsWritten: output.tensorsWritten)
    }
}

extension PruneRun {
    /// Rebuilds the block inputs an interrupted run had after its finished blocks: every rank runs its
    /// sequences through blocks 0..<count with the pruned weights the run computed (from rank 0's journal,
    /// broadcast), and the dense stream through the dense blocks, exactly as the run itself did.
    /// prunedStream, denseStream: [sequences] of [seqlen, hidden]
    func replayFinishedBlocks(_ count: Int, journal: RunJournal?, weights: RunWeights, rope: RopeTable,
                              scratch: LlamaBlockScratch, prunedStream: inout [[Float]], denseStream: inout [[Float]]?) throws {
        for layer in 0..<count {
            let dense = try weights.block(layer)
            var pruned = dense
            let saved = comm.rank == 0 ? try journal?.prunedLinears(layer) : nil
            for linear in LlamaLinear.allCases {
                var weight = saved?[linear] ?? [Float](repeating: 0, count: dense.weight(linear).count)
                try comm.broadcast(&weight, root: 0)
                pruned.setWeight(linear, weight)
            }
            for s in prunedStream.indices {
                llamaBlockForward(&prunedStream[s], weights: pruned, rope: rope, seqlen: settings.seqlen, scratch: scratch)
            }
            if let stream = denseStream {
                var stream = stream
                for s in stream.indices { llamaBlockForward(&stream[s], weights: dense, rope: rope, seqlen: settings.seqlen, scratch: scratch) }
                denseStream = stream
            }
            if comm.rank == 0 { logger.info("block \(layer + 1)/\(weights.config.numHiddenLayers) replayed") }
        }
    }
}
