import Engine
import Foundation
import TestSupport
import XCTest

/// The forward pass against transformers' outputs on tiny-llama (the golden tiny-llama-reference.safetensors).
final class ForwardTests: XCTestCase {
    private func reference() throws -> SafetensorsFile {
        try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
    }

    private func inputIDs(_ reference: SafetensorsFile) throws -> [Int] {
        try reference.int64s("input_ids").map(Int.init)
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], tolerance: Float, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(what): element count", file: file, line: line)
        var worst: Float = 0, at = 0
        for i in 0..<min(actual.count, expected.count) where abs(actual[i] - expected[i]) > worst || actual[i].isNaN {
            worst = actual[i].isNaN ? .infinity : abs(actual[i] - expected[i])
            at = i
        }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(what): worst |difference| \(worst) at element \(at)", file: file, line: line)
    }

    func testFloat32HiddenStatesLogitsAndNLLMatchTransformers() throws {
        let reference = try reference()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let ids = try inputIDs(reference)
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let forward = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: 16, keepHiddenStates: true)

        XCTAssertEqual(forward.hiddenStates.count, 4)
        assertClose(forward.hiddenStates[0], try reference.floats("hidden.embed"), tolerance: 1e-4, "embedding")
        for layer in 0..<3 {
            assertClose(forward.hiddenStates[layer + 1], try reference.floats("hidden.layer\(layer)"), tolerance: 1e-4, "block \(layer) output")
        }
        let normed = head.normed(forward.lastHidden)
        assertClose(normed, try reference.floats("hidden.final_norm"), tolerance: 1e-4, "final norm")
        assertClose(head.logits(normed), try reference.floats("logits"), tolerance: 1e-4, "logits")

        let nll = head.nextTokenNLL(hidden: forward.lastHidden, ids: ids, seqlen: 16)
        assertClose(nll.map(Float.init), try reference.floats("nll_per_token"), tolerance: 1e-4, "per-token NLL")
        let meanNLL = nll.reduce(0, +) / Double(nll.count)
        let expected = try XCTUnwrap(Double(reference.metadata["mean_nll"] ?? ""))
        XCTAssertEqual(meanNLL, expected, accuracy: 1e-5)
    }

    func testBF16ShardedCheckpointReproducesItsGoldens() throws {
        let reference = try reference()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama-bf16-sharded"))
        XCTAssertEqual(checkpoint.files.count, 2, "loaded through the index")
        XCTAssertEqual(checkpoint.storageDType, .bf16)
        let ids = try inputIDs(reference)
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let forward = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: 16)
        assertClose(head.logits(head.normed(forward.lastHidden)), try reference.floats("logits_bf16_weights"), tolerance: 1e-4, "bf16 logits")
        let nll = head.nextTokenNLL(hidden: forward.lastHidden, ids: ids, seqlen: 16)
        let expected = try XCTUnwrap(Double(reference.metadata["mean_nll_bf16_weights"] ?? ""))
        XCTAssertEqual(nll.reduce(0, +) / Double(nll.count), expected, accuracy: 1e-5)
    }

    func testPerplexityOverTwoWindowsIsExpOfMeanNLL() throws {
        let reference = try reference()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let windows = try Perplexity.windows(tokens: try inputIDs(reference), seqlen: 16)
        XCTAssertEqual(windows.count, 2)
        let perWindow = try Perplexity.windowMeanNLL(checkpoint: checkpoint, windows: windows, seqlen: 16)
        let expected = try XCTUnwrap(Double(reference.metadata["mean_nll"] ?? ""))
        XCTAssertEqual(Perplexity.perplexity(windowMeanNLL: perWindow), Foundation.exp(expected), accuracy: 1e-4 * Foundation.exp(expected))
        // Window means come from the golden per-token NLLs, row by row.
        let golden = try reference.floats("nll_per_token")
        for w in 0..<2 {
            let mean = golden[(w * 15)..<((w + 1) * 15)].reduce(0.0) { $0 + Double($1) } / 15
            XCTAssertEqual(perWindow[w], mean, accuracy: 1e-5)
        }
    }

    func testCausalityLaterTokensDoNotChangeEarlierOutputs() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        var ids = try inputIDs(try reference())
        let before = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: 16).lastHidden
        ids[10] = (ids[10] + 1) % 512
        let after = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: 16).lastHidden
        XCTAssertEqual(Array(before[0..<(10 * 64)]), Array(after[0..<(10 * 64)]), "positions before the change are untouched")
        XCTAssertNotEqual(Array(before[(10 * 64)..<(11 * 64)]), Array(after[(10 * 64)..<(11 * 64)]))
        XCTAssertEqual(Array(before[(16 * 64)...]), Array(after[(16 * 64)...]), "the other sequence is untouched")
    }

    func testLlama3RopeScalingMatchesClosedForm() throws {
        // Llama-3.1's parameters: factor 8, low 1, high 4, original context 8192, theta 500000, head_dim 128.
        var config = LlamaConfig(vocabSize: 8, hiddenSize: 128, intermediateSize: 8, numHiddenLayers: 1,
                                 numAttentionHeads: 1, numKeyValueHeads: 1)
        config.ropeTheta = 500_000
        config.ropeScaling = .init(ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
        let scaled = try RopeTable.inverseFrequencies(config: config)
        config.ropeScaling = nil
        let plain = try RopeTable.inverseFrequencies(config: config)
        for i in 0..<64 {
            let wavelength = 2 * Double.pi / plain[i]
            if wavelength < 8192.0 / 4 {
                XCTAssertEqual(scaled[i], plain[i], "high frequency \(i) kept")
            } else if wavelength > 8192.0 {
                XCTAssertEqual(scaled[i], plain[i] / 8, accuracy: 1e-18, "low frequency \(i) divided by factor")
            } else {
                let smooth = (8192 / wavelength - 1) / 3
                XCTAssertEqual(scaled[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], accuracy: 1e-15)
                XCTAssertLessThan(scaled[i], plain[i])
                XCTAssertGreaterThan(scaled[i], plain[i] / 8)
            }
        }
        config.ropeScaling = .init(ropeType: "yarn", factor: 4)
        XCTAssertThrowsError(try RopeTable.inverseFrequencies(config: config)) { error in
            XCTAssertTrue("\(error)".contains("yarn"))
        }
    }

    func testTokenOutsideVocabularyIsAnError() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        XCTAssertThrowsError(try embedding.embed([1, 2, 512])) { error in
            XCTAssertTrue("\(error)".contains("512"))
        }
    }

    /// Stage-by-stage advancing, with a linear replaced between stages, equals a full trace of the final weights
    /// from the stage that linear first acts on.
    func testStagedTraceContinuesWithChangedWeights() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let hidden = try embedding.embed(try inputIDs(try reference()))
        let rope = try RopeTable(config: checkpoint.config, positions: 16)
        let dense = try LlamaBlockWeights(checkpoint: checkpoint, layer: 1)
        var changed = dense
        changed.setWeight(.o, dense.weight(.o).map { $0 * 0.5 })

        let full = llamaBlockTrace(hidden, weights: dense, rope: rope, seqlen: 16)
        var staged = LlamaBlockTrace(input: hidden, seqlen: 16)
        for stage in LlamaBlockStage.allCases { staged.advance(to: stage, weights: dense, rope: rope) }
        XCTAssertEqual(staged.output, full.output, "stepwise equals all at once")

        var switched = LlamaBlockTrace(input: hidden, seqlen: 16)
        switched.advance(to: .attentionOutput, weights: dense, rope: rope)
        switched.advance(to: .output, weights: changed, rope: rope)
        let reference = llamaBlockTrace(hidden, weights: changed, rope: rope, seqlen: 16)
        XCTAssertEqual(switched.input(.attentionOutput), full.input(.attentionOutput), "o does not act before its input")
        XCTAssertEqual(switched.output, reference.output)
        XCTAssertNotEqual(switched.output, full.output)
    }

    /// A trace that keeps down's output (KRP's dense stream) computes the same bits, `mlpOutput` is down(mlpHidden),
    /// and releasing the stages only the output reads leaves every value KRP's statistics read.
    func testTraceKeepingMLPOutputGivesTheSameBitsAndReleasesWhatOnlyTheOutputReads() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let hidden = try LlamaEmbedding(checkpoint: checkpoint).embed(try inputIDs(try reference()))
        let rope = try RopeTable(config: checkpoint.config, positions: 16)
        let block = try LlamaBlockWeights(checkpoint: checkpoint, layer: 1)
        let plain = llamaBlockTrace(hidden, weights: block, rope: rope, seqlen: 16)
        var keeping = LlamaBlockTrace(input: hidden, seqlen: 16)
        keeping.keepsMLPOutput = true
        keeping.advance(to: .output, weights: block, rope: rope)
        XCTAssertEqual(keeping.output, plain.output)
        let tokens = hidden.count / block.hiddenSize
        var down = [Float](repeating: 0, count: tokens * block.hiddenSize)
        linearForward(&down, plain.input(.mlpHidden), block.weight(.down), nil, tokens: tokens, inFeatures: block.intermediateSize,
                      outFeatures: block.hiddenSize)
        XCTAssertEqual(keeping.mlpOutput, down)
        keeping.releaseStagesOnlyTheOutputReads()
        XCTAssertTrue(keeping.afterAttention.isEmpty && keeping.mlpHidden.isEmpty)
        for input in [LlamaLinearInput.attentionInput, .attentionOutput, .mlpInput] {
            XCTAssertEqual(keeping.input(input), plain.input(input), "\(input)")
        }
        XCTAssertEqual(keeping.output, plain.output)
        XCTAssertEqual(keeping.mlpOutput, down)
        var plainReleased = plain
        plainReleased.releaseStagesOnlyTheOutputReads()
        XCTAssertEqual(plainReleased.input(.mlpHidden), plain.input(.mlpHidden), "without mlpOutput the hidden state stays")
    }

    /// One scratch reused over sequences of different lengths, over blocks, and by a rewound trace gives the
    /// same bits as a fresh forward each time, and never writes into an array the caller still holds.
    func testReusedScratchGivesTheSameBits() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let ids = try inputIDs(try reference())
        let rope = try RopeTable(config: checkpoint.config, positions: 16)
        let blocks = try (0..<checkpoint.config.numHiddenLayers).map { try LlamaBlockWeights(checkpoint: checkpoint, layer: $0) }
        let scratch = LlamaBlockScratch()
        for seqlen in [16, 8, 16] {
            let input = try embedding.embed(Array(ids.prefix(seqlen)))
            var reused = input, fresh = input
            for block in blocks {
                let before = reused
                llamaBlockForward(&reused, weights: block, rope: rope, seqlen: seqlen, scratch: scratch)
                llamaBlockForward(&fresh, weights: block, rope: rope, seqlen: seqlen)
                XCTAssertEqual(reused, fresh, "seqlen \(seqlen), block \(block.layer)")
                XCTAssertNotEqual(before, reused, "the caller's copy of the input is left alone")
            }
            XCTAssertEqual(input, try embedding.embed(Array(ids.prefix(seqlen))))
        }
        var trace = LlamaBlockTrace(input: try embedding.embed(ids), seqlen: 16)
        trace.advance(to: .mlpHidden, weights: blocks[0], rope: rope, scratch: scratch)
        let kept = trace.input(.mlpInput)
        trace.rewind(to: .attentionInput)
        var changed = blocks[0]
        changed.setWeight(.o, blocks[0].weight(.o).map { $0 * 0.5 })
        trace.advance(to: .output, weights: changed, rope: rope, scratch: scratch)
        XCTAssertEqual(trace.output, llamaBlockTrace(try embedding.embed(ids), weights: changed, rope: rope, seqlen: 16).output)
        XCTAssertEqual(kept, llamaBlockTrace(try embedding.embed(ids), weights: blocks[0], rope: rope, seqlen: 16).input(.mlpInput),
                       "a stage read before the rewind keeps its values")
    }
    /// Attention multiplies each block of queries only against the keys up to its last row; over several blocks, a
    /// ragged last one and grouped key/value heads it must be causal attention computed directly in Double.
    func testAttentionByQueryBlocksIsCausalAttention() {
        let (sequences, seqlen, heads, kvHeads, headDim) = (2, 300, 4, 2, 8)
        let tokens = sequences * seqlen, qDim = heads * headDim, kvDim = kvHeads * headDim
        var random = SplitMix64(seed: 41)
        let q = (0..<(tokens * qDim)).map { _ in Float(random.nextGaussian()) }
        let k = (0..<(tokens * kvDim)).map { _ in Float(random.nextGaussian()) }
        let v = (0..<(tokens * kvDim)).map { _ in Float(random.nextGaussian()) }
        var out = [Float](repeating: .nan, count: tokens * qDim)
        var probabilities = [Float](repeating: .nan, count: seqlen * seqlen)
        attentionForward(&out, q, k, v, probabilities: &probabilities, tokens: tokens, seqlen: seqlen,
                         heads: heads, kvHeads: kvHeads, headDim: headDim)
        var worst = 0.0
        for s in 0..<sequences {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                for t in 0..<seqlen {
                    let query = (s * seqlen + t) * qDim + h * headDim
                    var scores = (0...t).map { j -> Double in
                        let key = (s * seqlen + j) * kvDim + g * headDim
                        return (0..<headDim).reduce(0.0) { $0 + Double(q[query + $1]) * Double(k[key + $1]) } / Double(headDim).squareRoot()
                    }
                    let largest = scores.max()!
                    scores = scores.map { exp($0 - largest) }
                    let total = scores.reduce(0, +)
                    for e in 0..<headDim {
                        let expected = (0...t).reduce(0.0) { $0 + scores[$1] / total * Double(v[(s * seqlen + $1) * kvDim + g * headDim + e]) }
                        worst = max(worst, abs(Double(out[query + e]) - expected))
                    }
                }
            }
        }
        XCTAssertLessThan(worst, 1e-5, "largest difference from causal attention in Double")
    }
}
