import Engine
import Foundation
import TestSupport
import XCTest

final class InspectTests: XCTestCase {
    /// `inspect --json` reports each linear's exact zero count; we zero a known set and check it.
    func testInspectJSONCountsZerosPerLinear() throws {
        let source = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let out = try Fixtures.temporaryDirectory("inspect")
        defer { try? FileManager.default.removeItem(at: out) }
        let target = LlamaLinear.up.weightName(layer: 1)
        let entries = try source.tensorNames.map { SafetensorsWriter.Entry(name: $0, dtype: .bf16, shape: try source.info($0).shape) }
        let writer = try CheckpointWriter(directory: out, tensors: entries, maxShardBytes: 150_000)
        for name in source.tensorNames {
            var values = try source.floats(name)
            if name == target { for i in stride(from: 0, to: values.count, by: 3) { values[i] = 0 } }
            try writer.append(name, floats: values)
        }
        try writer.finish()
        try FileManager.default.copyItem(at: source.directory.appendingPathComponent("config.json"), to: out.appendingPathComponent("config.json"))

        let result = try PruneDistBinary.run(["inspect", "--model", out.path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let object = try result.lastJSON()
        let linears = try XCTUnwrap(object["linears"] as? [String: [String: Any]])
        XCTAssertEqual(linears.count, 21)
        XCTAssertEqual(linears[target]?["zeros"] as? Int, (172 * 64 + 2) / 3)
        XCTAssertEqual(linears[LlamaLinear.q.weightName(layer: 0)]?["zeros"] as? Int, 0)
        let tensors = try XCTUnwrap(object["tensors"] as? [String: [String: Any]])
        XCTAssertEqual(tensors["model.embed_tokens.weight"]?["dtype"] as? String, "BF16")
        XCTAssertEqual(tensors["model.embed_tokens.weight"]?["shape"] as? [Int], [512, 64])
    }

    func testInspectMissingDirectoryFails() throws {
        let result = try PruneDistBinary.run(["inspect", "--model", "/nonexistent/model"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("/nonexistent/model"), result.stderr)
    }

    /// `inspect --pattern 2:4` passes a 2:4 prune's output and names the first group that breaks the pattern after one
    /// weight of it is made non-zero again (exit 1); tensors are listed in block order.
    func testInspectPatternChecksEveryGroup() throws {
        let scratch = try Fixtures.temporaryDirectory("inspect-pattern")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 4, seqlen: 32, seed: 2)
        let pruned = scratch.appendingPathComponent("pruned")
        let prune = try PruneDistBinary.run(["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", pruned.path,
                                             "--method", "wanda", "--pattern", "2:4", "--calib", calib.path, "--samples", "4", "--seqlen", "32"])
        XCTAssertEqual(prune.status, 0, prune.stderr)
        let good = try PruneDistBinary.run(["inspect", "--model", pruned.path, "--pattern", "2:4", "--json"])
        XCTAssertEqual(good.status, 0, good.stderr)
        XCTAssertEqual((try good.lastJSON()["pattern_check"] as? [String: Any])?["ok"] as? Bool, true)
        XCTAssertEqual(try PruneDistBinary.run(["inspect", "--model", pruned.path, "--pattern", "1:4"]).status, 0, "2 zeros of 4 are at least 1")
        XCTAssertEqual(try PruneDistBinary.run(["inspect", "--model", pruned.path, "--pattern", "3:4"]).status, 1, "but not 3")

        // One zero of model.layers.1.mlp.down_proj row 5 made non-zero again: that group holds 3 non-zeros.
        let source = try Checkpoint(directory: pruned)
        let broken = scratch.appendingPathComponent("broken")
        let target = LlamaLinear.down.weightName(layer: 1)
        let writer = try CheckpointWriter(directory: broken, tensors: try source.tensorNames.map {
            SafetensorsWriter.Entry(name: $0, dtype: .f32, shape: try source.info($0).shape) }, maxShardBytes: 1 << 30)
        var group = -1
        for name in source.tensorNames {
            var values = try source.floats(name)
            if name == target {
                let zero = try XCTUnwrap((5 * 172..<6 * 172).first { values[$0] == 0 })
                values[zero] = 0.5
                group = (zero - 5 * 172) / 4 * 4
            }
            try writer.append(name, floats: values)
        }
        try writer.finish()
        try FileManager.default.copyItem(at: pruned.appendingPathComponent("config.json"), to: broken.appendingPathComponent("config.json"))
        let bad = try PruneDistBinary.run(["inspect", "--model", broken.path, "--pattern", "2:4"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("not 2:4: \(target) row 5, inputs \(group)..<\(group + 4) hold 3 non-zeros (at most 2 for 2:4)"), bad.stderr)
        let names = bad.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }.filter { $0.hasPrefix("model.") || $0.hasPrefix("lm_head") }
        XCTAssertEqual(names.first, "model.embed_tokens.weight")
        XCTAssertEqual(names.last, "lm_head.weight")
        XCTAssertEqual(Array(names[1...3]), ["model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"])
    }
}
