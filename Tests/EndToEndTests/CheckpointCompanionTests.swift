import Engine
import Foundation
import TestSupport
import XCTest

/// The output of `prune` is a checkpoint others can use: the input's tokenizer/chat/generation files, a model
/// card, `sparsity_config` and `prune_dist` (with provenance) in config.json, provenance in the reports.
final class CheckpointCompanionTests: XCTestCase {
    private var scratch: URL!
    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("companions") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// The tiny model with a tokenizer and the files a published checkpoint has beside its weights.
    private func model() throws -> (url: URL, companions: [String]) {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let companions = ["chat_template.jinja": "{{ '<|im_start|>' }}{% for m in messages %}{{ m['content'] }}{% endfor %}<|im_end|>",
                          "special_tokens_map.json": "{\"eos_token\": \"e\"}", "added_tokens.json": "{}",
                          "tokenizer_config.json": "{\"tokenizer_class\": \"PreTrainedTokenizerFast\"}", "LICENSE": "Apache-2.0\n"]
        for (name, text) in companions { try Data(text.utf8).write(to: model.appendingPathComponent(name)) }
        try Data("not weights we read".utf8).write(to: model.appendingPathComponent("pytorch_model.bin"))
        try Data("# the base model's card".utf8).write(to: model.appendingPathComponent("README.md"))
        try FileManager.default.createDirectory(at: model.appendingPathComponent("original"), withIntermediateDirectories: true)
        return (model, companions.keys.sorted() + ["generation_config.json", "tokenizer.json"])
    }

    private func sha256sum(_ url: URL) throws -> String? {
        let tool = URL(fileURLWithPath: "/usr/bin/sha256sum")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else { return nil }
        let result = try PruneDistBinary.launch(tool, [url.path])
        return result.stdout.split(separator: " ").first.map(String.init)
    }

