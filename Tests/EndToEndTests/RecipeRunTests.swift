import Engine
import Foundation
import TestSupport
import XCTest

/// `prune --recipe` through the binary: the recipe a run's report embeds, run again, writes the same
/// model.safetensors to the byte, on one process and under `mpirun -n 2`.
final class RecipeRunTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("recipe-run") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func prune(ranks: Int? = nil, _ arguments: [String], out: String) throws -> (out: URL, result: PruneDistBinary.Result) {
        let url = scratch.appendingPathComponent(out)
        let full = ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", url.path] + arguments
        let result = try ranks.map { try PruneDistBinary.mpirun(ranks: $0, full) } ?? PruneDistBinary.run(full)
        XCTAssertEqual(result.status, 0, "prune \(arguments): \(result.stderr)")
        return (url, result)
    }

    private func report(_ out: URL) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any])
    }

    func testTheEmbeddedRecipeRepeatsTheRunToTheByte() throws {
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 16, seqlen: 64, seed: 5)
        let tokens = scratch.appendingPathComponent("eval_tokens.json")
        try JSONSerialization.data(withJSONObject: (0..<256).map { ($0 * 37) % 512 }).write(to: tokens)
        let first = try prune(["--method", "krp", "--sparsity", "0.5", "--calib", calib.path, "--samples", "16", "--seqlen", "64",
                               "--ignore", "re:.*down_proj", "--sparsity-override", "model.layers.0.self_attn.q_proj=0.7",
                               "--eval-text", tokens.path, "--eval-seqlen", "32"], out: "first")
        // Evaluation logs its progress block by block, as pruning does (the pruned model, then the dense one).
        XCTAssertTrue(first.result.stderr.contains("perplexity on eval: block 3/3 done"), first.result.stderr)
        // The last lines name the output and both report files.
        let reports = [first.out.appendingPathComponent("prune-report.json").path, first.out.appendingPathComponent("prune-report.html").path]
        XCTAssertEqual(try first.result.lastJSON()["reports"] as? [String], reports)
        XCTAssertTrue(first.result.stderr.contains("output \(first.out.path); reports \(reports[0]) and \(reports[1])"), first.result.stderr)

        let recipe = try XCTUnwrap(try report(first.out)["recipe"] as? String)
        XCTAssertTrue(recipe.contains("ignore:\n- re:.*down_proj"), recipe)
        let html = try String(contentsOf: URL(fileURLWithPath: reports[1]), encoding: .utf8)
        XCTAssertTrue(html.contains("<pre class=\"recipe\">"), "the HTML shows the recipe")
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: first.out.appendingPathComponent("config.json"))) as? [String: Any])
        XCTAssertEqual((config["prune_dist"] as? [String: Any])?["recipe"] as? String, recipe)

        let file = scratch.appendingPathComponent("recipe.yaml")
        try Data(recipe.utf8).write(to: file)
        let again = try prune(["--recipe", file.path], out: "again")
        let twice = try prune(ranks: 2, ["--recipe", file.path], out: "two-ranks")
        let original = try Data(contentsOf: first.out.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(try Data(contentsOf: again.out.appendingPathComponent("model.safetensors")), original, "same bytes from the recipe")
        XCTAssertEqual(try report(again.out)["recipe"] as? String, recipe, "the recipe run embeds the same recipe")
        // MPICommunicator counts the bytes each rank sends as the in-memory one does: plan's estimate on 2 ranks.
        for usage in try XCTUnwrap(try report(twice.out)["rank_usage"] as? [[String: Any]]) {
            let sent = try XCTUnwrap(usage["bytes_sent"] as? Int), planned = try XCTUnwrap(usage["planned_bytes_sent"] as? Int)
            XCTAssertGreaterThan(planned, 100_000)
            XCTAssertLessThan(abs(sent - planned), 4096, "rank \(usage["rank"] ?? "?"): sent \(sent), plan \(planned)")
        }
        // Over 2 ranks the statistics are summed in another order: the same masks, weights to 1e-5.
        let a = try Checkpoint(directory: first.out), b = try Checkpoint(directory: twice.out)
        let input = try Checkpoint(directory: try Fixtures.path("fixtures/tiny-llama"))
        for name in a.tensorNames where LlamaLinear.parse(weightName: name) != nil {
            let (x, y) = (try a.floats(name), try b.floats(name))
            XCTAssertEqual(zip(x, y).filter { ($0.0 == 0) != ($0.1 == 0) }.count, 0, "\(name) mask on 2 ranks")
            XCTAssertLessThan(zip(x, y).map { abs($0 - $1) }.max() ?? 0, 1e-5, name)
            if name.hasSuffix("down_proj.weight") { XCTAssertTrue(x == (try input.floats(name)), "\(name) ignored: dense") }
        }

        let conflict = try PruneDistBinary.run(["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out",
                                                scratch.appendingPathComponent("conflict").path, "--recipe", file.path, "--sparsity", "0.6"])
        XCTAssertEqual(conflict.status, 64)
        XCTAssertTrue(conflict.stderr.contains("--sparsity is given on the command line and in --recipe"), conflict.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("conflict").path))
    }
}
