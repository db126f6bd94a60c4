import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist eval perplexity` through the built binary.
final class PerplexityCommandTests: XCTestCase {
    private func goldenIDs() throws -> [Int] {
        let reference = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
        return try reference.int64s("input_ids").map(Int.init)
    }


    /// The fixture's two sequences as one 32-token stream, in both token-file formats.
    func testPerplexityOfGoldenStreamIsExpOfGoldenMeanNLL() throws {
        let ids = try goldenIDs()
        let directory = try Fixtures.temporaryDirectory("ppl")
        defer { try? FileManager.default.removeItem(at: directory) }
        let json = directory.appendingPathComponent("ids.json")
        try JSONSerialization.data(withJSONObject: ids).write(to: json)
        let u16 = directory.appendingPathComponent("ids.u16")
        try Data(ids.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }).write(to: u16)

        let expected = Foundation.exp(6.7195454)
        for file in [json, u16] {
            let result = try PruneDistBinary.run(["eval", "perplexity", "--model", Fixtures.path("fixtures/tiny-llama").path,
                                                  "--tokens", file.path, "--seqlen", "16", "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            let object = try result.lastJSON()
            let perplexity = try XCTUnwrap(object["perplexity"] as? Double)
            XCTAssertEqual(perplexity, expected, accuracy: 1e-4 * expected, file.lastPathComponent)
            XCTAssertEqual(object["windows"] as? Int, 2)
            XCTAssertEqual(object["tokens"] as? Int, 32)
        }

        // --max-windows 1 evaluates the first sequence alone: its golden per-token NLLs.
        let result = try PruneDistBinary.run(["eval", "perplexity", "--model", Fixtures.path("fixtures/tiny-llama").path,
                                              "--tokens", json.path, "--seqlen", "16", "--max-windows", "1", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let reference = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
        let first = try reference.floats("nll_per_token")[0..<15].reduce(0.0) { $0 + Double($1) } / 15
        XCTAssertEqual(try XCTUnwrap(try result.lastJSON()["perplexity"] as? Double), Foundation.exp(first), accuracy: 1e-4 * Foundation.exp(first))
    }

    func testBadTokenFilesAreClearErrors() throws {
        let directory = try Fixtures.temporaryDirectory("ppl-bad")
        defer { try? FileManager.default.removeItem(at: directory) }
        let model = try Fixtures.path("fixtures/tiny-llama").path
        let cases: [(name: String, bytes: Data, message: String)] = [
            ("odd.u16", Data([1, 0, 2]), "not a whole number of uint16"),
            ("text.json", Data("{\"ids\": [1]}".utf8), "expected a JSON array"),
            ("negative.json", Data("[1, -3]".utf8), "element 1"),
            ("short.json", Data("[1, 2, 3]".utf8), "do not fill one window"),
            ("vocab.json", Data("[\((0..<15).map(String.init).joined(separator: ",")), 600]".utf8), "outside the model's vocabulary"),
        ]
        for item in cases {
            let file = directory.appendingPathComponent(item.name)
            try item.bytes.write(to: file)
            let result = try PruneDistBinary.run(["eval", "perplexity", "--model", model, "--tokens", file.path, "--seqlen", "16"])
            XCTAssertNotEqual(result.status, 0, item.name)
            XCTAssertTrue(result.stderr.contains(item.message), "\(item.name): \(result.stderr)")
        }
        let missing = try PruneDistBinary.run(["eval", "perplexity", "--model", model, "--tokens", directory.appendingPathComponent("none.json").path, "--seqlen", "16"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("none.json"), missing.stderr)
        let beyond = try PruneDistBinary.run(["eval", "perplexity", "--model", model, "--tokens", "x.json", "--seqlen", "257"])
        XCTAssertNotEqual(beyond.status, 0)
        XCTAssertTrue(beyond.stderr.contains("--seqlen 257 is beyond the model's context"), beyond.stderr)
        let both = try PruneDistBinary.run(["eval", "perplexity", "--model", model, "--tokens", "x.json", "--text", "y.txt"])
        XCTAssertNotEqual(both.status, 0)
        XCTAssertTrue(both.stderr.contains("exactly one of --tokens FILE and --text FILE"), both.stderr)
        let seqlen = try PruneDistBinary.run(["eval", "perplexity", "--model", model, "--tokens", "x.json", "--seqlen", "1"])
        XCTAssertNotEqual(seqlen.status, 0)
        XCTAssertTrue(seqlen.stderr.contains("--seqlen"), seqlen.stderr)
    }
}
