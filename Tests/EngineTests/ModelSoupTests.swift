import Foundation
import TestSupport
import XCTest
@testable import Engine

/// ModelSoup: the uniform soup is the element-wise mean of its ingredients (computed here from the ingredients'
/// stored values, in each weight dtype), and ingredients that cannot be averaged are refused naming the file,
/// tensor or config entry and what was expected.
final class ModelSoupTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("soup") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// The tiny fixture with every tensor perturbed by noise of `seed`, stored as `dtype`.
    private func ingredient(_ name: String, seed: UInt64, dtype: DType, from source: URL? = nil) throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try writeCheckpointVariant(of: try source ?? Fixtures.path("fixtures/tiny-llama"), to: url, dtype: dtype) { _, shape, values in
            (shape, zip(values, uniformNoise(count: values.count, scale: 0.05, seed: seed)).map { $0 + $1 })
        }
        return url
    }

    /// The mean over `models` of each tensor's stored values (Double sum, one rounding to Float), stored as `dtype`.
    private func expectedBytes(_ name: String, _ models: [Checkpoint], dtype: DType) throws -> [UInt8] {
        let columns = try models.map { try $0.floats(name) }
        let mean = (0..<columns[0].count).map { i in Float(columns.reduce(0.0) { $0 + Double($1[i]) } / Double(columns.count)) }
        return encode(mean, as: dtype)
    }

    func testUniformSoupIsTheElementwiseMeanInEveryWeightDType() throws {
        for dtype in [DType.f32, .bf16, .f16] {
            let urls = try (1...3).map { try ingredient("\(dtype.rawValue)-\($0)", seed: UInt64($0), dtype: dtype) }
            let models = try urls.map { try Checkpoint(directory: $0) }
            try ModelSoup.checkCompatible(models)
            let out = scratch.appendingPathComponent("soup-\(dtype.rawValue)")
            try ModelSoup.write(models, to: out, dtype: nil)
            let soup = try SafetensorsFile(url: out.appendingPathComponent("model.safetensors"))
            XCTAssertEqual(soup.names.sorted(), models[0].tensorNames)
            for name in models[0].tensorNames {
                XCTAssertEqual(try soup.info(name).dtype, dtype, name)
                XCTAssertEqual(try soup.info(name).shape, try models[0].info(name).shape, name)
                XCTAssertEqual(try soup.bytes(name), try expectedBytes(name, models, dtype: dtype), "\(dtype) \(name)")
                // The soup is none of its ingredients (the noise differs), so copying one would fail above too.
                XCTAssertNotEqual(try soup.bytes(name), try models[0].file(holding: name).bytes(name), "\(dtype) \(name)")
            }
        }
    }

    /// A sharded bf16 input averaged with a single-file one, written as f32 on request: the mean is exact in f32.
    func testShardedIngredientAndOutputDType() throws {
        let sharded = try Fixtures.path("fixtures/tiny-llama-bf16-sharded")
        let other = try ingredient("bf16-single", seed: 9, dtype: .bf16, from: sharded)
        let models = try [sharded, other].map { try Checkpoint(directory: $0) }
        XCTAssertEqual(models[0].files.count, 2)
        try ModelSoup.checkCompatible(models)
        let out = scratch.appendingPathComponent("soup-f32")
        try ModelSoup.write(models, to: out, dtype: .f32, maxShardBytes: 250_000 * 2)
        let soup = try Checkpoint(directory: try copyConfig(from: sharded, into: out))
        XCTAssertEqual(soup.files.count, 2, "sharded like the first input (twice its shard size for twice the bytes)")
        for name in models[0].tensorNames {
            XCTAssertEqual(try soup.info(name).dtype, .f32)
            XCTAssertEqual(try soup.file(holding: name).bytes(name), try expectedBytes(name, models, dtype: .f32), name)
        }
    }

    private func copyConfig(from source: URL, into folder: URL) throws -> URL {
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))
        return folder
    }

    func testMismatchesAreNamed() throws {
        let base = try Fixtures.path("fixtures/tiny-llama")
        let reference = try Checkpoint(directory: base)
        // A tensor of another shape.
        let reshaped = scratch.appendingPathComponent("reshaped")
        try writeCheckpointVariant(of: base, to: reshaped) { name, shape, values in
            name == "model.norm.weight" ? ([shape[0] - 1], Array(values.dropLast())) : (shape, values)
        }
        assertError(.shape, containing: [reshaped.path, "model.norm.weight", "[63]", "[64]"]) {
            try ModelSoup.checkCompatible([reference, try Checkpoint(directory: reshaped)])
        }
        // A missing tensor, either way round.
        let missing = scratch.appendingPathComponent("missing")
        try writeCheckpointVariant(of: base, to: missing) { name, shape, values in
            name == "model.layers.1.mlp.up_proj.weight" ? nil : (shape, values)
        }
        assertError(.missingTensor, containing: [missing.path, "model.layers.1.mlp.up_proj.weight", "is missing"]) {
            try ModelSoup.checkCompatible([reference, try Checkpoint(directory: missing)])
        }
        assertError(.missingTensor, containing: [base.path, "model.layers.1.mlp.up_proj.weight", "is not in"]) {
            try ModelSoup.checkCompatible([try Checkpoint(directory: missing), reference])
        }
        // Another dtype.
        let narrow = try ingredient("narrow", seed: 1, dtype: .bf16)
        assertError(.dtype, containing: [narrow.path, "tensor lm_head.weight", "BF16", "expected F32"]) {
            try ModelSoup.checkCompatible([reference, try Checkpoint(directory: narrow)])
        }
        // Another config.
        let config = scratch.appendingPathComponent("config")
        try writeCheckpointVariant(of: base, to: config)
        let configURL = config.appendingPathComponent("config.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        object["rms_norm_eps"] = 1e-6
        try FileManager.default.removeItem(at: configURL)
        try JSONSerialization.data(withJSONObject: object).write(to: configURL)
        assertError(.config, containing: [configURL.path, "rms_norm_eps", "1e-06", "1e-05"]) {
            try ModelSoup.checkCompatible([reference, try Checkpoint(directory: config)])
        }
    }

    func testNonFiniteIngredientIsNamedAndNothingIsLeft() throws {
        let base = try Fixtures.path("fixtures/tiny-llama")
        let poisoned = scratch.appendingPathComponent("poisoned")
        try writeCheckpointVariant(of: base, to: poisoned) { name, shape, values in
            var values = values
            if name == "model.layers.2.self_attn.o_proj.weight" { values[70] = .nan }
            return (shape, values)
        }
        let models = try [base, poisoned].map { try Checkpoint(directory: $0) }
        try ModelSoup.checkCompatible(models)
        let out = scratch.appendingPathComponent("out")
        assertError(.nonFinite, containing: [poisoned.path, "model.layers.2.self_attn.o_proj.weight", "element 70", "row 1, column 6"]) {
            try ModelSoup.write(models, to: out, dtype: nil)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), [], "no weights file, finished or partial")
    }
}
