import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist average` through the binary: the soup folder (weights, config.json's record, tokenizer, card),
/// refusals that leave nothing behind, and a greedy soup under mpirun -n 2 equal to one process's.
final class AverageCommandTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("average-command") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// The tiny fixture with a tokenizer, each tensor plus noise of `seed` (and lm_head times `headScale`), as `dtype`.
    private func ingredient(_ name: String, seed: UInt64, headScale: Float = 1, dtype: DType = .bf16) throws -> URL {
        let base = scratch.appendingPathComponent("tiny-llama")
        if !FileManager.default.fileExists(atPath: base.path) { _ = try TinyEvaluationFixture.model(in: scratch) }
        let url = scratch.appendingPathComponent(name)
        try writeCheckpointVariant(of: base, to: url, dtype: dtype) { name, shape, values in
            let scale = name == "lm_head.weight" ? headScale : 1
            return (shape, zip(values, uniformNoise(count: values.count, scale: 0.02, seed: seed)).map { ($0 + $1) * scale })
        }
        return url
    }

    func testUniformSoupFolder() throws {
        let models = try (1...3).map { try ingredient("m\($0)", seed: UInt64($0)) }
        let out = scratch.appendingPathComponent("soup")
        let result = try PruneDistBinary.run(["average", "--models"] + models.map(\.path) + ["--out", out.path, "--log-level", "warning"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.lastJSON()
        XCTAssertEqual(json["method"] as? String, "uniform")
        XCTAssertEqual(result.stdout.components(separatedBy: "weight 0.3333").count - 1, 3, result.stdout)

        let soup = try Checkpoint(directory: out)
        let inputs = try models.map { try Checkpoint(directory: $0) }
        let name = "model.layers.0.self_attn.q_proj.weight"
        XCTAssertEqual(try soup.info(name).dtype, .bf16, "the inputs' dtype")
        let columns = try inputs.map { try $0.floats(name) }
        let mean = (0..<columns[0].count).map { i in Float(columns.reduce(0.0) { $0 + Double($1[i]) } / 3) }
        XCTAssertEqual(try soup.file(holding: name).bytes(name), encode(mean, as: .bf16))

        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as! [String: Any]
        let record = try XCTUnwrap((config["prune_dist"] as? [String: Any])?["soup"] as? [String: Any])
        let ingredients = try XCTUnwrap(record["ingredients"] as? [[String: Any]])
        XCTAssertEqual(ingredients.map { $0["path"] as? String }, models.map(\.path))
        let files = try XCTUnwrap(ingredients[1]["files"] as? [[String: Any]])
        XCTAssertEqual(files.first?["sha256"] as? String, try SHA256.file(models[1].appendingPathComponent("model.safetensors")).hex)
        XCTAssertEqual(config["dtype"] as? String, "bfloat16")
        for file in ["tokenizer.json", "generation_config.json", "soup-report.json", "README.md"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
        XCTAssertTrue(card.contains("uniform model soup") && card.contains(models[2].path), card)
    }

    /// Refused command lines (exit 64) and refused inputs (exit 1) change nothing on disk.
    func testRefusalsLeaveNothingBehind() throws {
        let a = try ingredient("a", seed: 1)
        let b = try ingredient("b", seed: 2)
        let wide = try ingredient("wide", seed: 3, dtype: .f32)
        let text = scratch.appendingPathComponent("t.txt")
        try Data("the cat sat on the mat. ".utf8).write(to: text)
        let out = scratch.appendingPathComponent("out").path
        let cases: [([String], Int32, String)] = [
            (["--models", a.path, "--out", out], 64, "at least two"),
            (["--models", a.path, a.path, "--out", out], 64, "same folder"),
            (["--models", a.path, b.path, "--out", a.appendingPathComponent("soup").path], 64, "is inside --models \(a.path)"),
            (["--models", a.path, b.path, "--out", out, "--greedy"], 64, "--eval-text FILE or --eval-tasks"),
            (["--models", a.path, b.path, "--out", out, "--eval-text", text.path], 64, "--eval-text scores a greedy soup"),
            (["--models", a.path, b.path, "--out", out, "--greedy", "--eval-tasks", "piqa"], 64, "--eval-data"),
            (["--models", a.path, scratch.appendingPathComponent("nope").path, "--out", out], 64, "no such model folder"),
            (["--models", a.path, wide.path, "--out", out], 1, "\(wide.path)/model.safetensors: tensor lm_head.weight is F32, expected BF16"),
        ]
        for (arguments, status, message) in cases {
            let before = DirectorySnapshot([scratch])
            let result = try PruneDistBinary.run(["average"] + arguments)
            XCTAssertEqual(result.status, status, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [], "\(arguments) changed files")
        }
    }

    /// mpirun -n 2 spreads the scoring and gives the same selection, scores and soup as one process.
    func testGreedyUnderMPIRunEqualsOneProcess() throws {
        let models = [try ingredient("small", seed: 1, headScale: 0.4, dtype: .f32),
                      try ingredient("destroyer", seed: 2, headScale: 12, dtype: .f32),
                      try ingredient("negative", seed: 3, headScale: -0.4, dtype: .f32)]
        let text = scratch.appendingPathComponent("held-out.txt")
        try Data(String(repeating: "the cat sat on the mat and the dog ran in the park. ", count: 12).utf8).write(to: text)
        func run(ranks: Int) throws -> (json: [String: Any], stdout: String, weights: Data) {
            let out = scratch.appendingPathComponent("soup-\(ranks)")
            let arguments = ["average", "--models"] + models.map(\.path)
                + ["--out", out.path, "--greedy", "--eval-text", text.path, "--eval-seqlen", "32", "--log-level", "warning"]
            let result = ranks == 1 ? try PruneDistBinary.run(arguments) : try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            return (try result.lastJSON(), result.stdout, try Data(contentsOf: out.appendingPathComponent("model.safetensors")))
        }
        let one = try run(ranks: 1)
        let two = try run(ranks: 2)
        XCTAssertEqual(one.json["steps"] as? NSArray, two.json["steps"] as? NSArray)
        XCTAssertEqual(one.json["score"] as? Double, two.json["score"] as? Double)
        XCTAssertEqual(one.weights, two.weights)
        let kept = try XCTUnwrap(one.json["ingredients"] as? [[String: Any]]).map { $0["kept"] as? Bool }
        XCTAssertEqual(kept, [true, false, true], one.stdout)
        XCTAssertTrue(one.stdout.contains("ingredient 2 \(models[1].path): score"), one.stdout)
        XCTAssertTrue(one.stdout.contains("not kept"), one.stdout)
        XCTAssertTrue(two.stdout.contains("greedy soup of 2 of 3 models"), two.stdout)
    }
}
