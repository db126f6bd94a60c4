import Engine
import Foundation
import Logging
import Worker

/// LoRA fine-tuning, data-parallel over ranks. Every rank holds the frozen model, the training set and the same
/// LoRA factors and AdamW state. At each step the global batch (batch·accumulate sequences, in an order drawn from
/// the seed per epoch) is split by index mod ranks; each rank differentiates its share in micro-batches of
/// `batch` sequences with the loss divided by the global number of counted predictions, and one all-reduce (Double)
/// sums the factors' gradients and the NLL. Every rank then makes the same AdamW update. The loss curve therefore
/// depends on the rank count only through the order of those sums.
struct FinetuneRun {
    let settings: FinetuneSettings
    let comm: Communicator
    let logger: Logger

    struct Result: Sendable {
        var adapter: LoraAdapter
        var report: FinetuneReport
        /// The input model's `evaluation` entries (PruneRunEvaluation), when before/after figures were asked for
        var before: [String: Double]? = nil
    }

    func run() throws -> Result {
        let started = Date()
        let checkpoint = try Checkpoint(directory: settings.model)
        let model = try FrozenLlama(checkpoint: checkpoint)
        // Token files need no tokenizer; a tokenizer.json that is there but unreadable is an error, not a silent nil.
        let tokenizer = try Self.tokenizer(settings.model)
        let data = try TrainingSet.load(settings.data, tokenizer: tokenizer, seqlen: settings.seqlen,
                                        eos: checkpoint.config.eosTokenId, vocabSize: checkpoint.config.vocabSize)
        let evalWindows = try settings.curveText.map { try Self.evaluationWindows($0, tokenizer: tokenizer, vocabSize: checkpoint.config.vocabSize, settings: settings) }
        let totalSteps = settings.totalSteps(examples: data.examples.count)
        let schedule = LearningRateSchedule(peak: settings.learningRate, warmup: settings.warmup, totalSteps: totalSteps, decay: settings.decay)
        var adapter = LoraAdapter(settings: settings.lora, shapes: model.shapes, seed: UInt64(bitPattern: Int64(settings.seed)))
        if settings.maskAware { adapter.maskUpdates(by: model.blocks) }
        var parameters = adapter.flattened
        var optimizer = AdamW(parameters: parameters.count, weightDecay: settings.weightDecay)
        var curves = FinetuneCurves()
        var firstStep = 0
        if settings.resume, let state = try restoredState(parameters: parameters.count) {
            parameters = state.parameters
            optimizer.m = state.m
            optimizer.v = state.v
            optimizer.steps = state.step
            curves = state.curves
            firstStep = state.step
            adapter.assign(flat: parameters)
            logger.info("resuming after step \(state.step) of \(totalSteps)")
        }
        // The input as `eval perplexity` / `eval zeroshot` measure it (a resumed run measures it again: it is not saved).
        let evaluation = settings.beforeAfterEvaluation
        var before: [String: Double]?
        if !evaluation.isEmpty {
            if comm.rank == 0 { logger.info("evaluating the input model (before training)") }
            let result = try evaluation.evaluate(model: settings.model, comm: comm, logger: logger)
            before = result.entries
        }
        logger.info("finetune: \(data.examples.count) \(data.format.rawValue) sequences of \(settings.seqlen) tokens (\(data.truncated) cut, \(data.dropped) left out), \(totalSteps) steps of \(settings.sequencesPerStep) sequences over \(comm.size) rank(s), \(parameters.count) LoRA parameters")

        func evaluate(step: Int) throws {
            guard let evalWindows else { return }
            let nll = try evaluationNLL(model: model, adapter: adapter, windows: evalWindows)
            curves.eval.append(.init(step: step, nll: nll, perplexity: exp(nll)))
            logger.info("eval after step \(step): perplexity \(String(format: "%.4f", exp(nll)))")
        }
        if firstStep == 0 { try evaluate(step: 0) }

        let order = ExampleOrder(examples: data.examples.count, seed: UInt64(bitPattern: Int64(settings.seed)))
        var tokensDone = 0
        var trainingSeconds = 0.0  // in the steps themselves, evaluations and saves left out
        for step in firstStep..<totalSteps {
            FaultInjection.atBlockStart(rank: comm.rank, host: comm.hostName, layer: step)
            let stepStarted = Date()
            let positions = (step * settings.sequencesPerStep)..<((step + 1) * settings.sequencesPerStep)
            let globalPredictions = positions.reduce(0) { $0 + data.examples[order.example(at: $1)].counted.filter { $0 }.count }
            let mine = positions.enumerated().filter { $0.offset % comm.size == comm.rank }.map(\.element)
            // Σ over this rank's micro-batches, in Double; the last entry is the NLL sum.
            var buffer = [Double](repeating: 0, count: parameters.count + 1)
            let dropout = settings.lora.dropout > 0
                ? LoraDropout(probability: settings.lora.dropout, seed: UInt64(bitPattern: Int64(settings.seed)), step: step) : nil
            for start in stride(from: 0, to: mine.count, by: settings.batch) {
                let chunk = Array(mine[start..<min(mine.count, start + settings.batch)])
                let examples = chunk.map { data.examples[order.example(at: $0)] }
                let batch = TrainingBatch(ids: examples.flatMap(\.ids), counted: examples.flatMap(\.counted), examples: chunk)
                let result = try loraLossAndGradients(model: model, adapter: adapter, batch: batch, seqlen: settings.seqlen,
                                                      lossDivisor: Double(max(1, globalPredictions)), dropout: dropout)
                buffer[parameters.count] += result.nllSum
                let part = result.gradients.flattened
                for i in 0..<part.count { buffer[i] += Double(part[i]) }
            }
            // The one collective of a step: every factor's gradient and the NLL.
            try comm.allreduceSum(&buffer)
            let loss = buffer[parameters.count] / Double(max(1, globalPredictions))
            let rate = schedule.rate(step: step)
            optimizer.update(&parameters, gradients: buffer.prefix(parameters.count).map { Float($0) }, rate: rate)
            adapter.assign(flat: parameters)
            curves.loss.append(.init(step: step + 1, loss: loss, learningRate: rate))

            tokensDone += settings.sequencesPerStep * settings.seqlen
            trainingSeconds += Date().timeIntervalSince(stepStarted)
            let perStep = trainingSeconds / Double(step + 1 - firstStep)
            logger.info("step \(step + 1)/\(totalSteps) loss \(String(format: "%.4f", loss)) lr \(String(format: "%.3g", rate)) \(String(format: "%.0f", Double(tokensDone) / trainingSeconds)) tokens/s ETA \(formatDuration(perStep * Double(totalSteps - step - 1)))")

            let done = step + 1
            if let every = settings.evalEvery, done % every == 0, done != totalSteps { try evaluate(step: done) }
            if done % settings.saveEvery == 0 || done == totalSteps {
                try save(FinetuneState(step: done, parameters: parameters, m: optimizer.m, v: optimizer.v, curves: curves,
                                       fingerprint: settings.fingerprint))
            }
        }
        if curves.eval.last?.step != totalSteps { try evaluate(step: totalSteps) }
        let seconds = Date().timeIntervalSince(started)
        let report = FinetuneReport(settings: settings, data: data, totalSteps: totalSteps, parameters: parameters.count, ranks: comm.size,
                                    curves: curves, resumedAfterStep: firstStep > 0 ? firstStep : nil, seconds: seconds,
                                    tokensPerSecond: tokensDone > 0 ? Double(tokensDone) / trainingSeconds : nil)
        return Result(adapter: adapter, report: report, before: before)
    }

