import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist convert` as a user runs it: small GGUF models built here (every block format, llama and
/// qwen2), the bundled SmolLM2 file, and broken files that must fail with a precise error and leave
/// nothing behind.
final class ConvertTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory("convert") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    // MARK: a tiny model

    static let hidden = 256, heads = 4, kvHeads = 2, headDim = 64, ffn = 512, layers = 2, vocab = 40

    /// Random blocks of `type` with finite float16 scales at the places the format keeps them.
    static func blocks(_ type: GGMLType, count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        func next() -> UInt8 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        switch type {
        case .f32: return encode((0..<count).map { _ in Float(Int(next()) - 128) / 64 }, as: .f32)
        case .f16: return encode((0..<count).map { _ in Float(Int(next()) - 128) / 64 }, as: .f16)
        case .bf16: return encode((0..<count).map { _ in Float(Int(next()) - 128) / 64 }, as: .bf16)
        default: break
        }
        let (elements, size) = type.block
        let scalePositions: [Int]
        switch type {
        case .q4_1, .q5_1, .q4_K, .q5_K: scalePositions = [0, 2]
        case .q6_K: scalePositions = [208]
        default: scalePositions = [0]
        }
        var out: [UInt8] = []
        for _ in 0..<count / elements {
            var block = (0..<size).map { _ in next() }
            for p in scalePositions {
                let scale = Float16(Float(Int(next() % 100) + 1) / 4000 * (next() % 2 == 0 ? 1 : -1))
                block[p] = UInt8(scale.bitPattern & 0xff)
                block[p + 1] = UInt8(scale.bitPattern >> 8)
            }
            out += block
        }
        return out
    }

    /// A llama (q/k rows permuted as llama.cpp stores them) or qwen2 (with q/k/v biases) model whose
    /// linears cycle through every block format. `tied`: no output.weight.
    static func tinyModel(architecture: String = "llama", tied: Bool = false, pre: String = "llama-bpe",
                          omit: String? = nil, biases: Bool? = nil) -> GGUFWriter {
        let a = architecture
        // Two control tokens, one user-defined, the letters a-z, then filler.
        var tokens = ["<|begin|>", "<|end|>", "<tool>"]
        tokens += (0..<26).map { String(UnicodeScalar(UInt8(0x61 + $0))) }
        tokens += (tokens.count..<vocab).map { "t\($0)" }
        var w = GGUFWriter()
        w.metadata = [
            (key: "general.architecture", value: .string(a)),
            (key: "general.alignment", value: .uint32(64)),
            (key: "\(a).block_count", value: .uint32(UInt32(layers))),
            (key: "\(a).context_length", value: .uint32(1024)),
            (key: "\(a).embedding_length", value: .uint32(UInt32(hidden))),
            (key: "\(a).feed_forward_length", value: .uint32(UInt32(ffn))),
            (key: "\(a).attention.head_count", value: .uint32(UInt32(heads))),
            (key: "\(a).attention.head_count_kv", value: .uint32(UInt32(kvHeads))),
            (key: "\(a).rope.freq_base", value: .float32(500_000)),
            (key: "\(a).attention.layer_norm_rms_epsilon", value: .float32(1e-6)),
            (key: "tokenizer.ggml.model", value: .string("gpt2")),
            (key: "tokenizer.ggml.pre", value: .string(pre)),
            (key: "tokenizer.ggml.tokens", value: .array(.string, tokens.map { GGUFValue.string($0) })),
            (key: "tokenizer.ggml.token_type", value: .array(.int32, (0..<vocab).map { .int32($0 < 2 ? 3 : $0 == 2 ? 4 : 1) })),
            (key: "tokenizer.ggml.merges", value: .array(.string, [.string("a b"), .string("ab c")])),
            (key: "tokenizer.ggml.bos_token_id", value: .uint32(0)),
            (key: "tokenizer.ggml.eos_token_id", value: .uint32(1)),
            (key: "tokenizer.ggml.add_bos_token", value: .bool(true)),
        ]
        let quantTypes: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .f16, .bf16]
        var seed: UInt64 = 11
        func add(_ name: String, _ dims: [Int], _ type: GGMLType) {
            guard name != omit else { return }
            seed += 1
            w.tensors.append(.init(name: name, dimensions: dims, type: type, bytes: blocks(type, count: dims.reduce(1, *), seed: seed)))
        }
        add("token_embd.weight", [hidden, vocab], .q6_K)
        var t = 0
        for l in 0..<layers {
            add("blk.\(l).attn_norm.weight", [hidden], .f32)
            for (name, dims) in [("attn_q", [hidden, heads * headDim]), ("attn_k", [hidden, kvHeads * headDim]),
                                 ("attn_v", [hidden, kvHeads * headDim]), ("attn_output", [heads * headDim, hidden]),
                                 ("ffn_gate", [hidden, ffn]), ("ffn_up", [hidden, ffn]), ("ffn_down", [ffn, hidden])] {
                add("blk.\(l).\(name).weight", dims, quantTypes[t % quantTypes.count])
                t += 1
                if biases ?? (a == "qwen2"), ["attn_q", "attn_k", "attn_v"].contains(name) { add("blk.\(l).\(name).bias", [dims[1]], .f32) }
            }
            add("blk.\(l).ffn_norm.weight", [hidden], .f32)
        }
        add("output_norm.weight", [hidden], .f32)
        if !tied { add("output.weight", [hidden, vocab], .q8_0) }
        return w
    }

    private func floats(_ writer: GGUFWriter, _ name: String) -> [Float] {
        let t = writer.tensors.first { $0.name == name }!
        return dequantize(t.bytes, type: GGMLType(rawValue: t.typeID)!)
    }

    // MARK: conversions

    /// Every block format through the binary, f32 out: names, shapes, values; q and k rows moved back
    /// from llama.cpp's adjacent-pair order (row h*d + 2i + a → h*d + a*d/2 + i), everything else as is.
    func testTinyLlamaEveryFormatConvertsExactly() throws {
        let model = ConvertTests.tinyModel()
        let gguf = dir.appendingPathComponent("tiny.gguf"), out = dir.appendingPathComponent("hf")
        try model.write(to: gguf)
        let result = try PruneDistBinary.run(["convert", "--gguf", gguf.path, "--out", out.path, "--dtype", "f32", "--max-shard-bytes", "1000000"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let checkpoint = try Checkpoint(directory: out)
        let c = checkpoint.config
        XCTAssertEqual([c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads, c.headDim, c.vocabSize, c.maxPositionEmbeddings],
                       [256, 512, 2, 4, 2, 64, 40, 1024])
        XCTAssertEqual(c.ropeTheta, 500_000)
        XCTAssertEqual(c.rmsNormEps, 1e-6)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(c.modelType, "llama")
        XCTAssertEqual(c.dtype, .f32)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors.index.json").path), "1 MB shards expected")
        XCTAssertEqual(checkpoint.tensorNames.count, model.tensors.count)

        let names: [String: String] = ["attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
            "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
            "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
            "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight"]
        for t in model.tensors {
            var hf: String
            switch t.name {
            case "token_embd.weight": hf = "model.embed_tokens.weight"
            case "output_norm.weight": hf = "model.norm.weight"
            case "output.weight": hf = "lm_head.weight"
            default:
                let parts = t.name.split(separator: ".", maxSplits: 2)
                hf = "model.layers.\(parts[1]).\(names[String(parts[2])]!)"
            }
            XCTAssertEqual(try checkpoint.info(hf).shape, Array(t.dimensions.reversed()), hf)
            let source = floats(model, t.name), converted = try checkpoint.floats(hf)
            let rotaryHeads = t.name.hasSuffix("attn_q.weight") ? ConvertTests.heads : t.name.hasSuffix("attn_k.weight") ? ConvertTests.kvHeads : nil
            guard let rotaryHeads else {
                XCTAssertEqual(converted, source, "\(t.name) → \(hf)")
                continue
            }
            let columns = t.dimensions[0], d = ConvertTests.headDim
            for h in 0..<rotaryHeads { for i in 0..<d / 2 { for a in 0..<2 {
                let llamaRow = h * d + 2 * i + a, hfRow = h * d + a * d / 2 + i
                XCTAssertEqual(Array(converted[hfRow * columns..<(hfRow + 1) * columns]), Array(source[llamaRow * columns..<(llamaRow + 1) * columns]), "\(hf) row \(hfRow)")
            } } }
        }

        let tokenizer = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("tokenizer.json"))) as? [String: Any])
        let bpe = try XCTUnwrap(tokenizer["model"] as? [String: Any])
        XCTAssertEqual((bpe["vocab"] as? [String: Int])?["t39"], 39)
        XCTAssertEqual(bpe["merges"] as? [[String]], [["a", "b"], ["ab", "c"]])
        XCTAssertEqual(bpe["ignore_merges"] as? Bool, true)  // llama-bpe
        let added = try XCTUnwrap(tokenizer["added_tokens"] as? [[String: Any]])
        XCTAssertEqual(added.map { $0["content"] as? String }, ["<|begin|>", "<|end|>", "<tool>"])
        XCTAssertEqual(added.map { $0["special"] as? Bool }, [true, true, false])
        let pre = try XCTUnwrap(tokenizer["pre_tokenizer"] as? [String: Any])
        XCTAssertEqual((pre["pretokenizers"] as? [[String: Any]])?.first?["type"] as? String, "Split")
        let post = try XCTUnwrap(tokenizer["post_processor"] as? [String: Any])
        let single = try XCTUnwrap(post["single"] as? [[String: Any]])
        XCTAssertEqual((single.first?["SpecialToken"] as? [String: Any])?["id"] as? String, "<|begin|>")  // add_bos_token
        let tokenizerConfig = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("tokenizer_config.json"))) as? [String: Any])
        XCTAssertEqual(tokenizerConfig["add_bos_token"] as? Bool, true)
        XCTAssertEqual(tokenizerConfig["bos_token"] as? String, "<|begin|>")
    }

    /// qwen2: biases kept, no row permutation, tied embeddings when output.weight is absent.
    func testTinyQwen2KeepsBiasesAndRowOrder() throws {
        let model = ConvertTests.tinyModel(architecture: "qwen2", tied: true, pre: "qwen2")
        let gguf = dir.appendingPathComponent("qwen.gguf"), out = dir.appendingPathComponent("hf")
        try model.write(to: gguf)
        let summary = try GGUFConversion.convert(gguf: gguf, out: out, dtype: .f32)
        XCTAssertEqual(summary.tensors, model.tensors.count)
        let checkpoint = try Checkpoint(directory: out)
        XCTAssertEqual(checkpoint.config.modelType, "qwen2")
        XCTAssertEqual(checkpoint.config.architectures, ["Qwen2ForCausalLM"])
        XCTAssertTrue(checkpoint.config.attentionBias)
        XCTAssertTrue(checkpoint.config.tieWordEmbeddings)
        XCTAssertFalse(checkpoint.tensorNames.contains("lm_head.weight"))
        XCTAssertEqual(try checkpoint.floats("model.layers.1.self_attn.q_proj.weight"), floats(model, "blk.1.attn_q.weight"))
        XCTAssertEqual(try checkpoint.floats("model.layers.0.self_attn.k_proj.bias"), floats(model, "blk.0.attn_k.bias"))
        XCTAssertEqual(try checkpoint.info("model.layers.0.self_attn.v_proj.bias").shape, [ConvertTests.kvHeads * ConvertTests.headDim])
    }

    /// LLaMA with attention biases: llama.cpp permuted the q and k biases like their rows.
    func testLlamaBiasesAreUnpermutedLikeTheirRows() throws {
        let model = ConvertTests.tinyModel(biases: true)
        let gguf = dir.appendingPathComponent("bias.gguf"), out = dir.appendingPathComponent("hf")
        try model.write(to: gguf)
        _ = try GGUFConversion.convert(gguf: gguf, out: out, dtype: .f32)
        let checkpoint = try Checkpoint(directory: out)
        XCTAssertTrue(checkpoint.config.attentionBias)
        let d = ConvertTests.headDim
        for (tensor, heads) in [("attn_q", ConvertTests.heads), ("attn_k", ConvertTests.kvHeads)] {
            let source = floats(model, "blk.1.\(tensor).bias")
            let converted = try checkpoint.floats("model.layers.1.self_attn.\(tensor == "attn_q" ? "q" : "k")_proj.bias")
            var expected = [Float](repeating: .nan, count: source.count)
            for h in 0..<heads { for i in 0..<d / 2 { for a in 0..<2 { expected[h * d + a * d / 2 + i] = source[h * d + 2 * i + a] } } }
            XCTAssertEqual(converted, expected, tensor)
        }
        XCTAssertEqual(try checkpoint.floats("model.layers.0.self_attn.v_proj.bias"), floats(model, "blk.0.attn_v.bias"))
    }

    /// The bundled SmolLM2 file, converted by the binary and read back by `inspect`: the README's shape,
    /// the parameter count and the 33 483 exact zeros transformers' dequantisation gives.
    func testSmolLM2ConvertsAndInspects() throws {
        let gguf = try Fixtures.path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        let out = dir.appendingPathComponent("smollm2")
        let result = try PruneDistBinary.run(["convert", "--gguf", gguf.path, "--out", out.path])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("134515008 parameters"), result.stdout)
        let inspect = try PruneDistBinary.run(["inspect", "--model", out.path, "--json"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let report = try inspect.lastJSON()
        XCTAssertEqual(report["parameters"] as? Int, 134_515_008)
        let linears = try XCTUnwrap(report["linears"] as? [String: [String: Any]])
        XCTAssertEqual(linears.count, 210)
        XCTAssertEqual(linears.values.reduce(0) { $0 + ($1["total"] as? Int ?? 0) }, 106_168_320)
        XCTAssertEqual(linears.values.reduce(0) { $0 + ($1["zeros"] as? Int ?? 0) }, 33_483)
        let tensors = try XCTUnwrap(report["tensors"] as? [String: [String: Any]])
        XCTAssertEqual(tensors.count, 272)
        XCTAssertEqual(tensors["model.embed_tokens.weight"]?["dtype"] as? String, "BF16")
        XCTAssertNil(tensors["lm_head.weight"])
        let config = try XCTUnwrap(report["config"] as? [String: Any])
        XCTAssertEqual(config["num_attention_heads"] as? Int, 9)
        XCTAssertEqual(config["num_key_value_heads"] as? Int, 3)
        XCTAssertEqual(config["rope_theta"] as? Double, 100_000)
        XCTAssertEqual(config["rms_norm_eps"] as? Double, 1e-5)
        XCTAssertEqual(config["tie_word_embeddings"] as? Bool, true)
        XCTAssertEqual(config["max_position_embeddings"] as? Int, 8192)
        XCTAssertEqual(config["vocab_size"] as? Int, 49_152)

        // `eval perplexity --text` tokenizes with the converted tokenizer.json: the same windows, hence the same
        // figure, as protocol R's pre-tokenized stream.
        func perplexity(_ input: [String]) throws -> Double {
            let run = try PruneDistBinary.run(["eval", "perplexity", "--model", out.path, "--seqlen", "128", "--max-windows", "2", "--json"] + input)
            XCTAssertEqual(run.status, 0, run.stderr)
            return try XCTUnwrap(try run.lastJSON()["perplexity"] as? Double)
        }
        let fromText = try perplexity(["--text", try Fixtures.path("data/wiki/eval.txt").path])
        XCTAssertEqual(fromText, try perplexity(["--tokens", try Fixtures.path("data/wiki/eval_tokens.u16").path]))
        XCTAssertGreaterThan(fromText, 5)
        XCTAssertLessThan(fromText, 40)
    }

    // MARK: bad inputs: a precise error, a non-zero exit, no output left

    private func assertConvertFails(_ bytes: [UInt8], _ parts: [String], threads: Int = 1,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let gguf = dir.appendingPathComponent("bad-\(UUID().uuidString.prefix(6)).gguf")
        try Data(bytes).write(to: gguf)
        let out = dir.appendingPathComponent("out")
        let result = try PruneDistBinary.run(["convert", "--gguf", gguf.path, "--out", out.path, "--threads", "\(threads)"])
        XCTAssertNotEqual(result.status, 0, file: file, line: line)
        for part in parts + [gguf.path] {
            XCTAssertTrue(result.stderr.contains(part), "stderr \"\(result.stderr)\" should mention \"\(part)\"", file: file, line: line)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("out") }
        XCTAssertEqual(left, [], "nothing may be left behind", file: file, line: line)
    }

    func testWrongMagicFails() throws {
        var bytes = ConvertTests.tinyModel().bytes()
        bytes[3] = UInt8(ascii: "X")
        try assertConvertFails(bytes, ["not a GGUF file", "\"GGUX\""])
    }

    func testUnsupportedVersionFails() throws {
        var model = ConvertTests.tinyModel()
        model.version = 5
        try assertConvertFails(model.bytes(), ["unsupported GGUF version 5"])
    }

    func testTruncatedMetadataFails() throws {
        try assertConvertFails(Array(ConvertTests.tinyModel().bytes()[0..<300]), ["truncated metadata", "the file ends at 300"])
    }

    func testTensorDataPastEndFails() throws {
        try assertConvertFails(Array(ConvertTests.tinyModel().bytes().dropLast(100)), ["tensor output.weight", "past the end"])
    }

    func testUnknownQuantisationTypeFails() throws {
        var model = ConvertTests.tinyModel()
        model.tensors[5].typeID = 41
        try assertConvertFails(model.bytes(), ["tensor \(model.tensors[5].name)", "type id 41"])
    }

    func testTensorCountMismatchFails() throws {
        var model = ConvertTests.tinyModel()
        model.declaredTensorCount = UInt64(model.tensors.count + 1)
        try assertConvertFails(model.bytes(), ["tensor count mismatch", "of the \(model.tensors.count + 1) the header declares"])
        // A consistent file that lacks a tensor the architecture needs.
        try assertConvertFails(ConvertTests.tinyModel(omit: "blk.1.ffn_down.weight").bytes(),
                               ["tensor count mismatch", "blk.1.ffn_down.weight is missing"])
    }

    func testNonFiniteScaleFails() throws {
        var model = ConvertTests.tinyModel()
        XCTAssertEqual(model.tensors[4].name, "blk.0.attn_v.weight")
        XCTAssertEqual(model.tensors[4].typeID, GGMLType.q5_0.rawValue)
        model.tensors[4].bytes[3 * 22] = 0x00  // block 3's float16 scale := 0x7e00, a NaN
        model.tensors[4].bytes[3 * 22 + 1] = 0x7e
        try assertConvertFails(model.bytes(), ["tensor blk.0.attn_v.weight (Q5_0)", "nan at element 96 (block 3)"])
        // Dequantised on one of several threads, among healthy tensors of the same batch: the same error.
        try assertConvertFails(model.bytes(), ["tensor blk.0.attn_v.weight (Q5_0)", "nan at element 96 (block 3)"], threads: 3)
    }

    /// Tensors converted several at a time, one per thread, are written in the same order with the same bytes.
    func testThreadCountsWriteTheSameFiles() throws {
        let gguf = dir.appendingPathComponent("tiny.gguf")
        try ConvertTests.tinyModel().write(to: gguf)
        var contents: [[String: Data]] = []
        for threads in [1, 2, 7] {
            let out = dir.appendingPathComponent("hf-\(threads)")
            let result = try PruneDistBinary.run(["convert", "--gguf", gguf.path, "--out", out.path, "--max-shard-bytes", "1000000",
                                                  "--threads", "\(threads)"])
            XCTAssertEqual(result.status, 0, result.stderr)
            let files = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
            XCTAssertTrue(files.contains("model.safetensors.index.json"), "\(files)")
            contents.append(Dictionary(uniqueKeysWithValues: try files.map { ($0, try Data(contentsOf: out.appendingPathComponent($0))) }))
        }
        XCTAssertEqual(contents[1], contents[0], "--threads 2")
        XCTAssertEqual(contents[2], contents[0], "--threads 7")
    }

    func testUnknownArchitectureFails() throws {
        var model = ConvertTests.tinyModel()
        model.metadata[0] = (key: "general.architecture", value: .string("gpt2"))
        try assertConvertFails(model.bytes(), ["architecture \"gpt2\" is not supported"])
    }

    func testNonEmptyOutputIsRefusedAndKept() throws {
        let gguf = dir.appendingPathComponent("tiny.gguf"), out = dir.appendingPathComponent("existing")
        try ConvertTests.tinyModel().write(to: gguf)
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: out.appendingPathComponent("note.txt"))
        let result = try PruneDistBinary.run(["convert", "--gguf", gguf.path, "--out", out.path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("folder exists and is not empty"), result.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), ["note.txt"])
    }
}
