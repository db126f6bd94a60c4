import Engine
import Foundation
import TestSupport
import XCTest

/// The backward pass: each layer's backward against central differences of its own forward, then whole-model
/// gradients against PyTorch's `loss.backward()` (the golden tiny-llama-grads.safetensors).
final class GradientTests: XCTestCase {
    // MARK: finite differences

    private var random = SplitMix64(seed: 0x6772_6164)

    private func gaussians(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in Float(random.nextGaussian()) * scale }
    }

    /// Σ projection ⊙ values in Double: a scalar whose gradient with respect to `values` is `projection`.
    private func project(_ values: [Float], _ projection: [Float]) -> Double {
        zip(values, projection).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Compares `analytic` with Double central differences of `loss` around `point`, every element.
    /// The error is relative to the largest |analytic| entry so tiny entries do not dominate.
    private func assertMatchesFiniteDifferences(_ what: String, point: [Float], analytic: [Float], step: Float = 1e-3,
                                                tolerance: Double = 1e-2, loss: ([Float]) -> Double,
                                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(point.count, analytic.count, "\(what): gradient size", file: file, line: line)
        var worst = 0.0, at = 0, largest = 0.0
        for i in 0..<point.count {
            var plus = point, minus = point
            plus[i] += step
            minus[i] -= step
            let numeric = (loss(plus) - loss(minus)) / Double(plus[i] - minus[i])
            largest = max(largest, abs(Double(analytic[i])))
            if abs(numeric - Double(analytic[i])) > worst { worst = abs(numeric - Double(analytic[i])); at = i }
        }
        XCTAssertGreaterThan(largest, 1e-3, "\(what): the analytic gradient is (nearly) zero", file: file, line: line)
        XCTAssertLessThan(worst / largest, tolerance,
                          "\(what): worst |analytic − numeric| \(worst) at element \(at), max |gradient| \(largest)",
                          file: file, line: line)
    }

    func testLinearBackwardMatchesFiniteDifferences() {
        let tokens = 5, inFeatures = 6, outFeatures = 4
        let x = gaussians(tokens * inFeatures), weight = gaussians(outFeatures * inFeatures), bias = gaussians(outFeatures)
        let projection = gaussians(tokens * outFeatures)
        func loss(_ x: [Float], _ weight: [Float], _ bias: [Float]) -> Double {
            var out = [Float](repeating: 0, count: tokens * outFeatures)
            linearForward(&out, x, weight, bias, tokens: tokens, inFeatures: inFeatures, outFeatures: outFeatures)
            return project(out, projection)
        }
        // Start from non-zero gradients: backward must add, not overwrite.
        let start: Float = 0.25
        var dX = [Float](repeating: start, count: x.count), dWeight = [Float](repeating: start, count: weight.count)
        var dBias = [Float](repeating: start, count: bias.count)
        linearBackward(&dX, &dWeight, &dBias, projection, x, weight, tokens: tokens, inFeatures: inFeatures, outFeatures: outFeatures)
        assertMatchesFiniteDifferences("linear dX", point: x, analytic: dX.map { $0 - start }) { loss($0, weight, bias) }
        assertMatchesFiniteDifferences("linear dWeight", point: weight, analytic: dWeight.map { $0 - start }) { loss(x, $0, bias) }
        assertMatchesFiniteDifferences("linear dBias", point: bias, analytic: dBias.map { $0 - start }) { loss(x, weight, $0) }
    }

    func testRMSNormBackwardMatchesFiniteDifferences() {
        let tokens = 4, dim = 8, eps: Float = 1e-5
        let x = gaussians(tokens * dim), weight = gaussians(dim).map { 1 + 0.3 * $0 }
        let projection = gaussians(tokens * dim)
        func loss(_ x: [Float], _ weight: [Float]) -> Double {
            var out = [Float](repeating: 0, count: tokens * dim)
            rmsnormForward(&out, x, weight, tokens: tokens, dim: dim, eps: eps)
            return project(out, projection)
        }
        var dX = [Float](repeating: 0, count: x.count), dWeight = [Float](repeating: 0, count: dim)
        rmsnormBackward(&dX, &dWeight, projection, x, weight, tokens: tokens, dim: dim, eps: eps)
        assertMatchesFiniteDifferences("rmsnorm dX", point: x, analytic: dX) { loss($0, weight) }
        assertMatchesFiniteDifferences("rmsnorm dWeight", point: weight, analytic: dWeight) { loss(x, $0) }
    }

    private func smallConfig(heads: Int, kvHeads: Int, headDim: Int, theta: Double = 10000) -> LlamaConfig {
        LlamaConfig(vocabSize: 11, hiddenSize: 12, intermediateSize: 10, numHiddenLayers: 2,
                    numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: headDim, rmsNormEps: 1e-5,
                    ropeTheta: theta)
    }

    func testRopeBackwardMatchesFiniteDifferences() throws {
        let seqlen = 5, tokens = 2 * seqlen, heads = 2, headDim = 6
        // A small theta so every frequency turns by a visible angle within five positions.
        let rope = try RopeTable(config: smallConfig(heads: heads, kvHeads: heads, headDim: headDim, theta: 3), positions: seqlen)
        let x = gaussians(tokens * heads * headDim), projection = gaussians(x.count)
        func loss(_ x: [Float]) -> Double {
            var out = x
            ropeForward(&out, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
            return project(out, projection)
        }
        var dX = projection
        ropeBackward(&dX, rope: rope, tokens: tokens, heads: heads, seqlen: seqlen)
        assertMatchesFiniteDifferences("rope dX", point: x, analytic: dX, loss: loss)
    }

    /// Grouped-query (4 query heads on 2 key/value heads), two sequences, causal mask.
    func testAttentionBackwardMatchesFiniteDifferences() {
        let seqlen = 5, tokens = 2 * seqlen, heads = 4, kvHeads = 2, headDim = 3
        let q = gaussians(tokens * heads * headDim), k = gaussians(tokens * kvHeads * headDim)
        let v = gaussians(tokens * kvHeads * headDim), projection = gaussians(q.count)
        func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            var out = [Float](repeating: 0, count: tokens * heads * headDim)
            var probabilities = [Float](repeating: 0, count: seqlen * seqlen)
            attentionForward(&out, q, k, v, probabilities: &probabilities, tokens: tokens, seqlen: seqlen,
                             heads: heads, kvHeads: kvHeads, headDim: headDim)
            return project(out, projection)
        }
        var dQ = [Float](repeating: 0, count: q.count), dK = [Float](repeating: 0, count: k.count)
        var dV = [Float](repeating: 0, count: v.count)
        attentionBackward(&dQ, &dK, &dV, projection, q, k, v, tokens: tokens, seqlen: seqlen,
                          heads: heads, kvHeads: kvHeads, headDim: headDim)
        assertMatchesFiniteDifferences("attention dQ", point: q, analytic: dQ) { loss($0, k, v) }
        assertMatchesFiniteDifferences("attention dK", point: k, analytic: dK) { loss(q, $0, v) }
        assertMatchesFiniteDifferences("attention dV", point: v, analytic: dV) { loss(q, k, $0) }
        // Causality: the last position of each sequence is read by no earlier query, and the first
        // query attends to itself alone, so it has no gradient (softmax of a single score is 1).
        let kvStride = kvHeads * headDim, qStride = heads * headDim
        for start in [0, seqlen] {
            XCTAssertTrue(dQ[(start * qStride)..<((start + 1) * qStride)].allSatisfy { $0 == 0 },
                          "the first query of a sequence cannot change its output")
            let lastValue = dV[((start + seqlen - 1) * kvStride)..<((start + seqlen) * kvStride)]
            XCTAssertFalse(lastValue.allSatisfy { $0 == 0 }, "the last value is read by the last query")
        }
    }

    func testSwiGLUBackwardMatchesFiniteDifferences() {
        let count = 24
        let gate = gaussians(count, scale: 2), up = gaussians(count), projection = gaussians(count)
        func loss(_ gate: [Float], _ up: [Float]) -> Double {
            var out = [Float](repeating: 0, count: count)
            swigluForward(&out, gate, up, count: count)
            return project(out, projection)
        }
        var dGate = [Float](repeating: 0, count: count), dUp = [Float](repeating: 0, count: count)
        swigluBackward(&dGate, &dUp, projection, gate, up, count: count)
        assertMatchesFiniteDifferences("swiglu dGate", point: gate, analytic: dGate) { loss($0, up) }
        assertMatchesFiniteDifferences("swiglu dUp", point: up, analytic: dUp) { loss(gate, $0) }
    }

    func testCrossEntropyBackwardMatchesFiniteDifferences() {
        let vocab = 9, target = 4, lossScale: Float = 0.7
        let logits = gaussians(vocab, scale: 2)
        var dLogits = logits
        dLogits.withUnsafeMutableBufferPointer { buffer in
            // In place, as the head does it.
            crossEntropyBackward(buffer.baseAddress!, buffer.baseAddress!, target: target, vocabSize: vocab, lossScale: lossScale)
        }
        assertMatchesFiniteDifferences("cross-entropy dLogits", point: logits, analytic: dLogits) {
            Double(lossScale) * crossEntropy($0, target: target, vocabSize: vocab)
        }
    }

    func testEmbeddingBackwardSumsRepeatedTokens() {
        let vocab = 6, hidden = 3, ids = [2, 5, 2, 0]
        let table = gaussians(vocab * hidden), projection = gaussians(ids.count * hidden)
        func loss(_ table: [Float]) -> Double {
            project(ids.flatMap { table[($0 * hidden)..<(($0 + 1) * hidden)] }, projection)
        }
        var dTable = [Float](repeating: 0, count: table.count)
        embeddingBackward(&dTable, projection, ids: ids, hiddenSize: hidden)
        assertMatchesFiniteDifferences("embedding dTable", point: table, analytic: dTable, loss: loss)
    }

    // MARK: whole model

    private func referenceIDs() throws -> [Int] {
        try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors")).int64s("input_ids").map(Int.init)
    }

    /// Every tensor within 1e-4 of its own largest |gradient|; prints the worst ratio per tensor kind.
    private func assertGradientsMatch(_ actual: [String: [Float]], _ expected: [String: [Float]], tolerance: Float = 1e-4,
                                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Set(actual.keys), Set(expected.keys), "gradient tensor names", file: file, line: line)
        var worstOverall: Float = 0
        for name in expected.keys.sorted() {
            guard let got = actual[name], let want = expected[name] else { continue }
            XCTAssertEqual(got.count, want.count, "\(name): element count", file: file, line: line)
            let largest = want.reduce(0) { max($0, abs($1)) }
            var worst: Float = 0, at = 0
            for i in 0..<min(got.count, want.count) where !(abs(got[i] - want[i]) <= worst) {
                worst = got[i].isNaN ? .infinity : abs(got[i] - want[i])
                at = i
            }
            XCTAssertGreaterThan(largest, 0, "\(name): golden gradient is all zero", file: file, line: line)
            XCTAssertLessThanOrEqual(worst, tolerance * largest,
                                     "\(name): worst |difference| \(worst) at element \(at), max |g| \(largest)",
                                     file: file, line: line)
            worstOverall = max(worstOverall, worst / largest)
        }
        print("gradients: worst |difference| / max |g| over \(expected.count) tensors = \(worstOverall)")
    }

    func testGradientsMatchPyTorchOnTinyLlama() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let golden = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-grads.safetensors"))
        let (meanNLL, gradients) = try llamaGradients(checkpoint: checkpoint, ids: try referenceIDs(), seqlen: 16)
        XCTAssertEqual(golden.names.count, 30)
        var expected: [String: [Float]] = [:]
        for name in golden.names { expected[name] = try golden.floats(name) }
        assertGradientsMatch(gradients, expected)
        let loss = try XCTUnwrap(Double(golden.metadata["loss"] ?? ""))
        print("gradients: mean NLL \(meanNLL), PyTorch loss \(loss)")
        XCTAssertEqual(meanNLL, loss, accuracy: 1e-5)
    }

    /// Two halves of a batch, each scaled by the whole batch's prediction count, sum to the whole batch's
    /// gradients: what ranks splitting the calibration set rely on.
    func testSplitBatchGradientsSumToWholeBatch() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let ids = try referenceIDs()
        let (wholeNLL, whole) = try llamaGradients(checkpoint: checkpoint, ids: ids, seqlen: 16)
        var summed: [String: [Float]] = [:]
        var nllSum = 0.0
        for half in [ids[0..<16], ids[16..<32]] {
            let model = try llamaGradientsStreamed(checkpoint: checkpoint, ids: Array(half), seqlen: 16, lossDivisor: 30) { block in
                summed.merge(block.tensors) { zip($0, $1).map { $0 + $1 } }
            }
            nllSum += model.nllSum
            XCTAssertEqual(model.predictions, 15)
            summed.merge([LlamaTensorNames.embedding: model.embedding, LlamaTensorNames.finalNorm: model.finalNorm,
                          LlamaTensorNames.lmHead: try XCTUnwrap(model.lmHead)]) { zip($0, $1).map { $0 + $1 } }
        }
        // GEMMs over 16 rows and over 32 round differently (OpenBLAS's AVX2 kernels), hence not 1e-9.
        XCTAssertEqual(nllSum / 30, wholeNLL, accuracy: 1e-6)
        assertGradientsMatch(summed, whole, tolerance: 1e-5)
    }

    /// The Fisher term's Σ_n g_n², made in one pass, against one llamaGradients call per sequence; the
    /// batch gradient of that pass still matches PyTorch's.
    func testPerSequenceSquaresMatchOneBackwardPerSequence() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let ids = try referenceIDs()
        var expected: [String: [Float]] = [:]
        for sequence in [ids[0..<16], ids[16..<32]] {
            let (_, alone) = try llamaGradients(checkpoint: checkpoint, ids: Array(sequence), seqlen: 16)
            for layer in 0..<3 {
                for linear in LlamaLinear.allCases {
                    let name = linear.weightName(layer: layer)
                    let squares = alone[name]!.map { $0 * $0 }
                    expected[name] = expected[name].map { zip($0, squares).map { $0 + $1 } } ?? squares
                }
            }
        }
        var squares: [String: [Float]] = [:], batch: [String: [Float]] = [:]
        let model = try llamaGradientsStreamed(checkpoint: checkpoint, ids: ids, seqlen: 16, perSequenceSquares: true) { block in
            for (linear, values) in try XCTUnwrap(block.squaredPerSequence).all { squares[linear.weightName(layer: block.layer)] = values }
            batch.merge(block.tensors) { _, new in new }
        }
        assertGradientsMatch(squares, expected, tolerance: 1e-5)
        let golden = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-grads.safetensors"))
        var goldenBlocks: [String: [Float]] = [:]
        for name in batch.keys { goldenBlocks[name] = try golden.floats(name) }
        assertGradientsMatch(batch, goldenBlocks)
        XCTAssertEqual(model.meanNLL, try XCTUnwrap(Double(golden.metadata["loss"] ?? "")), accuracy: 1e-5)
    }

    /// Writes a model directory: `tensors` in one model.safetensors next to `config`.
    private func writeCheckpoint(_ directory: URL, config: LlamaConfig, tensors: [(String, [Int], [Float])]) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try config.jsonData().write(to: directory.appendingPathComponent("config.json"))
        let writer = try SafetensorsWriter(url: directory.appendingPathComponent("model.safetensors"),
                                           tensors: tensors.map { .init(name: $0.0, dtype: .f32, shape: $0.1) })
        for (name, _, values) in tensors { try writer.append(name, floats: values) }
        try writer.finish()
    }

    /// A tied head's gradient is the untied head's plus the embedding's, with lm_head set equal to the table.
    func testTiedHeadGradientLandsOnEmbedding() throws {
        let source = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let directory = try Fixtures.temporaryDirectory("tied-gradients")
        var tensors: [(String, [Int], [Float])] = []
        for name in source.tensorNames where name != LlamaTensorNames.lmHead {
            tensors.append((name, try source.info(name).shape, try source.floats(name)))
        }
        var tiedConfig = source.config
        tiedConfig.tieWordEmbeddings = true
        let tiedURL = directory.appendingPathComponent("tied"), untiedURL = directory.appendingPathComponent("untied")
        try writeCheckpoint(tiedURL, config: tiedConfig, tensors: tensors)
        let table = try source.floats(LlamaTensorNames.embedding)
        try writeCheckpoint(untiedURL, config: source.config,
                            tensors: tensors + [(LlamaTensorNames.lmHead, [source.config.vocabSize, source.config.hiddenSize], table)])

        let ids = try referenceIDs()
        let (tiedNLL, tied) = try llamaGradients(checkpoint: Checkpoint(directory: tiedURL), ids: ids, seqlen: 16)
        var (untiedNLL, untied) = try llamaGradients(checkpoint: Checkpoint(directory: untiedURL), ids: ids, seqlen: 16)
        XCTAssertNil(tied[LlamaTensorNames.lmHead], "a tied head has no gradient of its own")
        XCTAssertEqual(tiedNLL, untiedNLL, accuracy: 1e-9)
        let head = try XCTUnwrap(untied.removeValue(forKey: LlamaTensorNames.lmHead))
        untied[LlamaTensorNames.embedding] = zip(untied[LlamaTensorNames.embedding]!, head).map { $0 + $1 }
        assertGradientsMatch(tied, untied, tolerance: 1e-6)
    }

    /// One block with a bias on q, k, v (Qwen2-style), GQA 4/2: the block backward against finite
    /// differences of the loss Σ projection ⊙ output through the block forward, for a few entries of each
    /// parameter and of the input, so a wiring mistake between layer functions shows up here.
    func testBlockBackwardMatchesFiniteDifferences() throws {
        let config = LlamaConfig(vocabSize: 11, hiddenSize: 12, intermediateSize: 10, numHiddenLayers: 1,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 3, rmsNormEps: 1e-5, ropeTheta: 3)
        let seqlen = 4, tokens = 2 * seqlen
        let rope = try RopeTable(config: config, positions: seqlen)
        var weights = LlamaBlockWeights(randomWithConfig: config, layer: 0, seed: 7)
        for linear in [LlamaLinear.q, .k, .v] { weights.setBias(linear, gaussians(weights.shape(linear)[0], scale: 0.5)) }
        let input = gaussians(tokens * config.hiddenSize), projection = gaussians(tokens * config.hiddenSize)
        func loss(_ input: [Float], _ weights: LlamaBlockWeights) -> Double {
            var hidden = input
            llamaBlockForward(&hidden, weights: weights, rope: rope, seqlen: seqlen)
            return project(hidden, projection)
        }
        let activations = llamaBlockForwardKeepingActivations(input, weights: weights, rope: rope, seqlen: seqlen)
        XCTAssertEqual(activations.output, llamaBlockTrace(input, weights: weights, rope: rope, seqlen: seqlen).output,
                       "the forward that keeps activations computes what llamaBlockTrace computes")
        var dInput = projection
        let gradients = llamaBlockBackward(&dInput, activations: activations, weights: weights, rope: rope, seqlen: seqlen)

        assertMatchesFiniteDifferences("block dInput", point: input, analytic: dInput) { loss($0, weights) }
        for linear in LlamaLinear.allCases {
            let weight = weights.weight(linear)
            assertMatchesFiniteDifferences("block d\(linear.rawValue)", point: weight, analytic: gradients.weights[linear]) {
                var changed = weights
                changed.setWeight(linear, $0)
                return loss(input, changed)
            }
        }
        assertMatchesFiniteDifferences("block dInputNorm", point: weights.inputNorm, analytic: gradients.inputNorm) {
            var changed = weights
            changed.inputNorm = $0
            return loss(input, changed)
        }
        assertMatchesFiniteDifferences("block dPostAttentionNorm", point: weights.postAttentionNorm, analytic: gradients.postAttentionNorm) {
            var changed = weights
            changed.postAttentionNorm = $0
            return loss(input, changed)
        }
        for linear in [LlamaLinear.q, .k, .v] {
            assertMatchesFiniteDifferences("block d\(linear.rawValue) bias", point: weights.bias(linear)!, analytic: gradients.biases[linear]!) {
                var changed = weights
                changed.setBias(linear, $0)
                return loss(input, changed)
            }
        }
        XCTAssertEqual(gradients.tensors.count, 12, "2 norms, 7 weights, 3 biases")
    }
}
