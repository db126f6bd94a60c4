import Engine
import Foundation
import TestSupport
import XCTest

/// `prune --eval-text …` evaluates the dense model too (once, cached beside the output), and reports dense → pruned.
final class DenseEvaluationTests: XCTestCase {
    private var scratch: URL!
    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("dense-eval") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func testDenseEvaluationIsReportedCachedAndSkippable() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 4, seqlen: 32, seed: 3)
        let wiki = scratch.appendingPathComponent("wiki.txt"), tale = scratch.appendingPathComponent("tale.txt")
        try Data(String(repeating: "the cat sat on the mat and the dog ran in the park. ", count: 10).utf8).write(to: wiki)
        try Data(String(repeating: "in the end the heron ate the fish in the pond. ", count: 10).utf8).write(to: tale)
        let outputs = scratch.appendingPathComponent("outputs")
        try FileManager.default.createDirectory(at: outputs, withIntermediateDirectories: true)
        func prune(_ name: String, _ extra: [String] = [], ranks: Int = 1) throws -> (PruneDistBinary.Result, [String: Any]) {
            let out = outputs.appendingPathComponent(name)
            let arguments = ["prune", "--model", model.path, "--out", out.path, "--method", "wanda", "--sparsity", "0.5",
                             "--calib", calib.path, "--samples", "4", "--seqlen", "32", "--log-level", "info",
                             "--eval-text", wiki.path, "--eval-text", tale.path, "--eval-seqlen", "32", "--eval-max-windows", "3"] + extra
            let result = ranks == 1 ? try PruneDistBinary.run(arguments) : try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            let report = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any] ?? [:]
            return (result, report)
        }

        let (first, report) = try prune("first", ranks: 2)
        XCTAssertTrue(first.stderr.contains("evaluating the dense model"), first.stderr)
        let dense = try XCTUnwrap(report["dense_evaluation"] as? [String: Double])
        let pruned = try XCTUnwrap(report["evaluation"] as? [String: Double])
        // The dense figures are those `eval perplexity` gives on the input model with the same settings.
        for (label, text) in [("wiki", wiki), ("tale", tale)] {
            let eval = try PruneDistBinary.run(["eval", "perplexity", "--model", model.path, "--text", text.path, "--seqlen", "32",
                                                "--max-windows", "3", "--json"])
            XCTAssertEqual(eval.status, 0, eval.stderr)
            let expected = try XCTUnwrap(eval.lastJSON()["perplexity"] as? Double)
            XCTAssertEqual(try XCTUnwrap(dense["perplexity.\(label)"]), expected, accuracy: 1e-9 * expected, label)
            XCTAssertNotEqual(dense["perplexity.\(label)"], pruned["perplexity.\(label)"], "pruning changed the model")
            let line = String(format: "perplexity.\(label): dense %.4f → pruned %.4f", expected, pruned["perplexity.\(label)"]!)
            XCTAssertTrue(first.stdout.contains(line), "\(line) in\n\(first.stdout)")
        }
        XCTAssertEqual(try first.lastJSON()["dense_evaluation"] as? [String: Double], dense)
        let caches = try FileManager.default.contentsOfDirectory(atPath: outputs.path).filter { $0.hasPrefix(".prune-dist-dense-eval-") }
        XCTAssertEqual(caches.count, 1, "cached in the output's parent")
        let html = try String(contentsOf: outputs.appendingPathComponent("first/prune-report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("Dense → pruned") && html.contains(String(format: "%.4f", dense["perplexity.tale"]!)), "HTML comparison")
        let card = try String(contentsOf: outputs.appendingPathComponent("first/README.md"), encoding: .utf8)
        XCTAssertTrue(card.contains("| measure | dense | pruned | difference |"), card)

        // A second run on the same model and texts reads the cache (same figures, no dense evaluation).
        let (second, secondReport) = try prune("second", ["--sparsity", "0.3"])
        XCTAssertFalse(second.stderr.contains("evaluating the dense model"), second.stderr)
        XCTAssertTrue(second.stderr.contains("read from"), second.stderr)
        XCTAssertEqual(secondReport["dense_evaluation"] as? [String: Double], dense)

        // Other evaluation settings are another cache entry; --no-dense-eval skips it.
        let (_, shorter) = try prune("third", ["--eval-max-windows", "2"])
        XCTAssertNotEqual((shorter["dense_evaluation"] as? [String: Double])?["perplexity.wiki.windows"], dense["perplexity.wiki.windows"])
        let (skipped, skippedReport) = try prune("fourth", ["--no-dense-eval"])
        XCTAssertNil(skippedReport["dense_evaluation"])
        XCTAssertFalse(skipped.stdout.contains("→ pruned"))

        // Another model of the same shapes (one weight changed) has another hash: evaluated afresh.
        let other = scratch.appendingPathComponent("other")
        try FileManager.default.copyItem(at: model, to: other)
        let weights = other.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count - 3] ^= 0x10
        try bytes.write(to: weights)
        XCTAssertNotEqual(try DenseEvaluationHash.model(model), try DenseEvaluationHash.model(other))
    }
}

/// The model hash through the command line's own cache naming: a prune run on each model would do, but reading
/// the hash needs the Coordinator, so the test compares the cache files two evaluations leave.
enum DenseEvaluationHash {
    static func model(_ directory: URL) throws -> String {
        let scratch = try Fixtures.temporaryDirectory("dense-hash")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 2, seqlen: 16, seed: 1)
        let text = scratch.appendingPathComponent("t.txt")
        try Data(String(repeating: "the cat sat. ", count: 20).utf8).write(to: text)
        let result = try PruneDistBinary.run(["prune", "--model", directory.path, "--out", scratch.appendingPathComponent("o").path,
                                              "--method", "magnitude", "--sparsity", "0.5", "--calib", calib.path, "--samples", "2",
                                              "--seqlen", "16", "--eval-text", text.path, "--eval-seqlen", "16", "--log-level", "warning"])
        guard result.status == 0 else { throw PruneDistBinary.PruneDistBinaryErrorLike(result.stderr) }
        let name = try FileManager.default.contentsOfDirectory(atPath: scratch.path).first { $0.hasPrefix(".prune-dist-dense-eval-") }
        return String(name?.dropFirst(".prune-dist-dense-eval-".count).prefix(16) ?? "")
    }
}

extension PruneDistBinary {
    struct PruneDistBinaryErrorLike: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
