import Engine
import Foundation
import TestSupport
import XCTest

/// LoRA fine-tuning's numerics: the factors' gradients against PEFT's autograd (golden made by
/// scripts/golden/lora_goldens.py from the tiny fixture) and against central differences (with dropout), AdamW and
/// the schedules against torch / transformers, and the PEFT adapter folder against PEFT's own files.
final class LoraTests: XCTestCase {
    private static let golden = Fixtures.packageRoot.appendingPathComponent("Tests/EngineTests/Golden")

    private func tinyModel() throws -> FrozenLlama {
        try FrozenLlama(checkpoint: Checkpoint(directory: Fixtures.path("fixtures/tiny-llama")))
    }

    private let allTargets = LlamaLinear.allCases

    /// The golden's starting factors, as an adapter.
    private func goldenAdapter(_ file: SafetensorsFile, model: FrozenLlama) throws -> LoraAdapter {
        let settings = LoraSettings(rank: 4, alpha: 8, dropout: 0, targets: allTargets)
        var adapter = LoraAdapter(settings: settings, shapes: model.shapes, seed: 0)
        for layer in 0..<model.blocks.count {
            for linear in allTargets {
                let prefix = "init.base_model.model.model.layers.\(layer).\(linear.rawValue)"
                adapter.layers[layer][linear]!.a = try file.floats(prefix + ".lora_A.weight")
                adapter.layers[layer][linear]!.b = try file.floats(prefix + ".lora_B.weight")
            }
        }
        return adapter
    }

    func testGradientsMatchPEFTAutograd() throws {
        let file = try SafetensorsFile(url: Self.golden.appendingPathComponent("lora-tiny-llama.safetensors"))
        let model = try tinyModel()
        let adapter = try goldenAdapter(file, model: model)
        let ids = try file.int64s("input_ids").map(Int.init)
        let labels = try file.int64s("labels").map(Int.init)
        let seqlen = 16
        // HF's labels are shifted: position t predicts labels[t + 1]; −100 is left out of the mean.
        let counted = ids.indices.map { t in t % seqlen != seqlen - 1 && labels[t + 1] != -100 }
        let batch = TrainingBatch(ids: ids, counted: counted, examples: [0, 1])
        XCTAssertEqual(batch.predictions, 30 - 5 - 4, "counted predictions: the prompt's labels 1...5 (label 0 is never predicted) and the padding's 4 are out")
        let result = try loraLossAndGradients(model: model, adapter: adapter, batch: batch, seqlen: seqlen,
                                              lossDivisor: Double(batch.predictions), dropout: nil)
        let goldenLoss = Double(file.metadata["loss"]!)!
        XCTAssertEqual(result.nllSum / Double(result.predictions), goldenLoss, accuracy: 1e-5)
        let forwardOnly = try loraLoss(model: model, adapter: adapter, batch: batch, seqlen: seqlen)
        XCTAssertEqual(forwardOnly.nllSum / Double(forwardOnly.predictions), goldenLoss, accuracy: 1e-5)
        var compared = 0
        for tensor in result.gradients.peftTensors {
            let expected = try file.floats("grad." + tensor.name)
            let largest = expected.map { abs(Double($0)) }.max()!
            let worst = zip(tensor.values, expected).map { abs(Double($0) - Double($1)) }.max()!
            XCTAssertGreaterThan(largest, 1e-6, "\(tensor.name): golden gradient is zero")
            XCTAssertLessThan(worst / largest, 1e-4, "\(tensor.name): worst difference \(worst), max |g| \(largest)")
            compared += 1
        }
        XCTAssertEqual(compared, 3 * 7 * 2)
    }

