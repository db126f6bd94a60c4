import Engine
import Foundation
import TestSupport
import XCTest

/// Run reports through the binary: `prune … --eval-*` stores its evaluation and writes the HTML beside the
/// JSON; `prune-dist report` renders several runs side by side.
final class RunReportTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("run-report")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }


    private func calibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 3)
    }

    /// Checks an HTML report: every inline SVG is well-formed XML, the per-linear panel of each run holds one
    /// mark per linear, and nothing points outside the file.
    private func checkHTML(_ url: URL, runs: Int, linears: Int) throws -> String {
        let html = try String(contentsOf: url, encoding: .utf8)
        let svgs = try SVGInspection.svgs(in: html)
        XCTAssertGreaterThanOrEqual(svgs.count, 1 + 4 * runs)
        for run in 0..<runs {
            let panel = try XCTUnwrap(svgs.first { $0.id == "linear-sparsity-\(run)" }, "run \(run)'s per-linear panel")
            XCTAssertEqual(panel.classCounts["linear-mark"], linears, "one mark per linear, run \(run)")
        }
        for external in ["http://", "https://", "<script", "<link", "src="] where external != "http://" {
            XCTAssertFalse(html.contains(external), "self-contained: \(external)")
        }
        XCTAssertFalse(html.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").contains("http://"))
        return html
    }

    func testPruneWithEvaluationOverTwoRanksWritesJSONAndHTMLAndReportCombinesRuns() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let tasks = try TinyEvaluationFixture.tasks(in: scratch)
        let text = scratch.appendingPathComponent("eval.txt")
        try Data(String(repeating: "the cat sat on the mat and the dog ran in the park. ", count: 12).utf8).write(to: text)
        let calib = try calibration()
        var reports: [URL] = []
        var evaluations: [[String: Double]] = []
        for (method, ranks) in [("wanda", 2), ("sparsegpt", 1)] {
            let out = scratch.appendingPathComponent("out-\(method)")
            let report = scratch.appendingPathComponent("\(method)-report.json")
            let arguments = ["prune", "--model", model.path, "--out", out.path, "--method", method, "--sparsity", "0.5",
                             "--calib", calib.path, "--samples", "8", "--seqlen", "32", "--report", report.path, "--log-level", "warning",
                             "--eval-text", text.path, "--eval-seqlen", "64", "--eval-tasks", "piqa,winogrande,arc_easy",
                             "--eval-data", tasks.path, "--eval-limit", "10"]
            let result = ranks == 1 ? try PruneDistBinary.run(arguments) : try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertTrue(result.stdout.contains("perplexity ") && result.stdout.contains("average of 3 tasks"), result.stdout)
            let printed = try XCTUnwrap(try result.lastJSON()["evaluation"] as? [String: Double])

            // The report in the checkpoint and the one asked for hold the evaluation; both have their HTML twin.
            for json in [out.appendingPathComponent("prune-report.json"), report] {
                let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
                let evaluation = try XCTUnwrap(object["evaluation"] as? [String: Double], json.path)
                XCTAssertEqual(evaluation, printed)
                XCTAssertEqual(evaluation["zeroshot.piqa.documents"], 10)
                XCTAssertEqual(evaluation["perplexity.seqlen"], 64)
                XCTAssertGreaterThan(evaluation["perplexity"] ?? 0, 1)
                _ = try checkHTML(json.deletingPathExtension().appendingPathExtension("html"), runs: 1, linears: 21)
            }

            // The evaluation equals the standalone commands on the written checkpoint.
            let zeroshot = try PruneDistBinary.run(["eval", "zeroshot", "--model", out.path, "--data", tasks.path,
                                                    "--tasks", "piqa,winogrande,arc_easy", "--limit", "10", "--json", "--log-level", "warning"])
            XCTAssertEqual(zeroshot.status, 0, zeroshot.stderr)
            let standalone = try XCTUnwrap(try zeroshot.lastJSON()["tasks"] as? [String: [String: Any]])
            for task in ["piqa", "winogrande", "arc_easy"] {
                XCTAssertEqual(printed["zeroshot.\(task).acc"], standalone[task]?["acc"] as? Double, task)
            }
            let perplexity = try PruneDistBinary.run(["eval", "perplexity", "--model", out.path, "--text", text.path, "--seqlen", "64", "--json"])
            XCTAssertEqual(try perplexity.lastJSON()["perplexity"] as? Double, printed["perplexity"])
            reports.append(report)
            evaluations.append(printed)
        }

        // Two runs side by side.
        let page = scratch.appendingPathComponent("both.html")
        let combined = try PruneDistBinary.run(["report"] + reports.map(\.path) + ["--out", page.path])
        XCTAssertEqual(combined.status, 0, combined.stderr)
        let html = try checkHTML(page, runs: 2, linears: 21)
        XCTAssertTrue(html.contains("wanda unstructured 50%") && html.contains("sparsegpt unstructured 50%"))
        XCTAssertTrue(html.contains(String(format: "%.3f", evaluations[0]["perplexity"]!)), "the evaluation table shows each run's perplexity")

        // A file that is not a run report is named.
        let bad = try PruneDistBinary.run(["report", text.path, "--out", page.path])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains(text.path), bad.stderr)
    }

    /// Several --eval-text files: each text's perplexity under its own key (the first also under the plain
    /// one), equal to `eval perplexity` on the written checkpoint with the same windows, and a row each in the HTML.
    func testSeveralEvaluationTextsAreReportedEach() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let texts = [("wiki", "the cat sat on the mat and the dog ran in the park. "), ("code", "def f(x):\n    return x + 1\n\n")]
            .map { name, line -> URL in
                let url = scratch.appendingPathComponent("\(name).txt")
                try? Data(String(repeating: line, count: 40).utf8).write(to: url)
                return url
            }
        let out = scratch.appendingPathComponent("out")
        let result = try PruneDistBinary.mpirun(ranks: 2, ["prune", "--model", model.path, "--out", out.path, "--method", "wanda",
            "--sparsity", "0.5", "--calib", try calibration().path, "--samples", "8", "--seqlen", "32", "--log-level", "warning",
            "--eval-text", texts[0].path, "--eval-text", texts[1].path, "--eval-seqlen", "32", "--eval-max-windows", "3"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let evaluation = try XCTUnwrap(try result.lastJSON()["evaluation"] as? [String: Double])
        for text in texts {
            let label = text.deletingPathExtension().lastPathComponent
            let standalone = try PruneDistBinary.run(["eval", "perplexity", "--model", out.path, "--text", text.path, "--seqlen", "32",
                                                      "--max-windows", "3", "--json"])
            XCTAssertEqual(standalone.status, 0, standalone.stderr)
            XCTAssertEqual(evaluation["perplexity.\(label)"], try standalone.lastJSON()["perplexity"] as? Double, label)
            XCTAssertEqual(evaluation["perplexity.\(label).windows"], 3, label)
        }
        XCTAssertEqual(evaluation["perplexity"], evaluation["perplexity.wiki"])
        XCTAssertNotEqual(evaluation["perplexity.wiki"], evaluation["perplexity.code"])
        let html = try String(contentsOf: out.appendingPathComponent("prune-report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("perplexity, wiki") && html.contains("perplexity, code"), "one row per text")
    }

    func testEvalTasksWithoutDataIsRefused() throws {
        let result = try PruneDistBinary.run(["prune", "--model", "m", "--out", "o", "--method", "magnitude", "--sparsity", "0.5",
                                              "--eval-tasks", "piqa"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("--eval-data"), result.stderr)
        let missingText = try PruneDistBinary.run(["prune", "--model", "m", "--out", "o", "--method", "magnitude", "--sparsity", "0.5",
                                                   "--eval-text", scratch.appendingPathComponent("none.txt").path])
        XCTAssertNotEqual(missingText.status, 0)
        XCTAssertTrue(missingText.stderr.contains("none.txt"), missingText.stderr)
        let missingTask = try PruneDistBinary.run(["prune", "--model", "m", "--out", "o", "--method", "magnitude", "--sparsity", "0.5",
                                                   "--eval-tasks", "piqa", "--eval-data", scratch.path])
        XCTAssertNotEqual(missingTask.status, 0)
        XCTAssertTrue(missingTask.stderr.contains("piqa.validation.jsonl"), missingTask.stderr)
    }
}
