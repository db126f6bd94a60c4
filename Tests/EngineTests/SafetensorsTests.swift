import Foundation
import TestSupport
import XCTest
@testable import Engine

final class SafetensorsTests: XCTestCase {
    /// Deterministic values that exercise signs, magnitudes and values not representable in 16 bits.
    private func values(_ n: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(g.nextGaussian()) * Float(pow(10.0, Double(g.next() % 5) - 2)) }
    }

    private func tensorSet(dtype: DType) -> [(SafetensorsWriter.Entry, [UInt8])] {
        let shapes: [(String, [Int])] = [("model.embed_tokens.weight", [17, 8]), ("model.layers.0.mlp.up_proj.weight", [12, 8]),
                                         ("model.norm.weight", [8]), ("scalar", []), ("empty", [0, 3])]
        return shapes.enumerated().map { i, item in
            let entry = SafetensorsWriter.Entry(name: item.0, dtype: dtype, shape: item.1)
            return (entry, encode(values(entry.shape.reduce(1, *), seed: UInt64(i)), as: dtype))
        }
    }

    func testSingleFileRoundTripIsBitExactForEveryWeightDType() throws {
        let dir = try Fixtures.temporaryDirectory("st-single")
        defer { try? FileManager.default.removeItem(at: dir) }
        for dtype in [DType.f32, .f16, .bf16] {
            let tensors = tensorSet(dtype: dtype)
            let url = dir.appendingPathComponent("\(dtype.rawValue).safetensors")
            let writer = try SafetensorsWriter(url: url, tensors: tensors.map(\.0), metadata: ["format": "pt", "note": "a \"quoted\" value"])
            for (entry, bytes) in tensors { try bytes.withUnsafeBytes { try writer.append(entry.name, bytes: $0) } }
            try writer.finish()

            let file = try SafetensorsFile(url: url)
            XCTAssertEqual(file.names, tensors.map(\.0.name), "file order")
            XCTAssertEqual(file.metadata, ["format": "pt", "note": "a \"quoted\" value"])
            for (entry, bytes) in tensors {
                let info = try file.info(entry.name)
                XCTAssertEqual(info.dtype, dtype)
                XCTAssertEqual(info.shape, entry.shape)
                XCTAssertEqual(try file.bytes(entry.name), bytes, "\(dtype) \(entry.name)")
            }
            // The header is padded to a multiple of 8 so the data section is aligned.
            let raw = try Data(contentsOf: url)
            let headerLength = raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            XCTAssertEqual(headerLength % 8, 0)
        }
    }

    func testShardedCheckpointRoundTripThroughTheIndex() throws {
        let dir = try Fixtures.temporaryDirectory("st-sharded")
        defer { try? FileManager.default.removeItem(at: dir) }
        let tensors = tensorSet(dtype: .bf16)
        let writer = try CheckpointWriter(directory: dir, tensors: tensors.map(\.0), maxShardBytes: 300)
        XCTAssertGreaterThan(writer.shardFileNames.count, 1)
        for (entry, bytes) in tensors { try bytes.withUnsafeBytes { try writer.append(entry.name, bytes: $0) } }
        try writer.finish()
        try tinyConfig().jsonData().write(to: dir.appendingPathComponent("config.json"))

        let checkpoint = try Checkpoint(directory: dir)
        XCTAssertEqual(checkpoint.files.count, writer.shardFileNames.count)
        for (entry, bytes) in tensors {
            XCTAssertEqual(try checkpoint.file(holding: entry.name).bytes(entry.name), bytes)
        }
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("model.safetensors.index.json"))) as! [String: Any]
        let total = (index["metadata"] as! [String: Any])["total_size"] as! Int
        XCTAssertEqual(total, tensors.reduce(0) { $0 + $1.1.count })
        // No temporary files are left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [])
    }

    func testUnfinishedWriterLeavesNoFile() throws {
        let dir = try Fixtures.temporaryDirectory("st-unfinished")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("model.safetensors")
        do {
            let writer = try SafetensorsWriter(url: url, tensors: [.init(name: "a", dtype: .f32, shape: [2])])
            XCTAssertThrowsError(try writer.finish())
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    /// Files we write are read by the Python safetensors package with the same names, shapes, dtypes
    /// and bytes (its reader checks contiguity and the header strictly).
    func testPythonSafetensorsReadsOurFiles() throws {
        let dir = try Fixtures.temporaryDirectory("st-python")
        defer { try? FileManager.default.removeItem(at: dir) }
        var expected: [String: Any] = [:]
        for dtype in [DType.f32, .f16, .bf16] {
            let tensors = tensorSet(dtype: dtype)
            let url = dir.appendingPathComponent("\(dtype.rawValue).safetensors")
            let writer = try SafetensorsWriter(url: url, tensors: tensors.map(\.0), metadata: ["format": "pt"])
            for (entry, bytes) in tensors { try bytes.withUnsafeBytes { try writer.append(entry.name, bytes: $0) } }
            try writer.finish()
            expected[url.path] = Dictionary(uniqueKeysWithValues: tensors.map { entry, bytes in
                (entry.name, ["dtype": entry.dtype.rawValue, "shape": entry.shape, "hex": bytes.map { String(format: "%02x", $0) }.joined()] as [String: Any])
            })
        }
        let expectedURL = dir.appendingPathComponent("expected.json")
        try JSONSerialization.data(withJSONObject: expected).write(to: expectedURL)
        let script = """
        import hashlib, json, sys
        from safetensors import safe_open
        from safetensors.numpy import load_file
        names = {"F32": "F32", "F16": "F16", "BF16": "BF16"}
        expected = json.load(open(sys.argv[1]))
        for path, tensors in expected.items():
            with safe_open(path, framework="numpy") as f:
                assert sorted(f.keys()) == sorted(tensors), (path, f.keys())
                assert f.metadata() == {"format": "pt"}
            raw = open(path, "rb").read()
            n = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + n])
            for name, want in tensors.items():
                got = header[name]
                assert got["dtype"] == want["dtype"] and got["shape"] == want["shape"], (name, got, want)
                a, b = got["data_offsets"]
                assert raw[8 + n + a: 8 + n + b].hex() == want["hex"], name
                if want["dtype"] != "BF16":  # numpy has no bfloat16; safe_open above already parsed it
                    arr = load_file(path)[name]
                    assert list(arr.shape) == want["shape"], name
                    assert arr.tobytes().hex() == want["hex"], name
        print("python-ok", len(expected))
        """
        let result = try PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script, expectedURL.path])
        XCTAssertEqual(result.status, 0, "python safetensors failed: \(result.stderr)")
        XCTAssertTrue(result.stdout.contains("python-ok 3"), result.stdout + result.stderr)
    }

    func tinyConfig() -> LlamaConfig {
        LlamaConfig(vocabSize: 17, hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 1,
                    numAttentionHeads: 2, numKeyValueHeads: 1)
    }
}

/// A small deterministic generator for test data (SplitMix64 with Box–Muller normals).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextUniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func nextGaussian() -> Double {
        let u1 = max(nextUniform(), 1e-300), u2 = nextUniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