    /// With dropout 0.3 and random A and B: each sampled factor element's gradient against central differences of the
    /// same loss (same dropout masks), in the three layers and in linears of both halves of the block.
    func testGradientsWithDropoutMatchFiniteDifferences() throws {
        let model = try tinyModel()
        let settings = LoraSettings(rank: 3, alpha: 6, dropout: 0.3, targets: [.q, .v, .o, .up, .down])
        var adapter = LoraAdapter(settings: settings, shapes: model.shapes, seed: 7)
        var random = SplitMix64(seed: 11)
        adapter.update { values in for i in values.indices { values[i] = Float(random.nextGaussian()) * 0.2 } }
        let seqlen = 8
        let ids = (0..<(2 * seqlen)).map { _ in Int(random.next() % 512) }
        let counted = ids.indices.map { $0 % seqlen != seqlen - 1 }
        let batch = TrainingBatch(ids: ids, counted: counted, examples: [5, 9])
        let dropout = LoraDropout(probability: 0.3, seed: 3, step: 2)
        func loss(_ adapter: LoraAdapter) throws -> Double {
            try loraLossAndGradients(model: model, adapter: adapter, batch: batch, seqlen: seqlen, lossDivisor: 14, dropout: dropout).nllSum / 14
        }
        let analytic = try loraLossAndGradients(model: model, adapter: adapter, batch: batch, seqlen: seqlen,
                                                lossDivisor: 14, dropout: dropout).gradients
        let flatAnalytic = analytic.flattened
        // 60 elements spread over every factor of the model
        try assertMatchesFiniteDifferences(adapter, analytic: flatAnalytic, samples: 60, loss: loss)
        // Dropout changes the gradients (the masks are used), and a different step draws other masks.
        let noDropout = try loraLossAndGradients(model: model, adapter: adapter, batch: batch, seqlen: seqlen, lossDivisor: 14, dropout: nil)
        XCTAssertNotEqual(noDropout.gradients.flattened, flatAnalytic)
        let otherStep = LoraDropout(probability: 0.3, seed: 3, step: 3)
        XCTAssertNotEqual(otherStep.mask(layer: 0, linear: .q, examples: [5], seqlen: 8, features: 64),
                          dropout.mask(layer: 0, linear: .q, examples: [5], seqlen: 8, features: 64))
    }

