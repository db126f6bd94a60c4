import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist eval attack` through the binary: one process and mpirun give the same figures and log.
final class AttackCommandTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("attack-command")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// A small SST-2 file: 10 attacked examples, then a pool of 4 for the demonstrations.
    private func sst2() throws -> URL {
        let folder = scratch.appendingPathComponent("tasks")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let rows: [(String, Int)] = [
            ("a charming and moving film", 1), ("dull and boring plot", 0), ("the acting is good", 1), ("a bad movie", 0),
            ("funny clever story", 1), ("sad weak ending", 0), ("a great cast", 1), ("the film fails", 0),
            ("warm and bright", 1), ("an awful mess", 0),
            ("a fine picture", 1), ("a poor show", 0), ("happy tale", 1), ("grim work", 0),
        ]
        let lines = try rows.enumerated().map { i, row in
            String(decoding: try JSONSerialization.data(withJSONObject: ["sentence": row.0 + " ", "label": row.1, "idx": i], options: [.sortedKeys]), as: UTF8.self)
        }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: folder.appendingPathComponent("sst2.validation.jsonl"))
        return folder
    }

    private func logLines(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func testPWWSIsTheSameOnOneAndTwoRanksAndLogsRealWordNetFlips() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let data = try sst2()
        func arguments(_ log: String) -> [String] {
            ["eval", "attack", "--model", model.path, "--data", data.path, "--task", "sst2", "--attack", "pwws", "--shots", "2",
             "--template", "review", "--demo-pool", "4", "--seed", "3", "--max-perturb", "0.5", "--query-budget", "400",
             "--log", scratch.appendingPathComponent(log).path, "--json", "--log-level", "warning"]
        }
        let single = try PruneDistBinary.run(arguments("one.jsonl"))
        XCTAssertEqual(single.status, 0, single.stderr)
        XCTAssertTrue(single.stdout.contains("Attack success rate:"), single.stdout)
        let double = try PruneDistBinary.mpirun(ranks: 2, arguments("two.jsonl"))
        XCTAssertEqual(double.status, 0, double.stderr)
        var one = try single.lastJSON(), two = try double.lastJSON()
        XCTAssertEqual(two["ranks"] as? Int, 2)
        for key in ["seconds", "ranks"] { one[key] = nil; two[key] = nil }
        XCTAssertEqual(NSDictionary(dictionary: one), NSDictionary(dictionary: two))
        XCTAssertEqual(one["examples"] as? Int, 10)
        let logOne = try Data(contentsOf: scratch.appendingPathComponent("one.jsonl"))
        let logTwo = try Data(contentsOf: scratch.appendingPathComponent("two.jsonl"))
        XCTAssertEqual(logOne, logTwo, "the log is the same bytes for 1 and 2 ranks")

        // Every success is a real flip made of WordNet synonyms; every example's log is complete.
        let wordNet = try WordNet(directory: try XCTUnwrap(WordNet.defaultDirectory()))
        let lines = try logLines(scratch.appendingPathComponent("one.jsonl"))
        XCTAssertEqual(lines.count, 10)
        var succeeded = 0, queries = 0
        for line in lines {
            let status = try XCTUnwrap(line["status"] as? String)
            let gold = try XCTUnwrap(line["gold"] as? Int)
            let adversarialPrediction = try XCTUnwrap(line["adversarial_prediction"] as? Int)
            queries += try XCTUnwrap(line["queries"] as? Int)
            XCTAssertLessThanOrEqual(line["queries"] as? Int ?? 0, 400)
            if status == "succeeded" {
                succeeded += 1
                XCTAssertEqual(line["original_prediction"] as? Int, gold)
                XCTAssertNotEqual(adversarialPrediction, gold)
                let substitutions = try XCTUnwrap(line["substitutions"] as? [[String: Any]])
                XCTAssertFalse(substitutions.isEmpty)
                for s in substitutions {
                    let original = try XCTUnwrap(s["original"] as? String), replacement = try XCTUnwrap(s["replacement"] as? String)
                    XCTAssertTrue(wordNet.synonyms(original).contains { $0.word == replacement }, "\(original) → \(replacement)")
                }
            } else if status == "failed" {
                XCTAssertEqual(adversarialPrediction, gold)
            }
        }
        XCTAssertEqual(one["succeeded"] as? Int, succeeded)
        XCTAssertGreaterThan(succeeded, 0, "no flip: the synonym checks above proved nothing\n\(single.stdout)")
        print(single.stdout)
        XCTAssertGreaterThan(queries, 10, "the attack queried the model beyond the clean texts")
    }

    func testTextFoolerAndCleanRunsAndBadOptions() throws {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let data = try sst2()
        let base = ["eval", "attack", "--model", model.path, "--data", data.path, "--demo-pool", "4", "--limit", "4", "--json", "--log-level", "warning"]
        let fooler = try PruneDistBinary.run(base + ["--attack", "textfooler", "--min-cos", "0.0", "--max-candidates", "5"])
        XCTAssertEqual(fooler.status, 0, fooler.stderr)
        XCTAssertEqual(try fooler.lastJSON()["examples"] as? Int, 4)
        let clean = try PruneDistBinary.run(base + ["--attack", "none"])
        XCTAssertEqual(clean.status, 0, clean.stderr)
        let cleanJSON = try clean.lastJSON()
        XCTAssertEqual(cleanJSON["average_queries"] as? Double, 1)
        XCTAssertEqual(cleanJSON["clean_accuracy"] as? Double, cleanJSON["accuracy_under_attack"] as? Double)
        let bad = try PruneDistBinary.run(base + ["--task", "imdb"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("only sst2"), bad.stderr)
        let perturb = try PruneDistBinary.run(base + ["--max-perturb", "1.5"])
        XCTAssertNotEqual(perturb.status, 0)
        let pool = try PruneDistBinary.run(base + ["--demo-pool", "20"])
        XCTAssertNotEqual(pool.status, 0)
        XCTAssertTrue(pool.stderr.contains("--demo-pool"), pool.stderr)
        // --log replaces an earlier attack log, never a user's file, and refuses before the attack runs.
        let notes = scratch.appendingPathComponent("notes.txt")
        try Data("my notes\n".utf8).write(to: notes)
        let refused = try PruneDistBinary.run(base + ["--attack", "none", "--log", notes.path])
        XCTAssertEqual(refused.status, 64, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("is not a prune-dist attack log"), refused.stderr)
        XCTAssertEqual(try String(contentsOf: notes, encoding: .utf8), "my notes\n")
        let log = scratch.appendingPathComponent("clean.jsonl")
        for _ in 0..<2 {  // the second run replaces the first run's log
            let logged = try PruneDistBinary.run(base + ["--attack", "none", "--log", log.path])
            XCTAssertEqual(logged.status, 0, logged.stderr)
        }
        XCTAssertEqual(try String(contentsOf: log, encoding: .utf8).split(separator: "\n").count, 4)
    }
}
