import Foundation
import TestSupport
import XCTest
@testable import Engine

/// Every malformed input gets a precise error: the file, the tensor, and what was expected versus found.
final class CheckpointErrorTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory("bad-input") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A safetensors file from a header string and a data section.
    private func file(header: String, data: [UInt8] = [], headerLength: UInt64? = nil, name: String = "model.safetensors") throws -> URL {
        var bytes = [UInt8]()
        withUnsafeBytes(of: (headerLength ?? UInt64(header.utf8.count)).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: header.utf8)
        bytes.append(contentsOf: data)
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func testTruncatedFile() throws {
        let url = dir.appendingPathComponent("model.safetensors")
        try Data([1, 2, 3]).write(to: url)
        assertError(.format, containing: [url.path, "truncated", "3 bytes"]) { _ = try SafetensorsFile(url: url) }
    }

    func testTruncatedDataSection() throws {
        let url = try file(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError(.format, containing: [url.path, "w", "[0, 16]", "8-byte data section"]) { _ = try SafetensorsFile(url: url) }
    }

    func testHeaderLengthBeyondFile() throws {
        let url = try file(header: "{}", headerLength: 1 << 40)
        assertError(.format, containing: [url.path, "header length 1099511627776", "beyond the end"]) { _ = try SafetensorsFile(url: url) }
    }

    func testHeaderNotJSON() throws {
        let url = try file(header: "{not json")
        assertError(.format, containing: [url.path, "not a JSON object"]) { _ = try SafetensorsFile(url: url) }
    }

    func testDataOffsetsOutsideBuffer() throws {
        let url = try file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError(.format, containing: [url.path, "tensor a", "[4, 12]", "outside"]) { _ = try SafetensorsFile(url: url) }
    }

    func testOverlappingTensors() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let url = try file(header: header, data: [UInt8](repeating: 0, count: 12))
        assertError(.format, containing: [url.path, "tensor b", "overlap", "tensor a"]) { _ = try SafetensorsFile(url: url) }
    }

    func testUnknownDType() throws {
        let url = try file(header: #"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, data: [0, 0])
        assertError(.dtype, containing: [url.path, "tensor a", "F8_E4M3", "BF16"]) { _ = try SafetensorsFile(url: url) }
    }

    func testShapeTimesDTypeDiffersFromByteRange() throws {
        let url = try file(header: #"{"a":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        assertError(.shape, containing: [url.path, "tensor a", "[3, 2]", "BF16", "12 bytes", "span 8"]) { _ = try SafetensorsFile(url: url) }
    }

    func testTensorInIndexMissingFromShard() throws {
        let fixture = try Fixtures.path("fixtures/tiny-llama-bf16-sharded")
        for name in try FileManager.default.contentsOfDirectory(atPath: fixture.path) {
            try FileManager.default.copyItem(at: fixture.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let indexURL = dir.appendingPathComponent("model.safetensors.index.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: indexURL)) as! [String: Any]
        var map = index["weight_map"] as! [String: String]
        map["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors"
        index["weight_map"] = map
        try JSONSerialization.data(withJSONObject: index).write(to: indexURL)
        assertError(.missingTensor, containing: ["model-00002-of-00002.safetensors", "model.layers.9.mlp.up_proj.weight", "index"]) {
            _ = try Checkpoint(directory: dir)
        }
    }

    func testConfigMissingRequiredKey() throws {
        let url = dir.appendingPathComponent("config.json")
        try Data(#"{"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 3, "num_attention_heads": 4}"#.utf8).write(to: url)
        assertError(.config, containing: [url.path, "vocab_size"]) { _ = try LlamaConfig.load(from: url) }
    }

    func testConfigHeadsNotDivisibleByKVHeads() throws {
        let url = dir.appendingPathComponent("config.json")
        try Data(#"{"vocab_size": 10, "hidden_size": 63, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 9, "num_key_value_heads": 4, "head_dim": 7}"#.utf8).write(to: url)
        assertError(.config, containing: [url.path, "num_attention_heads 9", "num_key_value_heads 4"]) { _ = try LlamaConfig.load(from: url) }
    }

    func testConfigWrongValueType() throws {
        let url = dir.appendingPathComponent("config.json")
        try Data(#"{"vocab_size": "many", "hidden_size": 64, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4}"#.utf8).write(to: url)
        assertError(.config, containing: [url.path, "vocab_size"]) { _ = try LlamaConfig.load(from: url) }
    }

    func testNaNAndInfWeightsRefusedWhenLoadedForPruning() throws {
        for (label, bad) in [("nan", Float.nan), ("inf", Float.infinity)] {
            let sub = dir.appendingPathComponent(label)
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            var weights = [Float](repeating: 0.5, count: 12)
            weights[7] = bad
            let writer = try SafetensorsWriter(url: sub.appendingPathComponent("model.safetensors"),
                                               tensors: [.init(name: "model.layers.0.mlp.up_proj.weight", dtype: .f32, shape: [3, 4])])
            try writer.append("model.layers.0.mlp.up_proj.weight", floats: weights)
            try writer.finish()
            try LlamaConfig(vocabSize: 4, hiddenSize: 4, intermediateSize: 3, numHiddenLayers: 1, numAttentionHeads: 1,
                            numKeyValueHeads: 1).jsonData().write(to: sub.appendingPathComponent("config.json"))
            let checkpoint = try Checkpoint(directory: sub)
            XCTAssertNoThrow(try checkpoint.floats("model.layers.0.mlp.up_proj.weight"))
            assertError(.nonFinite, containing: ["model.safetensors", "model.layers.0.mlp.up_proj.weight", "element 7", "row 1, column 3"]) {
                _ = try checkpoint.floatsCheckedFinite("model.layers.0.mlp.up_proj.weight")
            }
        }
    }

    func testWrongShapeAgainstConfig() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        assertError(.shape, containing: ["model.safetensors", "model.layers.0.self_attn.q_proj.weight", "[64, 64]", "[32, 64]"]) {
            _ = try checkpoint.floats("model.layers.0.self_attn.q_proj.weight", shape: [32, 64])
        }
    }

    func testMissingTensor() throws {
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        assertError(.missingTensor, containing: ["tiny-llama", "model.layers.7.mlp.up_proj.weight"]) {
            _ = try checkpoint.floats("model.layers.7.mlp.up_proj.weight")
        }
    }
}

final class CheckpointFixtureTests: XCTestCase {
    func testConfigBothSpellings() throws {
        let v5 = try LlamaConfig.load(from: Fixtures.path("fixtures/tiny-llama/config.json"))
        let v4 = try LlamaConfig.load(from: Fixtures.path("fixtures/tiny-llama-bf16-sharded/config.json"))
        for c in [v5, v4] {
            XCTAssertEqual(c.hiddenSize, 64); XCTAssertEqual(c.intermediateSize, 172); XCTAssertEqual(c.numHiddenLayers, 3)
            XCTAssertEqual(c.numAttentionHeads, 4); XCTAssertEqual(c.numKeyValueHeads, 2); XCTAssertEqual(c.headDim, 16)
            XCTAssertEqual(c.ropeTheta, 10000); XCTAssertEqual(c.rmsNormEps, 1e-5); XCTAssertFalse(c.tieWordEmbeddings)
            XCTAssertNil(c.ropeScaling); XCTAssertEqual(c.vocabSize, 512)
        }
        XCTAssertEqual(v5.dtype, .f32)
        XCTAssertEqual(v4.dtype, .bf16)
    }

    func testLlama3RopeScalingInBothSpellings() throws {
        let v4 = #"{"vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"rope_theta":500000.0,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}"#
        let v5 = #"{"vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"rope_parameters":{"rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}"#
        let a = try JSONDecoder().decode(LlamaConfig.self, from: Data(v4.utf8))
        let b = try JSONDecoder().decode(LlamaConfig.self, from: Data(v5.utf8))
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.ropeTheta, 500000)
        XCTAssertEqual(a.ropeScaling, .init(ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192))
        // What we write reads back the same.
        XCTAssertEqual(try JSONDecoder().decode(LlamaConfig.self, from: a.jsonData()), a)
    }

    func testQwen2ConfigHasAttentionBiases() throws {
        let json = #"{"model_type":"qwen2","vocab_size":8,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"tie_word_embeddings":true}"#
        let c = try JSONDecoder().decode(LlamaConfig.self, from: Data(json.utf8))
        XCTAssertTrue(c.attentionBias)
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.headDim, 4)
    }

    /// The bf16 shards hold exactly the float32 weights rounded to nearest even.
    func testShardedBF16FixtureMatchesRoundedFloat32() throws {
        let f32 = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let bf16 = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama-bf16-sharded"))
        XCTAssertEqual(bf16.files.count, 2)
        XCTAssertEqual(f32.tensorNames, bf16.tensorNames)
        XCTAssertEqual(f32.tensorNames.count, 30)
        XCTAssertEqual(bf16.storageDType, .bf16)
        for name in f32.tensorNames {
            let rounded = encode(try f32.floats(name), as: .bf16)
            XCTAssertEqual(try bf16.file(holding: name).bytes(name), rounded, name)
        }
    }

    /// Re-writing a real checkpoint in every dtype, single and sharded, reads back bit-exactly.
    func testRewriteFixtureCheckpointBitExact() throws {
        let source = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let dir = try Fixtures.temporaryDirectory("rewrite")
        defer { try? FileManager.default.removeItem(at: dir) }
        for dtype in [DType.f32, .f16, .bf16] {
            for shardBytes in [CheckpointWriter.defaultMaxShardBytes, 100_000] {
                let out = dir.appendingPathComponent("\(dtype.rawValue)-\(shardBytes)")
                let entries = try source.tensorNames.map { SafetensorsWriter.Entry(name: $0, dtype: dtype, shape: try source.info($0).shape) }
                let writer = try CheckpointWriter(directory: out, tensors: entries, maxShardBytes: shardBytes)
                for name in source.tensorNames { try writer.append(name, floats: try source.floats(name)) }
                try writer.finish()
                try FileManager.default.copyItem(at: source.directory.appendingPathComponent("config.json"), to: out.appendingPathComponent("config.json"))
                let back = try Checkpoint(directory: out)
                XCTAssertEqual(back.files.count, shardBytes == 100_000 ? writer.shardFileNames.count : 1)
                for name in source.tensorNames {
                    XCTAssertEqual(try back.file(holding: name).bytes(name), encode(try source.floats(name), as: dtype), "\(dtype) \(name)")
                }
            }
        }
    }
}
