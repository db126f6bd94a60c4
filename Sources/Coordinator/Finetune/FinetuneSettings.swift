import Engine
import Foundation

/// Everything a `finetune` run needs, as every rank holds it.
struct FinetuneSettings: Sendable {
    var model: URL
    var data: [URL]
    var out: URL
    var lora: LoraSettings
    var learningRate: Double
    var warmup: Int
    var decay: LearningRateSchedule.Decay
    var weightDecay: Double
    /// Exactly one of steps and epochs is given
    var steps: Int?
    var epochs: Double?
    /// Sequences per micro-batch (on one rank) and micro-batches per step: the global batch is batch·accumulate
    var batch: Int
    var accumulate: Int
    var seqlen: Int
    var seed: Int
    /// Held-out texts: the curve (every evalEvery steps) is measured on the first, before and after on every one
    var evalTexts: [URL]
    var evalEvery: Int?
    var evalMaxWindows: Int?
    /// Zero-shot tasks measured before and after training (task files in evalData, first evalLimit documents)
    var evalTasks: [ZeroShotTask] = []
    var evalData: URL? = nil
    var evalLimit: Int? = nil
    /// Save the adapter and optimizer state every this many steps (and at the end)
    var saveEvery: Int
    var merge: Bool
    /// Train the update masked by the base weights' zeros (a sparse model's mask), so the merge keeps what was learnt
    var maskAware: Bool = false
    /// dtype of the merged weights; nil keeps the input's
    var mergeDType: DType? = nil
    var resume: Bool
    /// Rank 0's lock on the output's partial folder; nil on other ranks (and in tests that write nothing)
    var outputLock: OutputLock?

    /// The text of the evaluation curve (the cheap figure measured during training).
    var curveText: URL? { evalTexts.first }

    /// The before/after evaluation, as `prune --eval-*` runs it (windows of the training seqlen); empty when none asked.
    var beforeAfterEvaluation: PruneRunEvaluation {
        PruneRunEvaluation(texts: evalTexts, seqlen: seqlen, maxWindows: evalMaxWindows, tasks: evalTasks, data: evalData, limit: evalLimit)
    }

    /// The global batch: sequences per optimizer step.
    var sequencesPerStep: Int { batch * accumulate }

    /// The steps of the run for a training set of `examples` sequences.
    func totalSteps(examples: Int) -> Int {
        if let steps { return steps }
        return max(1, Int((Double(examples) * (epochs ?? 1) / Double(sequencesPerStep)).rounded(.up)))
    }

    /// What a resumed run must share with the run it continues (anything that changes the result).
    var fingerprint: String {
        let parts: [String] = [model.standardizedFileURL.path, data.map(\.standardizedFileURL.path).joined(separator: ","),
                               "r\(lora.rank)", "a\(lora.alpha)", "d\(lora.dropout)", lora.targets.map(\.rawValue).joined(separator: ","),
                               "lr\(learningRate)", "w\(warmup)", decay.rawValue, "wd\(weightDecay)", "s\(steps.map(String.init) ?? "-")",
                               "e\(epochs.map { "\($0)" } ?? "-")", "b\(batch)", "g\(accumulate)", "L\(seqlen)", "seed\(seed)", maskAware ? "masked" : "plain"]
        return parts.joined(separator: "|")
    }
}
