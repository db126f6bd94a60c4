import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist eval zeroshot` and distributed `eval perplexity` through the binary, one process and mpirun.
final class EvaluationCommandTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("evaluation")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }


    private func counts(_ object: [String: Any]) throws -> [String: [Int]] {
        let tasks = try XCTUnwrap(object["tasks"] as? [String: [String: Any]])
        return tasks.mapValues { [($0["documents"] as? Int) ?? -1, ($0["correct"] as? Int) ?? -1, ($0["correct_norm"] as? Int) ?? -1] }
    }

    /// Every task on the tiny model: same counts (and bit-identical accuracies) on 1, 2 and 4 ranks, and the
    /// figures equal those computed here document by document through the Engine, one pair at a time.
    func testZeroShotCountsAreTheSameOnOneTwoAndFourRanks() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let tasks = try TinyEvaluationFixture.tasks(in: scratch)
        let arguments = ["eval", "zeroshot", "--model", model.path, "--data", tasks.path, "--json", "--log-level", "warning",
                         "--tasks", "boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,openbookqa,sst2", "--batch-tokens", "96"]
        let single = try PruneDistBinary.run(arguments)
        XCTAssertEqual(single.status, 0, single.stderr)
        let one = try single.lastJSON()
        XCTAssertEqual(try counts(one).count, 8)
        XCTAssertTrue(single.stdout.contains("average of 7 tasks"), single.stdout)
        for ranks in [2, 4] {
            let result = try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            let many = try result.lastJSON()
            XCTAssertEqual(try counts(many), try counts(one), "\(ranks) ranks")
            XCTAssertEqual(many["average_acc"] as? Double, one["average_acc"] as? Double, "\(ranks) ranks")
            XCTAssertEqual(many["ranks"] as? Int, ranks)
        }

        // Independent check: each pair scored alone (batch of one) through the Engine.
        let checkpoint = try Checkpoint(directory: model)
        let tokenizer = try Tokenizer.load(modelDirectory: model)
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let tasksObject = try XCTUnwrap(one["tasks"] as? [String: [String: Any]])
        for task in [ZeroShotTask.piqa, .winogrande, .arcEasy] {
            let documents = try task.documents(url: tasks.appendingPathComponent(task.fileName))
            var correct = 0
            for document in documents {
                let pairs = zip(document.contexts, document.continuations).map {
                    ScoredSequence(context: $0, continuation: $1, encode: tokenizer.encode)
                }
                let scores = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head,
                                                                sequences: pairs, batchTokens: 1)
                if ZeroShotScoring.predictions(document: document, scores: scores).acc == document.gold { correct += 1 }
            }
            let reported = try XCTUnwrap(tasksObject[task.rawValue]?["correct"] as? Int)
            XCTAssertEqual(reported, correct, "\(task.rawValue): batching changes no prediction on this data")
            XCTAssertEqual(tasksObject[task.rawValue]?["documents"] as? Int, documents.count)
        }
        XCTAssertNil(tasksObject["boolq"]?["acc_norm"], "BoolQ reports acc only")
        XCTAssertNotNil(tasksObject["hellaswag"]?["acc_norm"])

        // --limit keeps the first N documents.
        let limited = try PruneDistBinary.run(["eval", "zeroshot", "--model", model.path, "--data", tasks.path, "--tasks", "piqa",
                                               "--limit", "5", "--json", "--log-level", "warning"])
        XCTAssertEqual(limited.status, 0, limited.stderr)
        XCTAssertEqual(try counts(try limited.lastJSON())["piqa"]?[0], 5)
    }

    func testZeroShotRefusesUnknownTasksAndMissingFiles() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let unknown = try PruneDistBinary.run(["eval", "zeroshot", "--model", model.path, "--data", scratch.path, "--tasks", "boolq,mmlu"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("unknown task \"mmlu\""), unknown.stderr)
        let missing = try PruneDistBinary.run(["eval", "zeroshot", "--model", model.path, "--data", scratch.path, "--tasks", "piqa"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("piqa.validation.jsonl"), missing.stderr)
        // A bad line is named with its file and line number, also when the job runs on two ranks.
        let tasks = try TinyEvaluationFixture.tasks(in: scratch)
        let file = tasks.appendingPathComponent("winogrande_xl.validation.jsonl")
        var lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[2] = "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": 2.5}"
        try Data(lines.joined(separator: "\n").utf8).write(to: file)
        let bad = try PruneDistBinary.mpirun(ranks: 2, ["eval", "zeroshot", "--model", model.path, "--data", tasks.path, "--tasks", "winogrande"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("\(file.path): line 3") && bad.stderr.contains("\"answer\""), bad.stderr)
    }

    /// A context longer than the model's 256 positions is cut from the left, as the harness does.
    func testLongContextsAreTruncatedFromTheLeft() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let folder = scratch.appendingPathComponent("long")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let passage = String(repeating: "the cat sat on the mat. ", count: 40)  // about 600 byte tokens
        let rows = (0..<3).map { i in "{\"question\": \"is it \(i)\", \"passage\": \"\(passage)\", \"answer\": \(i == 1)}" }
        try Data(rows.joined(separator: "\n").utf8).write(to: folder.appendingPathComponent("boolq.validation.jsonl"))
        let result = try PruneDistBinary.run(["eval", "zeroshot", "--model", model.path, "--data", folder.path, "--tasks", "boolq",
                                              "--json", "--log-level", "warning"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual((try result.lastJSON()["tasks"] as? [String: [String: Any]])?["boolq"]?["documents"] as? Int, 3)
    }

    /// Windows shared out over ranks give the one-process perplexity exactly.
    func testPerplexityIsTheSameOnOneTwoAndFourRanks() throws {
        var random = SplitMix64(seed: 11)
        let ids = (0..<(7 * 24 + 5)).map { _ in Int(random.next() % 512) }
        let file = scratch.appendingPathComponent("ids.json")
        try JSONSerialization.data(withJSONObject: ids).write(to: file)
        let arguments = ["eval", "perplexity", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--tokens", file.path,
                         "--seqlen", "24", "--json"]
        let single = try PruneDistBinary.run(arguments)
        XCTAssertEqual(single.status, 0, single.stderr)
        let expected = try XCTUnwrap(try single.lastJSON()["perplexity"] as? Double)
        XCTAssertEqual(try single.lastJSON()["windows"] as? Int, 7)
        for ranks in [2, 4] {
            let result = try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(try result.lastJSON()["perplexity"] as? Double, expected, "\(ranks) ranks: bit-identical")
            XCTAssertEqual(result.stdout.split(separator: "\n").count, 1, "only rank 0 prints")
        }
    }
}
