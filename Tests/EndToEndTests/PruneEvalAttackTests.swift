import Engine
import Foundation
import TestSupport
import XCTest

/// `prune --eval-attack`: the pruned (and dense) model attacked over the run's ranks; the report's figures and
/// log are those `eval attack` gives on the output (and input) model run separately.
final class PruneEvalAttackTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("prune-eval-attack") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// The attack's options as `prune` spells them (prefix "--eval-attack-") and as `eval attack` does (prefix "--").
    private func attackOptions(_ prefix: String, data: URL, log: URL) -> [String] {
        ["\(prefix)data", data.path, "\(prefix)demo-pool", "4", "\(prefix)shots", "2", "\(prefix)template", "review",
         "\(prefix)seed", "3", "\(prefix)max-perturb", "0.5", "\(prefix)query-budget", "400", "\(prefix)log", log.path]
    }

    func testReportFiguresEqualEvalAttackOnTheOutputUnderMPIRun() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let data = try TinyEvaluationFixture.tasks(in: scratch)
        let out = scratch.appendingPathComponent("outputs/pruned")
        try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
        let pruneLog = scratch.appendingPathComponent("prune-attack.jsonl")
        let prune = try PruneDistBinary.mpirun(ranks: 2, ["prune", "--model", model.path, "--out", out.path, "--method", "magnitude",
                                                          "--sparsity", "0.5", "--log-level", "warning", "--eval-attack", "pwws"]
                                               + attackOptions("--eval-attack-", data: data, log: pruneLog))
        XCTAssertEqual(prune.status, 0, prune.stderr)
        XCTAssertTrue(prune.stdout.contains("Accuracy under attack:"), prune.stdout)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as! [String: Any]
        let pruned = try XCTUnwrap(report["evaluation"] as? [String: Double])
        let dense = try XCTUnwrap(report["dense_evaluation"] as? [String: Double])

        // The same attack run on its own, one process, on the output and on the input.
        func evalAttack(_ model: URL, log: String) throws -> [String: Any] {
            let result = try PruneDistBinary.run(["eval", "attack", "--model", model.path, "--task", "sst2", "--attack", "pwws", "--json", "--log-level", "warning"]
                                                 + attackOptions("--", data: data, log: scratch.appendingPathComponent(log)))
            XCTAssertEqual(result.status, 0, result.stderr)
            return try result.lastJSON()
        }
        for (figures, separate) in [(pruned, try evalAttack(out, log: "out.jsonl")), (dense, try evalAttack(model, log: "dense.jsonl"))] {
            XCTAssertEqual(figures["attack.pwws.documents"], (separate["examples"] as? Int).map(Double.init))
            for key in ["clean_accuracy", "accuracy_under_attack", "attack_success_rate", "average_perturbed_word_percent", "average_queries"] {
                XCTAssertEqual(figures["attack.pwws.\(key)"], separate[key] as? Double, key)
            }
        }
        XCTAssertEqual(pruned["attack.pwws.documents"], 8, "12 examples, the last 4 kept for demonstrations")
        XCTAssertEqual(try Data(contentsOf: pruneLog), try Data(contentsOf: scratch.appendingPathComponent("out.jsonl")),
                       "--eval-attack-log is the pruned model's log, the same bytes as eval attack --log")

        let html = try String(contentsOf: out.appendingPathComponent("prune-report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("attack pwws (8 examples)"), "evaluation table")
        XCTAssertTrue(html.contains(String(format: "<td>accuracy under attack (Aua)</td><td>%.2f %%</td>", 100 * pruned["attack.pwws.accuracy_under_attack"]!)), html)
        XCTAssertTrue(html.contains("<td>attack.pwws.clean_accuracy</td><td>\(String(format: "%.4f", dense["attack.pwws.clean_accuracy"]!))</td>"),
                      "dense → pruned table")
    }

    /// A structured run (the smaller checkpoint) takes --eval-attack too: its report holds `eval attack`'s figures on it.
    func testStructuredRunReportsTheAttackOnItsOutput() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let data = try TinyEvaluationFixture.tasks(in: scratch)
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 9)
        let out = scratch.appendingPathComponent("structured")
        let log = scratch.appendingPathComponent("structured.jsonl")
        let prune = try PruneDistBinary.run(["prune", "--model", model.path, "--out", out.path, "--method", "llm-pruner", "--ratio", "0.5",
                                             "--block-start", "1", "--block-end", "2", "--calib", calib.path, "--samples", "8", "--seqlen", "32",
                                             "--no-dense-eval", "--log-level", "warning", "--eval-attack", "pwws", "--eval-attack-limit", "4"]
                                            + attackOptions("--eval-attack-", data: data, log: log))
        XCTAssertEqual(prune.status, 0, prune.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as! [String: Any]
        XCTAssertNotNil(report["layer_widths"], "the structured report, rewritten with its evaluation")
        let figures = try XCTUnwrap(report["evaluation"] as? [String: Double])
        let separate = try PruneDistBinary.run(["eval", "attack", "--model", out.path, "--task", "sst2", "--attack", "pwws", "--limit", "4", "--json",
                                                "--log-level", "warning"] + attackOptions("--", data: data, log: scratch.appendingPathComponent("separate.jsonl")))
        XCTAssertEqual(separate.status, 0, separate.stderr)
        let json = try separate.lastJSON()
        XCTAssertEqual(figures["attack.pwws.documents"], 4)
        for key in ["clean_accuracy", "accuracy_under_attack", "attack_success_rate", "average_perturbed_word_percent", "average_queries"] {
            XCTAssertEqual(figures["attack.pwws.\(key)"], json[key] as? Double, key)
        }
        XCTAssertEqual(try Data(contentsOf: log), try Data(contentsOf: scratch.appendingPathComponent("separate.jsonl")))
        let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(card.contains("attack.pwws.accuracy_under_attack"), card)
    }

    /// Refused before any work (exit 64), nothing written.
    func testAttackOptionsAreCheckedFirst() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let data = try TinyEvaluationFixture.tasks(in: scratch)
        let base = ["prune", "--model", model.path, "--out", scratch.appendingPathComponent("out").path, "--sparsity", "0.5"]
        let cases: [([String], String)] = [
            (["--method", "magnitude", "--eval-attack", "pwws"], "needs --eval-attack-data"),
            (["--method", "magnitude", "--eval-attack-shots", "2"], "--eval-attack-shots needs --eval-attack"),
            (["--method", "magnitude", "--eval-attack", "pwws", "--eval-attack-data", scratch.path], "no sst2.validation.jsonl"),
            (["--method", "magnitude", "--eval-attack", "pwws", "--eval-attack-data", data.path, "--eval-attack-max-perturb", "2"], "--eval-attack-max-perturb must be in (0, 1]"),
            (["--method", "magnitude", "--eval-attack", "pwws", "--eval-attack-data", data.path, "--eval-attack-log", model.appendingPathComponent("config.json").path],
             "is not a prune-dist attack log"),
            (["--method", "llm-pruner", "--ratio", "0.2", "--calib", data.appendingPathComponent("sst2.validation.jsonl").path,
              "--eval-attack", "none", "--eval-attack-data", data.path, "--eval-attack-shots", "200"], "--eval-attack-shots must be in 0...64"),
        ]
        for (extra, message) in cases {
            let arguments = extra.first == "--method" && extra.contains("llm-pruner") ? Array(base.prefix(5)) + extra : base + extra
            let before = DirectorySnapshot([scratch])
            let result = try PruneDistBinary.run(arguments)
            XCTAssertEqual(result.status, 64, "\(extra): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(extra): \(result.stderr)")
            XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [], "\(extra) changed files")
        }
    }
}