    func testSparsePruneOutputCarriesCompanionsCardSparsityConfigAndProvenance() throws {
        let (model, companions) = try model()
        let calib = scratch.appendingPathComponent("calib.txt")
        try Data(String(repeating: "the cat sat on the mat and the dog ran in the park. ", count: 40).utf8).write(to: calib)
        let text = scratch.appendingPathComponent("eval.txt")
        try Data(String(repeating: "in the end the heron ate the fish. ", count: 20).utf8).write(to: text)
        let out = scratch.appendingPathComponent("wanda 2of4")
        let arguments = ["prune", "--model", model.path, "--out", out.path, "--method", "wanda", "--pattern", "2:4",
                         "--calib", calib.path, "--samples", "4", "--seqlen", "32", "--seed", "7", "--log-level", "warning",
                         "--eval-text", text.path, "--eval-seqlen", "32"]
        let result = try PruneDistBinary.mpirun(ranks: 2, arguments)
        XCTAssertEqual(result.status, 0, result.stderr)

        for name in companions {
            XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent(name)), try Data(contentsOf: model.appendingPathComponent(name)), name)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: out.path)
        XCTAssertFalse(files.contains("pytorch_model.bin"), "weights of another format are not copied")
        XCTAssertFalse(files.contains("original"), "folders are not copied")

        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any])
        let sparsity = try XCTUnwrap(config["sparsity_config"] as? [String: Any])
        XCTAssertEqual(sparsity["format"] as? String, "dense")
        XCTAssertEqual(sparsity["sparsity_structure"] as? String, "2:4")
        XCTAssertEqual(sparsity["global_sparsity"] as? Double, report["overall_sparsity"] as? Double)
        XCTAssertNil(config["quantization_config"], "transformers loads the folder without compressed-tensors")
        // The zeros really are there: count them in the written tensors.
        let checkpoint = try Checkpoint(directory: out)
        var zeros = 0, total = 0
        for name in checkpoint.tensorNames where LlamaLinear.parse(weightName: name) != nil {
            let values = try checkpoint.floats(name)
            zeros += values.filter { $0 == 0 }.count
            total += values.count
        }
        XCTAssertEqual(Double(zeros) / Double(total), try XCTUnwrap(sparsity["global_sparsity"] as? Double), accuracy: 1e-12)

        // Provenance, the same in the report and in config.json.
        let provenance = try XCTUnwrap(report["provenance"] as? [String: Any])
        let entry = try XCTUnwrap(config["prune_dist"] as? [String: Any])
        XCTAssertEqual(entry["method"] as? String, "wanda")
        XCTAssertEqual((entry["provenance"] as? [String: Any])?["command_line"] as? String, provenance["command_line"] as? String)
        XCTAssertEqual(Array((provenance["arguments"] as? [String] ?? []).dropFirst()), arguments)
        XCTAssertTrue((provenance["command_line"] as? String ?? "").contains("--out '\(out.path)'"), "quoted for a shell")
        XCTAssertEqual(provenance["ranks"] as? Int, 2)
        XCTAssertEqual(provenance["seed"] as? Int, 7)
        let rankHosts = try XCTUnwrap(report["rank_usage"] as? [[String: Any]]).compactMap { $0["host"] as? String }
        XCTAssertEqual(rankHosts.count, 2)
        XCTAssertEqual(provenance["hosts"] as? [String], Array(Set(rankHosts)), "one host here, named once")
        XCTAssertEqual(provenance["input_dtype"] as? String, "float32")
        let calibration = try XCTUnwrap(provenance["calibration"] as? [String: Any])
        XCTAssertEqual(calibration["bytes"] as? Int, try Data(contentsOf: calib).count)
        if let expected = try sha256sum(calib) { XCTAssertEqual(calibration["sha256"] as? String, expected) }
        let options = try XCTUnwrap(provenance["options"] as? [String: String])
        XCTAssertEqual(options["pattern"], "2:4")
        XCTAssertEqual(options["samples"], "4")
        XCTAssertNotNil(options["percdamp"], "defaults are recorded too")
        XCTAssertNotNil(ISO8601DateFormatter().date(from: provenance["date"] as? String ?? ""))
        let commit = try XCTUnwrap(provenance["git_commit"] as? String)
        let git = try? PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/git"), ["-C", Fixtures.packageRoot.path, "rev-parse", "HEAD"])
        if let git, git.status == 0 {
            XCTAssertEqual(commit, git.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        } else {
            XCTAssertEqual(commit.count, 40, commit)
        }

        // The model card: method, pattern, the evaluation and the command line; not the base model's card.
        let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(card.hasPrefix("---\nlibrary_name: transformers"), card)
        for needle in ["**wanda**", "| sparsity pattern | 2:4 |", "perplexity.eval", provenance["command_line"] as! String, commit, "sparse-2:4"] {
            XCTAssertTrue(card.contains(needle), "model card lacks \(needle):\n\(card)")
        }
        let html = try String(contentsOf: out.appendingPathComponent("prune-report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("<h2>Provenance</h2>") && html.contains(commit) && html.contains("option samples"), "HTML provenance")
    }

    func testStructuredOutputCarriesCompanionsAndProvenanceButNoSparsityConfig() throws {
        let (model, companions) = try model()
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 9)
        let out = scratch.appendingPathComponent("structured")
        let result = try PruneDistBinary.run(["prune", "--model", model.path, "--out", out.path, "--method", "llm-pruner", "--ratio", "0.5",
                                              "--block-start", "1", "--block-end", "2", "--calib", calib.path, "--samples", "8",
                                              "--seqlen", "32", "--log-level", "warning"])
        XCTAssertEqual(result.status, 0, result.stderr)
        for name in companions {
            XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent(name)), try Data(contentsOf: model.appendingPathComponent(name)), name)
        }
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        XCTAssertNil(config["sparsity_config"], "a structured result is dense, only smaller")
        let entry = try XCTUnwrap(config["prune_dist"] as? [String: Any])
        XCTAssertEqual(entry["method"] as? String, "llm-pruner")
        let provenance = try XCTUnwrap(entry["provenance"] as? [String: Any])
        XCTAssertEqual((provenance["options"] as? [String: String])?["ratio"], "0.5")
        XCTAssertEqual((provenance["calibration"] as? [String: Any])?["path"] as? String, calib.path)
        let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(card.contains("**llm-pruner**") && card.contains("| parameters |"), card)
    }
}
