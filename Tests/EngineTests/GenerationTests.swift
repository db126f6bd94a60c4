import Engine
import Foundation
import TestSupport
import XCTest

/// The key/value-cached decoder, greedy and sampled generation, the chat template and streaming detokenization.
final class GenerationTests: XCTestCase {
    private func assertClose(_ actual: [Float], _ expected: ArraySlice<Float>, tolerance: Float, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(what): element count", file: file, line: line)
        var worst: Float = 0
        for (a, e) in zip(actual, expected) where !(abs(a - e) <= worst) { worst = a.isNaN ? .infinity : abs(a - e) }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(what): largest difference", file: file, line: line)
    }

    /// A cached forward (a chunk of 5 tokens, then one token at a time) gives every position the logits of the
    /// fixture's full forward (transformers, float32), and the logits of our own batch forward.
    func testCachedDecoderEqualsFullForwardLogits() throws {
        let reference = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
        let ids = try reference.int64s("input_ids").map(Int.init)
        let expected = try reference.floats("logits")  // [2, 16, 512]
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let vocab = checkpoint.config.vocabSize, seqlen = 16
        let decoder = try LlamaDecoder(checkpoint: checkpoint, capacity: seqlen)
        // Our batch forward of the same sequences, for the last-position comparison the KV path must reproduce.
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let full = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: seqlen)
        let fullLogits = head.logits(head.normed(full.lastHidden))
        for sequence in 0..<2 {
            decoder.reset()
            let row = Array(ids[(sequence * seqlen)..<((sequence + 1) * seqlen)])
            let chunk = try decoder.appendReturningAllLogits(Array(row[..<5]))
            for t in 0..<5 {
                let offset = (sequence * seqlen + t) * vocab
                assertClose(Array(chunk[(t * vocab)..<((t + 1) * vocab)]), expected[offset..<(offset + vocab)], tolerance: 1e-4,
                            "sequence \(sequence) chunk position \(t)")
            }
            for t in 5..<seqlen {
                let logits = try decoder.append([row[t]])
                let offset = (sequence * seqlen + t) * vocab
                assertClose(logits, expected[offset..<(offset + vocab)], tolerance: 1e-4, "sequence \(sequence) position \(t) vs transformers")
                assertClose(logits, fullLogits[offset..<(offset + vocab)], tolerance: 1e-5, "sequence \(sequence) position \(t) vs batch forward")
            }
            XCTAssertEqual(decoder.position, seqlen)
            XCTAssertThrowsError(try decoder.append([row[0]]), "the cache is full")
        }
    }

    /// GQA with biases and another head layout: cached single-token logits equal the batch forward's last position.
    func testCachedDecoderEqualsBatchForwardWithBiases() throws {
        var config = LlamaConfig(vocabSize: 97, hiddenSize: 48, intermediateSize: 80, numHiddenLayers: 2,
                                 numAttentionHeads: 6, numKeyValueHeads: 2, headDim: 8, ropeTheta: 500, attentionBias: true)
        config.maxPositionEmbeddings = 64
        let dir = try Fixtures.temporaryDirectory("decoder-bias")
        defer { try? FileManager.default.removeItem(at: dir) }
        var random = Engine.SplitMix64(seed: 7)
        var tensors: [(String, [Int], [Float])] = [
            (LlamaTensorNames.embedding, [97, 48], (0..<(97 * 48)).map { _ in Float(random.nextGaussian()) }),
            (LlamaTensorNames.finalNorm, [48], (0..<48).map { _ in Float(0.5 + random.nextUnit()) }),
        ]
        for layer in 0..<2 {
            let block = LlamaBlockWeights(randomWithConfig: config, layer: layer, seed: 11)
            tensors.append((LlamaTensorNames.inputNorm(layer: layer), [48], block.inputNorm))
            tensors.append((LlamaTensorNames.postAttentionNorm(layer: layer), [48], block.postAttentionNorm))
            for linear in LlamaLinear.allCases {
                tensors.append((linear.weightName(layer: layer), block.shape(linear), block.weight(linear)))
                if [.q, .k, .v].contains(linear) {
                    let n = block.shape(linear)[0]
                    tensors.append((linear.biasName(layer: layer), [n], (0..<n).map { _ in Float(random.nextGaussian()) * 0.3 }))
                }
            }
        }
        let writer = try CheckpointWriter(directory: dir, tensors: tensors.map { SafetensorsWriter.Entry(name: $0.0, dtype: .f32, shape: $0.1) })
        for tensor in tensors { try writer.append(tensor.0, floats: tensor.2) }
        try writer.finish()
        try JSONEncoder().encode(config).write(to: dir.appendingPathComponent("config.json"))
        let checkpoint = try Checkpoint(directory: dir)
        XCTAssertTrue(checkpoint.contains(LlamaLinear.q.biasName(layer: 0)))
        let ids = (0..<20).map { _ in Int(random.next() % 97) }
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let full = try llamaForward(checkpoint: checkpoint, embedding: embedding, ids: ids, seqlen: ids.count)
        let fullLogits = head.logits(head.normed(full.lastHidden))
        let decoder = try LlamaDecoder(checkpoint: checkpoint, capacity: ids.count)
        _ = try decoder.append(Array(ids[..<7]))
        for t in 7..<ids.count {
            let logits = try decoder.append([ids[t]])
            assertClose(logits, fullLogits[(t * 97)..<((t + 1) * 97)], tolerance: 1e-4, "position \(t)")
        }
    }

    /// Greedy generation on the tiny fixture gives transformers' greedy `generate` tokens (32 new tokens).
    func testGreedyGenerationEqualsTransformersOnTinyFixture() throws {
        let golden = try GenerationGoldens.load()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        XCTAssertFalse(golden.tiny.isEmpty)
        for item in golden.tiny {
            let decoder = try LlamaDecoder(checkpoint: checkpoint, capacity: item.promptIds.count + golden.newTokens)
            var streamed: [Int] = []
            let generated = try TextGeneration.generate(decoder: decoder, prompt: item.promptIds,
                                                        settings: GenerationSettings(maxNewTokens: golden.newTokens, endTokens: [2])) {
                streamed.append($0)
            }
            XCTAssertEqual(generated, item.generatedIds, "prompt \(item.promptIds)")
            XCTAssertEqual(streamed, generated)
        }
    }

    /// The SmolLM2 goldens (chat and plain prompts), when the converted model is on this machine.
    func testGreedyGenerationEqualsTransformersOnSmolLM2() throws {
        guard let directory = GenerationGoldens.smolLM2Directory() else {
            throw XCTSkip("SmolLM2-135M-Instruct is not converted on this machine (~/.cache/prune-dist; scripts/demo.sh makes it): SmolLM2 generation golden not compared")
        }
        let golden = try GenerationGoldens.load()
        let checkpoint = try Checkpoint(directory: directory)
        let tokenizer = try Tokenizer.load(modelDirectory: directory)
        let template = try ChatTemplate.load(modelDirectory: directory)
        let capacity = golden.smollm2.map(\.promptIds.count).max()! + golden.newTokens
        let decoder = try LlamaDecoder(checkpoint: checkpoint, capacity: capacity)
        for item in golden.smollm2 {
            let text = item.chat == true ? template.render(userMessage: item.prompt!) : item.prompt!
            XCTAssertEqual(tokenizer.encode(text), item.promptIds, "prompt ids of \(item.prompt!)")
            let generated = try TextGeneration.generate(decoder: decoder, prompt: item.promptIds,
                                                        settings: GenerationSettings(maxNewTokens: golden.newTokens, endTokens: [2]))
            XCTAssertEqual(generated, item.generatedIds, "generated after \(item.prompt!)")
            XCTAssertEqual(tokenizer.decode(generated), item.generatedText)
        }
        XCTAssertTrue(golden.smollm2.contains { $0.generatedIds.count == golden.newTokens && $0.chat == true },
                      "a chat golden runs the whole 32 tokens")
    }

    /// SmolLM2's chat template rendered for one user message equals apply_chat_template's text and ids.
    func testChatTemplateEqualsTransformers() throws {
        let golden = try GenerationGoldens.load()
        let template = try ChatTemplate(template: golden.chatTemplate.template)
        XCTAssertEqual(template.family, .chatML)
        let tokenizer = try Tokenizer.load(modelDirectory: Fixtures.path("fixtures/smollm2-tokenizer"))
        XCTAssertEqual(golden.chatTemplate.cases.count, 4)
        for item in golden.chatTemplate.cases {
            XCTAssertEqual(template.render(userMessage: item.message), item.text)
            XCTAssertEqual(tokenizer.encode(template.render(userMessage: item.message)), item.ids, item.message)
        }
        // Read from a model folder: tokenizer_config.json's chat_template, and chat_template.jinja before it.
        let dir = try Fixtures.temporaryDirectory("chat")
        defer { try? FileManager.default.removeItem(at: dir) }
        try JSONSerialization.data(withJSONObject: ["chat_template": golden.chatTemplate.template])
            .write(to: dir.appendingPathComponent("tokenizer_config.json"))
        XCTAssertEqual(try ChatTemplate.load(modelDirectory: dir).render(userMessage: "x"), template.render(userMessage: "x"))
        try "{{ '<|im_start|>' + messages[0]['role'] }}<|im_end|>".write(to: dir.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        let jinja = try ChatTemplate.load(modelDirectory: dir)
        XCTAssertNil(jinja.defaultSystemMessage)
        XCTAssertEqual(jinja.render(userMessage: "x"), "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n")
    }

    func testChatTemplateFamiliesAndDefaults() throws {
        // Qwen2.5's template: the default system message sits behind a branch that copies the user's own.
        let qwen = """
            {%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\
            {%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}
            """
        let template = try ChatTemplate(template: qwen)
        XCTAssertEqual(template.defaultSystemMessage, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        let llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        XCTAssertThrowsError(try ChatTemplate(template: llama3)) { error in
            XCTAssertTrue("\(error)".contains("only ChatML"), "\(error)")
        }
    }

    /// Streaming: the pieces pushed one token at a time concatenate to the decoding of all tokens, also when a
    /// character is split over byte-level tokens (an emoji, CJK).
    func testIncrementalDetokenizerConcatenatesToDecode() throws {
        let tokenizer = try Tokenizer.load(modelDirectory: Fixtures.path("fixtures/smollm2-tokenizer"))
        let golden = try GenerationGoldens.load()
        var sequences = golden.smollm2.map(\.generatedIds) + golden.chatTemplate.cases.map(\.ids)
        sequences.append(tokenizer.encode("naïve 東京 🚀🚀 x"))
        for ids in sequences {
            var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
            var text = ""
            var heldBack = false
            for id in ids {
                let piece = detokenizer.push(id)
                if piece.isEmpty { heldBack = true }
                XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"), "a partial character was printed")
                text += piece
            }
            text += detokenizer.flush()
            XCTAssertEqual(text, tokenizer.decode(ids))
            _ = heldBack
        }
        let emoji = tokenizer.encode("🚀")
        XCTAssertGreaterThan(emoji.count, 1, "the emoji spans several byte-level tokens")
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        XCTAssertEqual(detokenizer.push(emoji[0]), "")
    }

    /// Greedy is the first largest logit; top-p keeps the smallest most-probable prefix reaching p; sampling is
    /// reproducible from the seed and follows the kept distribution.
    func testSampling() throws {
        XCTAssertEqual(TokenSampler.argmax([0.5, 2, -1, 2]), 1)
        XCTAssertEqual(TokenSampler.argmax([.nan, -3, -2]), 2)
        let logits: [Float] = [1, 3, 2, 0, 2.5]
        let probabilities = logits.map { exp(Double($0)) }.map { $0 / logits.map { exp(Double($0)) }.reduce(0, +) }
        let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }
        for topP in [0.1, 0.5, 0.8, 0.95, 1.0] {
            var expected: [Int] = [], sum = 0.0
            for i in order where sum < topP { expected.append(i); sum += probabilities[i] }
            let kept = TokenSampler.nucleus(logits, temperature: 1, topP: topP)
            XCTAssertEqual(kept.map(\.token), expected, "top-p \(topP)")
            XCTAssertEqual(kept.reduce(0) { $0 + $1.probability }, 1, accuracy: 1e-12)
        }
        // Temperature sharpens: at 0.25 the largest keeps more mass than at 1.
        XCTAssertGreaterThan(TokenSampler.nucleus(logits, temperature: 0.25, topP: 1)[0].probability, probabilities[1])
        let settings = GenerationSettings(maxNewTokens: 1, temperature: 1, topP: 0.8, seed: 42)
        var a = TokenSampler(settings), b = TokenSampler(settings)
        var counts = [Int: Int]()
        for _ in 0..<4000 {
            let token = a.next(logits)
            XCTAssertEqual(token, b.next(logits))
            counts[token, default: 0] += 1
        }
        let kept = TokenSampler.nucleus(logits, temperature: 1, topP: 0.8)
        XCTAssertEqual(Set(counts.keys), Set(kept.map(\.token)))
        for entry in kept {
            XCTAssertEqual(Double(counts[entry.token]!) / 4000, entry.probability, accuracy: 0.03)
        }
    }
}