    /// The model's tokenizer, nil when its folder has no tokenizer.json.
    static func tokenizer(_ model: URL) throws -> Tokenizer? {
        guard FileManager.default.fileExists(atPath: model.appendingPathComponent("tokenizer.json").path) else { return nil }
        return try Tokenizer.load(modelDirectory: model)
    }

    /// Rank 0 reads the saved state and broadcasts it (the partial folder need not be visible to other ranks).
    private func restoredState(parameters: Int) throws -> FinetuneState? {
        var state: FinetuneState?
        var header = [0.0]
        if comm.rank == 0, let lock = settings.outputLock {
            state = try FinetuneState.read(from: lock.partial, fingerprint: settings.fingerprint, parameters: parameters)
            header[0] = Double(state?.step ?? 0)
        }
        try comm.broadcast(&header, root: 0)
        guard header[0] > 0 else { return nil }
        var curves = Data()
        if comm.rank == 0 { curves = try JSONEncoder().encode(state!.curves) }
        try comm.broadcast(&curves, root: 0)
        var values = state.map { [$0.parameters, $0.m, $0.v] } ?? [[Float]](repeating: [Float](repeating: 0, count: parameters), count: 3)
        for i in 0..<3 { try comm.broadcast(&values[i], root: 0) }
        return FinetuneState(step: Int(header[0]), parameters: values[0], m: values[1], v: values[2],
                             curves: try JSONDecoder().decode(FinetuneCurves.self, from: curves), fingerprint: settings.fingerprint)
    }

