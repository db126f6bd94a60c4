import ArgumentParser
import Engine
import Foundation

/// The checks `prune` makes before any model is read, so a run that cannot succeed (or would cost the user a
/// file) stops at once rather than after hours of work.
extension PruneCommand {
    /// Options meant for another kind of method are refused by name rather than silently ignored.
    func checkMethodOptions() throws {
        if method.isStructured {
            let unstructured: [(String, Bool)] = [
                ("--sparsity", sparsity != nil), ("--pattern", pattern != nil), ("--true-sequential", trueSequential != nil),
                ("--blocksize", blocksize != nil), ("--percdamp", percdamp != nil), ("--resume", resume),
                ("--weights", weights != .shared), ("--ignore", !ignore.isEmpty), ("--sparsity-override", !sparsityOverride.isEmpty),
            ]
            if let given = unstructured.first(where: \.1)?.0 {
                throw ValidationError("\(given) is not used by --method \(method.rawValue) (it applies to magnitude, wanda, sparsegpt and krp); remove it")
            }
            if method == .llmPruner, let given = adapruner.adaPrunerOptionsGiven.first {
                throw ValidationError("\(given) is an AdaPruner option, not used by --method llm-pruner; remove it or use --method adapruner")
            }
        } else if let given = (structured.structuredOptionsGiven + adapruner.adaPrunerOptionsGiven).first {
            throw ValidationError("\(given) is for the structured methods (llm-pruner, adapruner), not --method \(method.rawValue); remove it")
        }
    }

    /// Every number that sizes an allocation is bounded here (CommandLineLimits).
    func checkLimits() throws {
        try CommandLineLimits.checkCalibration(samples: resolvedSamples, seqlen: seqlen)
        try CommandLineLimits.check(resolvedBlocksize, "--blocksize", in: CommandLineLimits.count)
        try CommandLineLimits.check(resolvedPercdamp, "--percdamp", above: 0, atMost: 1e6)
        try CommandLineLimits.check(resolvedEvalSeqlen, "--eval-seqlen", in: CommandLineLimits.seqlen)
        if let evalLimit { try CommandLineLimits.check(evalLimit, "--eval-limit", in: CommandLineLimits.count) }
    }

    /// The files named on the command line: inputs are what they claim to be, and nothing written can
    /// land on or inside an input (OutputFolder, RunReportFiles.checkWritable).
    func checkPaths() throws {
        try asValidationError {
            let outArgument = OutputFolder.Argument("--out", URL(fileURLWithPath: out))
            let modelArgument = OutputFolder.Argument("--model", URL(fileURLWithPath: model))
            var inputs = [modelArgument]
            let paths = [("--calib", calib), ("--pool", adapruner.pool), ("--eval-data", evalData),
                         ("--eval-attack-data", attackEvaluation.evalAttackData)] + evalText.map { ("--eval-text", Optional($0)) }
            for (option, path) in paths {
                if let path { inputs.append(OutputFolder.Argument(option, URL(fileURLWithPath: path))) }
            }
            // With --weights broadcast only rank 0 reads the data, so other ranks may not see the file at all.
            let mustExist = weights != .broadcast
            if let calib { try checkRegularFile(calib, option: "--calib", mustExist: mustExist) }
            if let pool = adapruner.pool { try checkRegularFile(pool, option: "--pool") }
            if let report {
                try RunReportFiles.checkWritable(OutputFolder.Argument("--report", URL(fileURLWithPath: report)), others: inputs + [outArgument])
            }
            try OutputFolder.checkFresh(outArgument, inputs: inputs)
            if let log = attackEvaluation.evalAttackLog {
                try OutputFolder.checkSeparate(OutputFolder.Argument("--eval-attack-log", URL(fileURLWithPath: log)), from: inputs + [outArgument])
            }
            try checkEvaluationTokenizer()
        }
    }

    /// Evaluating text (not token ids) or zero-shot tasks reads the output's tokenizer, which is copied from
    /// --model: without one the run would fail only after pruning.
    private func checkEvaluationTokenizer() throws {
        let textFiles = evalText.filter { !["u16", "json"].contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
        let needsTokenizer = evalTasks != nil || !textFiles.isEmpty || attackEvaluation.evalAttack != nil
        // With --weights broadcast a rank other than 0 may not see --model; rank 0 makes the check.
        let visible = weights == .shared || FileManager.default.fileExists(atPath: model)
        let tokenizer = URL(fileURLWithPath: model).appendingPathComponent("tokenizer.json")
        guard needsTokenizer, visible, !FileManager.default.fileExists(atPath: tokenizer.path) else { return }
        let option = evalTasks != nil ? "--eval-tasks" : !textFiles.isEmpty ? "--eval-text" : "--eval-attack"
        throw PruneDistError(.argument, "\(option) needs a tokenizer, but --model \(model) has no tokenizer.json (the result is evaluated with the model's tokenizer)")
    }
}

/// Refuses an input path that is missing (when `mustExist`) or not a regular file (a folder or a FIFO given
/// as a data file), saying what it is.
func checkRegularFile(_ path: String, option: String, mustExist: Bool = true) throws {
    let url = URL(fileURLWithPath: path)
    guard FileManager.default.fileExists(atPath: path) else {
        if !mustExist { return }
        throw PruneDistError(.io, "\(option) \(path): no such file")
    }
    // A symbolic link to a data file is a data file (scripts/fetch-assets.sh links ../shared's): look through it.
    let target = url.resolvingSymlinksInPath()
    guard (try? FileManager.default.attributesOfItem(atPath: target.path)[.type] as? FileAttributeType) == .typeRegular else {
        throw PruneDistError(.argument, "\(option) \(path): is \(OutputFolder.fileKind(target)), not a data file")
    }
}
