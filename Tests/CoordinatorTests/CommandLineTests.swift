import Foundation
import TestSupport
import XCTest
@testable import Coordinator

final class CommandLineTests: XCTestCase {
    func testRootCommandHasHelp() {
        XCTAssertTrue(PruneDistCommand.helpMessage().contains("prune-dist"))
    }

    /// AdaPruner's first trial uses --samples sequences, so --samples must be one of --sample-choices: otherwise a
    /// usage error (exit 64) naming both, not a silent switch to the first choice.
    func testAdaPrunerSamplesMustBeOneOfTheSampleChoices() throws {
        let scratch = try Fixtures.temporaryDirectory("command-line")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let calibration = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 1)
        func arguments(samples: String) throws -> [String] {
            ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", scratch.appendingPathComponent("out").path,
             "--method", "adapruner", "--ratio", "0.2", "--calib", calibration.path, "--seqlen", "32",
             "--samples", samples, "--sample-choices", "4,16"]
        }
        XCTAssertThrowsError(try PruneDistCommand.parseAsRoot(try arguments(samples: "8"))) { error in
            XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64)
            let message = PruneDistCommand.message(for: error)
            XCTAssertTrue(message.contains("--samples 8 is not one of --sample-choices 4,16"), message)
        }
        XCTAssertNoThrow(try PruneDistCommand.parseAsRoot(try arguments(samples: "16")))
    }

    /// --pattern and --dtype are parsed once, into their types, by the command line parser; a bad value is a usage
    /// error naming the option.
    func testPatternAndDTypeAreParsedIntoTheirTypes() throws {
        let scratch = try Fixtures.temporaryDirectory("command-line")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let base = ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", scratch.appendingPathComponent("out").path,
                    "--method", "magnitude"]
        let command = try XCTUnwrap(try PruneDistCommand.parseAsRoot(base + ["--pattern", "2:4", "--dtype", "f16"]) as? PruneCommand)
        XCTAssertEqual(command.pattern, .nOfM(n: 2, m: 4))
        XCTAssertEqual(command.dtype, .f16)
        XCTAssertEqual(try command.settings().pattern, .nOfM(n: 2, m: 4))
        XCTAssertEqual(try command.settings().outputDType, .f16)
        for (arguments, message) in [(["--pattern", "4:2"], "invalid for '--pattern <pattern>': N:M pattern needs 0 < N < M, got 4:2"), (["--sparsity", "0.5", "--dtype", "int8"], "--dtype must be bf16, f16 or f32, got int8"),
                                     (["--sparsity", "0.5", "--pattern", "2:4"], "pass only one")] {
            XCTAssertThrowsError(try PruneDistCommand.parseAsRoot(base + arguments)) { error in
                XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64, "\(arguments)")
                XCTAssertTrue(PruneDistCommand.message(for: error).contains(message), PruneDistCommand.message(for: error))
            }
        }
    }

    /// Ranks compare their command lines without path values (a rank may mount the same files elsewhere): a single
    /// path after its option, every path of `average --models A B …`, the `=` form; other values are compared.
    func testRankFingerprintLeavesPathValuesOut() {
        let lines = RankConsistency.fingerprint(arguments: ["prune-dist", "average", "--models", "/a/m1", "/a/m2", "--out", "o",
                                                            "--greedy", "--eval-text", "/a/wiki.txt", "--eval-attack-data=/d",
                                                            "--seqlen", "256"], files: [])
        XCTAssertEqual(lines, ["average", "--out o", "--greedy", "--seqlen 256"])
        let other = RankConsistency.fingerprint(arguments: ["prune-dist", "average", "--models", "/b/m1", "/b/m2", "--out", "o",
                                                            "--greedy", "--eval-text", "/b/wiki.txt", "--eval-attack-data=/e",
                                                            "--seqlen", "512"], files: [])
        XCTAssertEqual(other.last, "--seqlen 512", "a value that is not a path still counts")
    }

    /// `prune --help` groups options by method family, in this order, and its overview names all six methods, the
    /// exit codes' page and shell completion; every option keeps its name.
    func testPruneHelpIsGroupedByMethodFamily() {
        let help = PruneDistCommand.helpMessage(for: PruneCommand.self, columns: 200)
        let titles = ["COMMON (EVERY METHOD):", "UNSTRUCTURED AND N:M (MAGNITUDE, WANDA, SPARSEGPT, KRP):", "STRUCTURED (LLM-PRUNER, ADAPRUNER):",
                      "ADAPRUNER'S SEARCH (ADAPRUNER):", "EVALUATION OF THE RESULT (EVERY METHOD):", "ADVERSARIAL ATTACK OF THE RESULT (EVERY METHOD):", "CLUSTER (UNSTRUCTURED METHODS):", "PROCESS:"]
        let positions = titles.map { help.range(of: $0)?.lowerBound }
        XCTAssertFalse(positions.contains(nil), help)
        XCTAssertEqual(positions.compactMap { $0 }, positions.compactMap { $0 }.sorted(), "groups in family order")
        for method in PruneMethod.allCases { XCTAssertTrue(help.contains(method.rawValue), method.rawValue) }
        XCTAssertTrue(help.contains("docs/operators.md") && help.contains("--generate-completion-script"))
        // A sample of option names scripts use, each under its family.
        let unstructured = help.range(of: titles[1])!.lowerBound, structured = help.range(of: titles[2])!.lowerBound
        for option in ["--sparsity <sparsity>", "--krp-ridge <krp-ridge>", "--ignore <target>"] {
            let at = try! XCTUnwrap(help.range(of: option)).lowerBound
            XCTAssertTrue(unstructured < at && at < structured, option)
        }
        XCTAssertTrue(help.contains("--eval-text <eval-text>") && help.contains("--weights <weights>") && help.contains("--recipe <file.yaml>"))
    }
}

/// inspect lists tensors in the order a forward pass meets them: layers numerically (2 before 10), each block in
/// execution order, the final norm and head last.
final class InspectOrderTests: XCTestCase {
    func testTensorsAreInBlockOrder() {
        let names = ["lm_head.weight", "model.layers.10.mlp.down_proj.weight", "model.norm.weight", "model.layers.2.self_attn.q_proj.weight",
                     "model.layers.2.input_layernorm.weight", "model.embed_tokens.weight", "model.layers.10.input_layernorm.weight",
                     "model.layers.2.mlp.gate_proj.weight", "model.layers.2.post_attention_layernorm.weight"]
        XCTAssertEqual(names.sorted(by: blockOrder), [
            "model.embed_tokens.weight", "model.layers.2.input_layernorm.weight", "model.layers.2.self_attn.q_proj.weight",
            "model.layers.2.post_attention_layernorm.weight", "model.layers.2.mlp.gate_proj.weight",
            "model.layers.10.input_layernorm.weight", "model.layers.10.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight",
        ])
    }
}
