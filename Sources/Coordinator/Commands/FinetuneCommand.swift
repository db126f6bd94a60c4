import ArgumentParser
import Engine
import Foundation
import Logging
import Worker

/// `prune-dist finetune`: LoRA fine-tuning of a (pruned) model, data-parallel over MPI ranks.
struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "LoRA fine-tuning (PEFT's LoRA, AdamW) of a model, data-parallel over MPI ranks; writes a PEFT adapter folder.",
        discussion: """
        Every rank takes its share (index mod ranks) of every global batch of --batch × --accumulate sequences; the \
        LoRA gradients are summed with one all-reduce per step. --out gets adapter_config.json and \
        adapter_model.safetensors (PEFT's names), finetune-report.json/.html, and with --merge a merged checkpoint in \
        OUT/merged (a zero weight of a pruned model stays zero).
        """)

    @Option(name: .long, help: "Hugging Face model directory (dense or pruned, structured models included).")
    var model: String
    @Option(name: .long, parsing: .upToNextOption, help: "Training data: plain text, JSONL \"text\", token files, Alpaca instructions (JSONL or a JSON array with instruction/input/output), or prompt-completion pairs (prompt/completion; loss on the completion only). Several files allowed, of one kind.")
    var data: [String] = []
    @Option(name: .long, help: "Output folder for the adapter (written under a temporary name, renamed when complete).")
    var out: String
    @Option(name: .long, parsing: .unconditional, help: "LoRA rank r.")
    var loraRank: Int = 8
    @Option(name: .long, parsing: .unconditional, help: "LoRA alpha (the update is scaled by alpha / r).")
    var loraAlpha: Double = 16
    @Option(name: .long, parsing: .unconditional, help: "Dropout on the LoRA branch's input, in [0, 1).")
    var loraDropout: Double = 0.05
    @Option(name: .long, help: "Linears that get an adapter: any of q,k,v,o,gate,up,down.")
    var targets: String = "q,k,v,o,gate,up,down"
    @Option(name: .long, parsing: .unconditional, help: "Peak learning rate.")
    var lr: Double = 1e-4
    @Option(name: .long, parsing: .unconditional, help: "Linear warm-up steps (from 0 to --lr).")
    var warmup: Int = 100
    @Option(name: .long, help: "Decay after warm-up: linear or cosine (to 0 at the last step).")
    var schedule: LearningRateSchedule.Decay = .linear
    @Option(name: .long, parsing: .unconditional, help: "AdamW's decoupled weight decay.")
    var weightDecay: Double = 0
    @Option(name: .long, parsing: .unconditional, help: "Optimizer steps (or give --epochs).")
    var steps: Int?
    @Option(name: .long, parsing: .unconditional, help: "Passes over the data (default 1 when --steps is not given).")
    var epochs: Double?
    @Option(name: .long, parsing: .unconditional, help: "Sequences per micro-batch.")
    var batch: Int = 4
    @Option(name: .long, parsing: .unconditional, help: "Micro-batches per optimizer step (the global batch is --batch × --accumulate sequences).")
    var accumulate: Int = 1
    @Option(name: .long, parsing: .unconditional, help: "Tokens per training sequence.")
    var seqlen: Int = 256
    @Option(name: .long, help: "Seed of the LoRA initialisation, the data order and the dropout masks.")
    var seed: Int = 0
    @Option(name: .long, help: "Held-out text (or .u16 / .json token file) to measure perplexity on before and after training, never trained on; repeat for several (e.g. in-domain and out-of-domain). The curve (--eval-every) is on the first.")
    var evalText: [String] = []
    @Option(name: .long, parsing: .unconditional, help: "Evaluate the first --eval-text every K steps.")
    var evalEvery: Int?
    @Option(name: .long, parsing: .unconditional, help: "Evaluate only the first K windows (of --seqlen tokens) of each --eval-text.")
    var evalMaxWindows: Int?
    @Option(name: .long, help: "Zero-shot tasks measured before and after training, e.g. boolq,piqa,hellaswag (or all); needs --eval-data.")
    var evalTasks: String?
    @Option(name: .long, help: "Folder of zero-shot task files for --eval-tasks.")
    var evalData: String?
    @Option(name: .long, parsing: .unconditional, help: "Evaluate only the first N documents of each --eval-tasks task.")
    var evalLimit: Int?
    @Option(name: .long, parsing: .unconditional, help: "Save the adapter and optimizer state every K steps (for --resume).")
    var saveEvery: Int = 50
    @Flag(name: .long, help: "Also write a merged checkpoint (W + alpha/r · B·A) in the input's layout to OUT/merged.")
    var merge = false
    @Option(name: .long, help: "dtype of the merged weights: bf16, f16 or f32 (default: the input's; a small update is lost to BF16 rounding).",
            transform: DType.commandLineWeightType)
    var mergeDtype: DType?
    @Flag(name: .long, help: "For a sparse model: train the update masked by the base weights' zeros, so the merged checkpoint (which keeps the mask) is the trained model. PEFT applies the adapter unmasked; costs a dense update per linear and step.")
    var maskAware = false
    @Flag(name: .long, help: "Continue an interrupted run (same options, same --out) from its last saved step.")
    var resume = false
    @OptionGroup var global: GlobalOptions

    func parsedTargets() throws -> [LlamaLinear] {
        let names = targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let linears = try names.map { name -> LlamaLinear in
            guard let linear = LlamaLinear.allCases.first(where: { LoraSettings.moduleName($0) == name || LoraSettings.moduleName($0) == name + "_proj" }) else {
                throw ValidationError("--targets: \(name) is not one of q, k, v, o, gate, up, down")
            }
            return linear
        }
        guard !linears.isEmpty else { throw ValidationError("--targets names no linear") }
        return linears
    }

    func validate() throws {
        guard !data.isEmpty else { throw ValidationError("--data needs at least one file") }
        try CommandLineLimits.check(loraRank, "--lora-rank", in: 1...4096)
        try CommandLineLimits.check(loraAlpha, "--lora-alpha", above: 0, atMost: 1e6)
        guard loraDropout.isFinite, loraDropout >= 0, loraDropout < 1 else { throw ValidationError("--lora-dropout must be in [0, 1), got \(loraDropout)") }
        _ = try parsedTargets()
        try CommandLineLimits.check(lr, "--lr", above: 0, atMost: 10)
        try CommandLineLimits.check(warmup, "--warmup", in: 0...10_000_000)
        guard weightDecay.isFinite, weightDecay >= 0, weightDecay < 1 else { throw ValidationError("--weight-decay must be in [0, 1), got \(weightDecay)") }
        if steps != nil, epochs != nil { throw ValidationError("give --steps or --epochs, not both") }
        if let steps { try CommandLineLimits.check(steps, "--steps", in: 1...100_000_000) }
        if let epochs { try CommandLineLimits.check(epochs, "--epochs", above: 0, atMost: 1e6) }
        try CommandLineLimits.check(batch, "--batch", in: 1...65_536)
        try CommandLineLimits.check(accumulate, "--accumulate", in: 1...65_536)
        try CommandLineLimits.check(seqlen, "--seqlen", in: 2...CommandLineLimits.seqlen.upperBound)
        if let evalEvery { try CommandLineLimits.check(evalEvery, "--eval-every", in: 1...100_000_000) }
        if evalEvery != nil, evalText.isEmpty { throw ValidationError("--eval-every needs --eval-text FILE") }
        if let evalMaxWindows { try CommandLineLimits.check(evalMaxWindows, "--eval-max-windows", in: 1...100_000_000) }
        if let evalLimit { try CommandLineLimits.check(evalLimit, "--eval-limit", in: 1...100_000_000) }
        if evalLimit != nil, evalTasks == nil { throw ValidationError("--eval-limit is for --eval-tasks") }
        try PruneRunEvaluation.checkOptions(texts: evalText, maxWindows: evalMaxWindows, tasks: evalTasks, data: evalData)
        try CommandLineLimits.check(saveEvery, "--save-every", in: 1...100_000_000)
        if mergeDtype != nil, !merge { throw ValidationError("--merge-dtype is for --merge") }
        for file in data + evalText where !FileManager.default.fileExists(atPath: file) {
            throw ValidationError("\(file): no such file")
        }
        try asValidationError {
            // The evaluation texts are held out: never one of the training files.
            for text in evalText {
                try OutputFolder.checkSeparate(.init("--eval-text", URL(fileURLWithPath: text)), from: data.map { .init("--data", URL(fileURLWithPath: $0)) })
            }
            try OutputFolder.checkFresh(.init("--out", URL(fileURLWithPath: out)),
                                        inputs: [.init("--model", URL(fileURLWithPath: model))] + data.map { .init("--data", URL(fileURLWithPath: $0)) })
        }
    }

    func settings() throws -> FinetuneSettings {
        FinetuneSettings(model: URL(fileURLWithPath: model), data: data.map { URL(fileURLWithPath: $0) }, out: URL(fileURLWithPath: out),
                         lora: LoraSettings(rank: loraRank, alpha: loraAlpha, dropout: loraDropout, targets: try parsedTargets()),
                         learningRate: lr, warmup: warmup, decay: schedule, weightDecay: weightDecay,
                         steps: steps, epochs: steps == nil ? (epochs ?? 1) : nil, batch: batch, accumulate: accumulate,
                         seqlen: seqlen, seed: seed, evalTexts: evalText.map { URL(fileURLWithPath: $0) }, evalEvery: evalEvery,
                         evalMaxWindows: evalMaxWindows, evalTasks: try evalTasks.map(DistributedEvaluation.parseTasks) ?? [],
                         evalData: evalData.map { URL(fileURLWithPath: $0) }, evalLimit: evalLimit, saveEvery: saveEvery, merge: merge, maskAware: maskAware, mergeDType: mergeDtype, resume: resume)
    }

    func run() throws {
        let comm = try MPICommunicator.start()
        defer { comm.finish() }
        let logger = try global.makeLogger(rank: comm.rank)
        var settings = try settings()
        let report = try comm.abortingJobOnError { () -> FinetuneReport in
            let outURL = settings.out
            let lock = comm.rank == 0 ? try OutputLock.acquire(partial: OutputFolder.partialFolder(for: outURL), out: outURL) : nil
            if let lock, !resume { try lock.clearPartialFolder() }
            settings.outputLock = lock
            let again = (comm.size > 1 ? "mpirun -n \(comm.size) " : "") + (CommandLine.arguments + (resume ? [] : ["--resume"])).map(shellQuoted).joined(separator: " ")
            // SIGINT/SIGTERM on rank 0: a run with a saved step keeps it for --resume, one without removes the folder.
            let interruptions = lock.map { lock in
                InterruptCleanup.install(message: {
                    Self.hasSavedState(lock) ? "interrupted; the last saved step is kept in \(lock.partial.path); continue with: \(again)"
                        : "interrupted before any step was saved; removed \(lock.partial.path)"
                }, cleanup: { if !Self.hasSavedState(lock) { lock.removePartialFolder() } })
            }
            defer { interruptions?.uninstall() }
            do {
                return try Self.finish(FinetuneRun(settings: settings, comm: comm, logger: logger).run(), settings: settings, comm: comm, logger: logger)
            } catch {
                // A run that saved a step can be continued; one that saved nothing leaves nothing behind.
                guard let lock else { throw error }
                guard Self.hasSavedState(lock) else {
                    lock.removePartialFolder()
                    throw error
                }
                let kept = "the last saved step is kept in \(lock.partial.path); continue with: \(again)"
                if let error = error as? PruneDistError { throw PruneDistError(error.kind, "\(error.message); \(kept)") }
                throw PruneDistError(.io, "\(error); \(kept)")
            }
        }
        if comm.rank == 0 {
            var line: [String: Any] = ["output": settings.out.path, "steps": report.steps, "ranks": report.ranks, "seconds": report.seconds,
                                       "final_loss": report.curves.loss.last?.loss ?? Double.nan]
            if let tokensPerSecond = report.tokensPerSecond { line["tokens_per_second"] = tokensPerSecond }
            if let first = report.curves.eval.first, let last = report.curves.eval.last {
                line["eval_perplexity_before"] = first.perplexity
                line["eval_perplexity_after"] = last.perplexity
            }
            if let merged = report.mergedPerplexity { line["merged_perplexity"] = merged }
            if let beforeAfter = report.beforeAfter {
                beforeAfter.lines.forEach(printLine)
                line["before"] = beforeAfter.before
                line["after"] = beforeAfter.after
            }
            printLine(try jsonLine(line))
        }
    }

    static func hasSavedState(_ lock: OutputLock) -> Bool {
        FileManager.default.fileExists(atPath: lock.partial.appendingPathComponent(FinetuneState.fileName).path)
    }

    /// Rank 0 writes the adapter (and the merged checkpoint); every rank evaluates the result when asked; rank 0
    /// writes the reports and moves the folder into place.
    static func finish(_ result: FinetuneRun.Result, settings: FinetuneSettings, comm: Communicator, logger: Logger) throws -> FinetuneReport {
        var report = result.report
        let evaluation = settings.beforeAfterEvaluation
        // Every rank reads what rank 0 wrote from the shared output path, as prune's evaluation of its output does.
        let partial = settings.outputLock?.partial ?? OutputFolder.partialFolder(for: settings.out)
        let writes = comm.rank == 0 && settings.outputLock != nil
        let merged = partial.appendingPathComponent("merged")
        // Without --merge the trained model (base + adapter) is merged in Float32 into a scratch checkpoint: evaluating a
        // checkpoint is what `eval perplexity` / `eval zeroshot` do, so before and after go through the same code.
        let scratch = partial.appendingPathComponent("trained-for-evaluation")
        if writes {
            try PEFTAdapterFolder.write(result.adapter, to: partial, baseModel: settings.model.path)
            if settings.merge || !evaluation.isEmpty {
                let source = try Checkpoint(directory: settings.model)
                if settings.merge {
                    report.maskedWeights = try MergedCheckpoint.write(source: source, adapter: result.adapter, to: merged, dtype: settings.mergeDType)
                    report.merged = settings.out.appendingPathComponent("merged").path
                } else {
                    try? FileManager.default.removeItem(at: scratch)
                    _ = try MergedCheckpoint.write(source: source, adapter: result.adapter, to: scratch, dtype: .f32, keepZeros: false)
                }
            }
        }
        if let before = result.before, !evaluation.isEmpty {
            // The other ranks wait until rank 0's checkpoint is complete (an error there aborts the job).
            try comm.barrier()
            let model = settings.merge ? merged : scratch
            if comm.rank == 0 { logger.info("evaluating the \(settings.merge ? "merged checkpoint" : "trained model") (after training)") }
            let after = try evaluation.evaluate(model: model, comm: comm, logger: logger).entries
            report.beforeAfter = FinetuneBeforeAfter(
                afterModel: settings.merge ? "the merged checkpoint as written (\(report.merged ?? ""))"
                    : "the trained model (base weights + adapter, merged in Float32 into a scratch checkpoint that is not kept)",
                texts: evaluation.texts.map { PruneRunEvaluation.label(of: $0, among: evaluation.texts) }, before: before, after: after)
            // The merged checkpoint's perplexity on the first text (the curve's), as older reports have it.
            if settings.merge { report.mergedPerplexity = after["perplexity"] }
            try comm.barrier()
            if writes { try? FileManager.default.removeItem(at: scratch) }
        }
        guard writes else { return report }
        try? FileManager.default.removeItem(at: partial.appendingPathComponent(FinetuneState.fileName))
        try writeFileAtomically(try report.jsonData(), to: partial.appendingPathComponent("finetune-report.json"))
        try writeFileAtomically(Data(FinetuneHTMLReport.render(report).utf8), to: partial.appendingPathComponent("finetune-report.html"))
        try OutputFolder.moveIntoPlace(partial, out: settings.out)
        return report
    }
}

extension LearningRateSchedule.Decay: ExpressibleByArgument {}
