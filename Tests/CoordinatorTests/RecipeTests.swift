import Foundation
import TestSupport
import XCTest
@testable import Coordinator

/// `prune --recipe FILE.yaml` (PruneRecipe): what a recipe reads, how it expands into prune's options, and what
/// it refuses. EndToEndTests/RecipeRunTests runs recipes through the binary.
final class RecipeTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("recipe") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func write(_ text: String) throws -> String {
        let url = scratch.appendingPathComponent("recipe.yaml")
        try Data(text.utf8).write(to: url)
        return url.path
    }

    private func base() throws -> [String] {
        ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", scratch.appendingPathComponent("out").path]
    }

    /// Without --[no-]true-sequential: phase by phase for KRP and unstructured SparseGPT, the reference's order for
    /// N:M SparseGPT, Wanda and magnitude; the flag overrides either way.
    func testTrueSequentialDefaultsPerMethodAndPattern() throws {
        let cases: [([String], Bool)] = [
            (["--method", "sparsegpt", "--sparsity", "0.5"], true), (["--method", "sparsegpt", "--pattern", "2:4"], false),
            (["--method", "krp", "--sparsity", "0.5"], true), (["--method", "krp", "--pattern", "2:4"], true),
            (["--method", "wanda", "--sparsity", "0.5"], false), (["--method", "magnitude", "--pattern", "4:8"], false),
            (["--method", "sparsegpt", "--sparsity", "0.5", "--no-true-sequential"], false),
            (["--method", "sparsegpt", "--pattern", "2:4", "--true-sequential"], true),
            (["--method", "wanda", "--sparsity", "0.5", "--true-sequential"], true),
        ]
        let calibration = scratch.appendingPathComponent("calib.txt")
        try Data("calibration text".utf8).write(to: calibration)
        for (arguments, expected) in cases {
            let command = try XCTUnwrap(try PruneDistCommand.parseAsRoot(try base() + arguments + ["--calib", calibration.path]) as? PruneCommand)
            XCTAssertEqual(try command.settings().trueSequential, expected, arguments.joined(separator: " "))
        }
    }

    /// Every part of the schema becomes the prune option of the same name, in the recipe's order.
    func testARecipeExpandsIntoPruneOptions() throws {
        let file = try write("""
        prune_dist_recipe: 1
        method: sparsegpt
        pattern: 2:4
        calibration: {file: /data/calib.txt, samples: 64, seqlen: 256, seed: 3}
        options:
          true-sequential: false
          percdamp: 0.05
        ignore: [lm_head, "re:.*down_proj"]
        overrides:
          - targets: ["re:model\\\\.layers\\\\.0\\\\..*", model.layers.2.mlp.up_proj]
            sparsity: 0.3
        """)
        let expanded = try PruneRecipe.expand(try base() + ["--recipe", file])
        XCTAssertEqual(Array(expanded.suffix(from: try base().count + 2)), [
            "--method", "sparsegpt", "--pattern", "2:4", "--calib", "/data/calib.txt", "--samples", "64", "--seqlen", "256", "--seed", "3",
            "--no-true-sequential", "--percdamp", "0.05", "--ignore", "lm_head", "--ignore", "re:.*down_proj",
            "--sparsity-override", "re:model\\.layers\\.0\\..*=0.3", "--sparsity-override", "model.layers.2.mlp.up_proj=0.3",
        ])
        XCTAssertEqual(try PruneRecipe.expand(["eval", "--recipe", file]), ["eval", "--recipe", file], "only prune reads recipes")
    }

    /// The recipe a run embeds, read back, gives the same options: the round trip a report → recipe → run relies on.
    func testTheEmbeddedRecipeReadsBackToTheSameCommand() throws {
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 4, seqlen: 32, seed: 1)
        let arguments = try base() + ["--method", "krp", "--sparsity", "0.6", "--calib", calib.path, "--samples", "4", "--seqlen", "32",
                                      "--krp-ridge", "legacy", "--no-krp-ridge-per-input", "--allocation", "owl", "--owl-lambda", "0.05",
                                      "--ignore", "re:.*o_proj", "--sparsity-override", "model.layers.1.mlp.gate_proj=4:8", "--dtype", "bf16"]
        let command = try XCTUnwrap(try PruneDistCommand.parseAsRoot(arguments) as? PruneCommand)
        let yaml = try command.runRecipe().yaml()
        XCTAssertTrue(yaml.hasPrefix("# prune-dist recipe"), yaml)
        let file = try write(yaml)
        let again = try XCTUnwrap(try PruneDistCommand.parseAsRoot(try PruneRecipe.expand(try base() + ["--recipe", file])) as? PruneCommand)
        XCTAssertEqual(try again.runRecipe().yaml(), yaml)
        let (a, b) = (try command.settings(), try again.settings())
        XCTAssertEqual(a.pattern, b.pattern)
        XCTAssertEqual(a.linearRules, b.linearRules)
        XCTAssertEqual(a.linearRules.overrides.first?.pattern, .nOfM(n: 4, m: 8))
        XCTAssertEqual("\(a.krpRectification)", "\(b.krpRectification)")
        XCTAssertEqual(b.allocation, .owl)
        XCTAssertEqual(b.owl.spread, 0.05)
        XCTAssertEqual(b.outputDType, .bf16)
        XCTAssertEqual([b.samples, b.seqlen, b.seed], [4, 32, 0])
    }

    /// A structured run's recipe (ratio, importance, AdaPruner's search options) reads back to the same settings.
    func testAStructuredRecipeReadsBack() throws {
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 1)
        let arguments = try base() + ["--method", "adapruner", "--ratio", "0.25", "--calib", calib.path, "--seqlen", "32", "--samples", "4",
                                      "--sample-choices", "4,8", "--trials", "3", "--importance", "vector", "--block-start", "0", "--block-end", "1"]
        let command = try XCTUnwrap(try PruneDistCommand.parseAsRoot(arguments) as? PruneCommand)
        let yaml = try command.runRecipe().yaml()
        XCTAssertTrue(yaml.contains("ratio: 0.25") && yaml.contains("trials: 3") && yaml.contains("sample-choices: 4,8"), yaml)
        let file = try write(yaml)
        let again = try XCTUnwrap(try PruneDistCommand.parseAsRoot(try PruneRecipe.expand(try base() + ["--recipe", file])) as? PruneCommand)
        XCTAssertEqual(try again.runRecipe().yaml(), yaml)
        XCTAssertEqual(again.structured.ratio, 0.25)
        XCTAssertEqual(again.structured.importance, .vector)
        XCTAssertEqual(try again.searchSettings().trials, 3)
        XCTAssertEqual(try again.searchSettings().sampleChoices, [4, 8])
    }

    /// Unknown keys, wrong kinds, a missing method and options given twice are usage errors (exit 64) naming the key
    /// (or option) and the file.
    func testBadRecipesAreRefusedByName() throws {
        let cases: [(String, String)] = [
            ("method: krp\nsparsty: 0.5\n", "unknown key sparsty"),
            ("method: krp\noptions: {model: /x}\n", "unknown key options.model"),
            ("method: krp\ncalibration: {path: x}\n", "unknown key calibration.path"),
            ("method: krp\noptions: {true-sequential: maybe}\n", "options.true-sequential must be true or false"),
            ("sparsity: 0.5\n", "no method: key"),
            ("method: [krp]\n", "method must be a single value"),
            ("prune_dist_recipe: 2\nmethod: krp\n", "not a version this prune-dist reads"),
            ("method: krp\noverrides:\n  - targets: [x]\n", "each override needs targets and a sparsity"),
            ("method: krp\n  bad: [\n", "not valid YAML"),
        ]
        for (text, expected) in cases {
            let file = try write(text)
            XCTAssertThrowsError(try PruneRecipe.expand(try base() + ["--recipe", file]), text) { error in
                XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64)
                let message = PruneDistCommand.message(for: error)
                XCTAssertTrue(message.contains(expected) && message.contains(file), "\(text): \(message)")
            }
        }
        let file = try write("method: magnitude\nsparsity: 0.5\ncalibration: {seqlen: 64}\n")
        for given in [["--seqlen", "32"], ["--seqlen=32"], ["--method", "krp"]] {
            XCTAssertThrowsError(try PruneRecipe.expand(try base() + given + ["--recipe", file])) { error in
                XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64)
                XCTAssertTrue(PruneDistCommand.message(for: error).contains("is given on the command line and in --recipe \(file)"))
            }
        }
        XCTAssertThrowsError(try PruneRecipe.expand(try base() + ["--recipe", scratch.appendingPathComponent("none.yaml").path])) { error in
            XCTAssertTrue(PruneDistCommand.message(for: error).contains("none.yaml: no such file"))
        }
    }

    /// --ignore and --sparsity-override values are checked when parsed; structured methods refuse them.
    func testIgnoreAndOverrideValuesAreChecked() throws {
        let magnitude = try base() + ["--method", "magnitude", "--sparsity", "0.5"]
        for (arguments, expected) in [(["--sparsity-override", "model.layers.0.mlp.up_proj"], "must be TARGET=SPARSITY"),
                                      (["--sparsity-override", "re:.*up_proj=1.5"], "sparsity must be in [0, 1)"),
                                      (["--ignore", "re:(unclosed"], "not a regular expression")] {
            XCTAssertThrowsError(try PruneDistCommand.parseAsRoot(magnitude + arguments)) { error in
                XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64)
                XCTAssertTrue(PruneDistCommand.message(for: error).contains(expected), PruneDistCommand.message(for: error))
            }
        }
        let calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 4, seqlen: 32, seed: 1)
        XCTAssertThrowsError(try PruneDistCommand.parseAsRoot(try base() + ["--method", "llm-pruner", "--ratio", "0.2", "--calib", calib.path,
                                                                            "--ignore", "lm_head"])) { error in
            XCTAssertTrue(PruneDistCommand.message(for: error).contains("--ignore is not used by --method llm-pruner"))
        }
        XCTAssertTrue(LinearRules.matches("re:.*down_proj", "model.layers.3.mlp.down_proj"))
        XCTAssertFalse(LinearRules.matches("re:layers\\.3", "model.layers.3.mlp.down_proj"), "a regular expression matches the whole name")
        XCTAssertFalse(LinearRules.matches("mlp.down_proj", "model.layers.3.mlp.down_proj"), "a plain target is the exact name")
    }
}
