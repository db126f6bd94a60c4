import ArgumentParser
import Engine
import Foundation
import Logging
import Worker

/// `prune --eval-*`: the checks made before any work and the evaluation of the written output (and of the dense
/// input, for dense → pruned) over the run's ranks, shared by unstructured and structured runs.
extension PruneCommand {
    /// Evaluation inputs are checked now rather than after a long run.
    func checkEvaluationOptions() throws {
        try PruneRunEvaluation.checkOptions(texts: evalText, maxWindows: evalMaxWindows, tasks: evalTasks, data: evalData)
    }

    func evaluationSettings() throws -> PruneRunEvaluation {
        PruneRunEvaluation(texts: evalText.map { URL(fileURLWithPath: $0) }, seqlen: resolvedEvalSeqlen, maxWindows: evalMaxWindows,
                           tasks: try evalTasks.map(DistributedEvaluation.parseTasks) ?? [],
                           data: evalData.map { URL(fileURLWithPath: $0) }, limit: evalLimit, attack: attackEvaluation.settings)
    }

    /// Evaluates the output in `out` over the job's ranks (every rank calls this) and, unless --no-dense-eval, the
    /// dense `model` (DenseEvaluation's cache); rank 0 prints the figures. nil when nothing is to be evaluated.
    func evaluateOutput(_ evaluation: PruneRunEvaluation, model: URL, out: URL, comm: Communicator,
                        logger: Logger) throws -> (entries: [String: Double], dense: [String: Double]?)? {
        guard !evaluation.isEmpty else { return nil }
        let result = try evaluation.evaluate(model: out, comm: comm, logger: logger,
                                             attackLog: attackEvaluation.evalAttackLog.map { URL(fileURLWithPath: $0) })
        if comm.rank == 0 { result.lines.forEach(printLine) }
        guard !noDenseEval, let dense = try DenseEvaluation.entries(evaluation: evaluation, model: model, out: out,
                                                                    weights: weights, comm: comm, logger: logger) else {
            return (result.entries, nil)
        }
        if comm.rank == 0 { DenseEvaluation.comparisonLines(dense: dense.entries, pruned: result.entries).forEach(printLine) }
        return (result.entries, dense.entries)
    }
}