    private func save(_ state: FinetuneState) throws {
        guard comm.rank == 0, let lock = settings.outputLock else { return }
        try state.write(to: lock.partial)
    }

    /// Consecutive windows of seqlen tokens of the evaluation text (at most evalMaxWindows).
    static func evaluationWindows(_ url: URL, tokenizer: Tokenizer?, vocabSize: Int, settings: FinetuneSettings) throws -> [[Int]] {
        let ids = try CalibrationData.tokens(url: url, tokenizer: tokenizer)
        var count = ids.count / settings.seqlen
        if let limit = settings.evalMaxWindows { count = min(count, limit) }
        guard count > 0 else {
            throw PruneDistError(.data, "--eval-text \(url.path): \(ids.count) tokens, fewer than one window of --seqlen \(settings.seqlen)")
        }
        try Perplexity.checkVocabulary([Array(ids.prefix(count * settings.seqlen))], vocabSize: vocabSize, source: url.path)
        return (0..<count).map { Array(ids[($0 * settings.seqlen)..<(($0 + 1) * settings.seqlen)]) }
    }

    /// Mean next-token NLL over the windows with the adapter applied (nil: the model alone): windows i ≡ rank
    /// (mod ranks), sums reduced.
    private func evaluationNLL(model: FrozenLlama, adapter: LoraAdapter?, windows: [[Int]]) throws -> Double {
        try Self.evaluationNLL(model: model, adapter: adapter, windows: windows, seqlen: settings.seqlen, comm: comm)
    }

    static func evaluationNLL(model: FrozenLlama, adapter: LoraAdapter?, windows: [[Int]], seqlen: Int, comm: Communicator) throws -> Double {
        let mine = try windowsNLL(model: model, adapter: adapter, windows: windows,
                              indices: Array(stride(from: comm.rank, to: windows.count, by: comm.size)), seqlen: seqlen)
        var sums = [mine.nllSum, Double(mine.predictions)]
        try comm.allreduceSum(&sums)
        return sums[0] / sums[1]
    }

    /// Σ NLL and the number of predictions over the chosen windows, every prediction counted.
    static func windowsNLL(model: FrozenLlama, adapter: LoraAdapter?, windows: [[Int]], indices: [Int], seqlen: Int) throws -> (nllSum: Double, predictions: Int) {
        var sum = 0.0, count = 0
        for i in indices {
            let batch = TrainingBatch(ids: windows[i], counted: (0..<seqlen).map { $0 != seqlen - 1 }, examples: [i])
            let result = try loraLoss(model: model, adapter: adapter, batch: batch, seqlen: seqlen)
            sum += result.nllSum
            count += result.predictions
        }
        return (sum, count)
    }
}

/// The order sequences are seen in: epoch e is a permutation of the training set drawn from (seed, e); position p of
/// the run is sequence order[p / n][p mod n]. Every rank computes the same order.
struct ExampleOrder {
    let examples: Int
    let seed: UInt64

    init(examples: Int, seed: UInt64) {
        self.examples = examples
        self.seed = seed
    }

    func permutation(epoch: Int) -> [Int] {
        var random = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
        var order = Array(0..<examples)
        for i in stride(from: examples - 1, to: 0, by: -1) {
            let j = Int(random.next() % UInt64(i + 1))
            order.swapAt(i, j)
        }
        return order
    }

    func example(at position: Int) -> Int {
        permutation(epoch: position / examples)[position % examples]
    }
}