    /// A mask-aware adapter (update M ⊙ scaling·B·A, M = base weight ≠ 0) on a model with half its weights zero:
    /// gradients against central differences with dropout, the loss equal to the merged weights' loss, and an
    /// all-ones mask giving the plain adapter's gradients.
    func testMaskAwareGradientsMatchFiniteDifferencesAndTheMergedModel() throws {
        let dense = try tinyModel()
        var blocks = dense.blocks
        var random = Engine.SplitMix64(seed: 21)
        for l in blocks.indices {
            for linear in LlamaLinear.allCases {
                var weight = blocks[l].weight(linear)
                for i in weight.indices where random.nextUnit() < 0.5 { weight[i] = 0 }
                blocks[l].setWeight(linear, weight)
            }
        }
        let sparse = FrozenLlama(config: dense.config, embedding: dense.embedding, head: dense.head, blocks: blocks)
        let settings = LoraSettings(rank: 2, alpha: 4, dropout: 0.2, targets: [.k, .o, .gate, .down])
        var adapter = LoraAdapter(settings: settings, shapes: sparse.shapes, seed: 3)
        adapter.update { values in for i in values.indices { values[i] = Float(random.nextGaussian()) * 0.2 } }
        let plain = adapter
        adapter.maskUpdates(by: sparse.blocks)
        let seqlen = 8
        let ids = (0..<(2 * seqlen)).map { _ in Int(random.next() % 512) }
        let batch = TrainingBatch(ids: ids, counted: ids.indices.map { $0 % seqlen != seqlen - 1 }, examples: [0, 1])
        let dropout = LoraDropout(probability: 0.2, seed: 1, step: 0)
        func result(_ adapter: LoraAdapter, _ dropout: LoraDropout?) throws -> LoraStepResult {
            try loraLossAndGradients(model: sparse, adapter: adapter, batch: batch, seqlen: seqlen, lossDivisor: 14, dropout: dropout)
        }
        let analytic = try result(adapter, dropout).gradients.flattened
        try assertMatchesFiniteDifferences(adapter, analytic: analytic, samples: 40) { try result($0, dropout).nllSum / 14 }
        // The masked adapter's loss is the loss of the merged weights W + M ⊙ Δ (a pruned weight stays zero).
        var merged = sparse.blocks
        for l in merged.indices {
            for linear in settings.targets {
                let delta = adapter.delta(layer: l, linear: linear)!
                var weight = merged[l].weight(linear)
                for i in weight.indices where weight[i] != 0 { weight[i] += delta[i] }
                merged[l].setWeight(linear, weight)
                XCTAssertTrue(zip(sparse.blocks[l].weight(linear), delta).allSatisfy { $0 != 0 || $1 == 0 })
            }
        }
        let mergedModel = FrozenLlama(config: dense.config, embedding: dense.embedding, head: dense.head, blocks: merged)
        let withAdapter = try loraLoss(model: sparse, adapter: adapter, batch: batch, seqlen: seqlen).nllSum
        let fromMerged = try loraLoss(model: mergedModel, adapter: nil, batch: batch, seqlen: seqlen).nllSum
        XCTAssertEqual(withAdapter, fromMerged, accuracy: 1e-4)
        XCTAssertNotEqual(withAdapter, try loraLoss(model: sparse, adapter: plain, batch: batch, seqlen: seqlen).nllSum)
        // All-ones masks: the plain adapter's gradients.
        var ones = plain
        for l in ones.layers.indices {
            for linear in settings.targets {
                let f = plain.layers[l][linear]!
                ones.layers[l][linear]!.updateMask = [Float](repeating: 1, count: f.outFeatures * f.inFeatures)
            }
        }
        let a = try result(ones, dropout).gradients.flattened, b = try result(plain, dropout).gradients.flattened
        let scale = b.map { abs($0) }.max()!
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()! / scale, 1e-4)
    }

    /// The dropout mask of one example does not depend on the batch it is in (what makes ranks agree).
    func testDropoutMaskDependsOnlyOnTheExample() {
        let dropout = LoraDropout(probability: 0.25, seed: 1, step: 4)
        let pair = dropout.mask(layer: 1, linear: .down, examples: [3, 8], seqlen: 4, features: 10)!
        let alone = dropout.mask(layer: 1, linear: .down, examples: [8], seqlen: 4, features: 10)!
        XCTAssertEqual(Array(pair[40...]), alone)
        let dropped = pair.filter { $0 == 0 }.count
        XCTAssertTrue((5...40).contains(dropped), "\(dropped) of 80 dropped at p = 0.25")
        XCTAssertTrue(pair.allSatisfy { $0 == 0 || abs($0 - 1 / 0.75) < 1e-6 })
    }

    func testZeroBStartsAtTheBaseModel() throws {
        let model = try tinyModel()
        let adapter = LoraAdapter(settings: LoraSettings(rank: 2, alpha: 4, dropout: 0, targets: allTargets), shapes: model.shapes, seed: 1)
        let ids = (0..<16).map { ($0 * 37) % 512 }
        let batch = TrainingBatch(ids: ids, counted: ids.indices.map { $0 % 16 != 15 }, examples: [0])
        let adapted = try loraLoss(model: model, adapter: adapter, batch: batch, seqlen: 16)
        let base = try loraLoss(model: model, adapter: nil, batch: batch, seqlen: 16)
        XCTAssertEqual(adapted.nllSum, base.nllSum, accuracy: 1e-4)
        // Kaiming-uniform(a = √5) bound 1/√in
        let a = adapter.layers[0].q!.a
        XCTAssertLessThanOrEqual(a.map(abs).max()!, 1 / Float(64).squareRoot())
        XCTAssertGreaterThan(a.map(abs).max()!, 0.9 / Float(64).squareRoot())
    }

    /// Central differences (step 1e-2) of `loss` at `samples` elements spread over every factor, against `analytic`
    /// ([parameters], LoraAdapter.flattened's order); the error relative to the largest analytic entry checked.
    private func assertMatchesFiniteDifferences(_ adapter: LoraAdapter, analytic: [Float], samples: Int,
                                                loss: (LoraAdapter) throws -> Double, line: UInt = #line) throws {
        var point = adapter.flattened
        let step: Float = 1e-2
        var worst = 0.0, largest = 0.0
        for sample in 0..<samples {
            let i = (sample * 7919) % point.count
            let saved = point[i]
            point[i] = saved + step
            var plus = adapter; plus.assign(flat: point)
            point[i] = saved - step
            var minus = adapter; minus.assign(flat: point)
            point[i] = saved
            let numeric = (try loss(plus) - loss(minus)) / Double(2 * step)
            worst = max(worst, abs(numeric - Double(analytic[i])))
            largest = max(largest, abs(Double(analytic[i])))
        }
        XCTAssertGreaterThan(largest, 1e-3, line: line)
        XCTAssertLessThan(worst / largest, 2e-2, "worst |analytic − numeric| \(worst), max |gradient| \(largest)", line: line)
    }

    // MARK: optimizer and schedules

    func testAdamWMatchesTorch() throws {
        let file = try SafetensorsFile(url: Self.golden.appendingPathComponent("lora-tiny-llama.safetensors"))
        var parameters = try file.floats("adamw.start")
        let gradients = try file.floats("adamw.gradients")
        let schedule = LearningRateSchedule(peak: 0.05, warmup: 2, totalSteps: 4, decay: .linear)
        var optimizer = AdamW(parameters: parameters.count, weightDecay: 0.1)
        for step in 0..<4 {
            optimizer.update(&parameters, gradients: Array(gradients[(step * 6)..<((step + 1) * 6)]), rate: schedule.rate(step: step))
        }
        let expected = try file.floats("adamw.end")
        for (p, e) in zip(parameters, expected) { XCTAssertEqual(p, e, accuracy: 1e-6) }
        XCTAssertEqual(optimizer.steps, 4)
    }

    func testSchedulesMatchTransformers() throws {
        let file = try SafetensorsFile(url: Self.golden.appendingPathComponent("lora-tiny-llama.safetensors"))
        for decay in LearningRateSchedule.Decay.allCases {
            let expected = try file.doubles("schedule.\(decay.rawValue)")
            let schedule = LearningRateSchedule(peak: 2e-4, warmup: 3, totalSteps: 10, decay: decay)
            for step in 0..<10 { XCTAssertEqual(schedule.rate(step: step), expected[step], accuracy: 1e-12, "\(decay) step \(step)") }
        }
    }

    // MARK: adapter folder

    func testReadsPEFTsOwnAdapterFolderAndWritesItBack() throws {
        let model = try tinyModel()
        let file = try SafetensorsFile(url: Self.golden.appendingPathComponent("lora-tiny-llama.safetensors"))
        let expected = try goldenAdapter(file, model: model)
        let read = try PEFTAdapterFolder.read(Self.golden.appendingPathComponent("lora-peft-adapter"), shapes: model.shapes)
        XCTAssertEqual(read.settings.rank, 4)
        XCTAssertEqual(read.settings.alpha, 8)
        XCTAssertEqual(Set(read.settings.targets), Set(allTargets))
        XCTAssertEqual(read.layers, expected.layers)

        let scratch = try Fixtures.temporaryDirectory("lora-adapter")
        defer { try? FileManager.default.removeItem(at: scratch) }
        try PEFTAdapterFolder.write(read, to: scratch, baseModel: "tiny")
        let again = try PEFTAdapterFolder.read(scratch, shapes: model.shapes)
        XCTAssertEqual(again.layers, read.layers)
        let written = try SafetensorsFile(url: scratch.appendingPathComponent(PEFTAdapterFolder.weightsName))
        XCTAssertEqual(Set(written.names), Set(try SafetensorsFile(url: Self.golden.appendingPathComponent("lora-peft-adapter/adapter_model.safetensors")).names))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted(),
                       [PEFTAdapterFolder.configName, PEFTAdapterFolder.weightsName])
    }

    func testAdapterFolderOfTheWrongShapeIsRefusedByName() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        var shapes = try FrozenLlama(checkpoint: checkpoint).shapes
        shapes[1].up = [100, 64]  // a structurally narrower up_proj than the adapter's
        XCTAssertThrowsError(try PEFTAdapterFolder.read(Self.golden.appendingPathComponent("lora-peft-adapter"), shapes: shapes)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("layers.1.mlp.up_proj.lora_B.weight") && message.contains("[100, 4]"), message)
        }
    }
}
