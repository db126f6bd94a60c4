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
}
