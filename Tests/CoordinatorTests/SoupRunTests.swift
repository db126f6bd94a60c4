import Engine
import Foundation
import Logging
import TestSupport
import Worker
import WorkerTesting
import XCTest
@testable import Coordinator

/// Greedy soups: the selection rule on given scores, and `SoupRun` on crafted ingredients over 1, 2 and 4
/// in-memory ranks. The ingredients differ only in lm_head, scaled by s: +0.4, −0.4 and 12 (which destroys the
/// model). For this random fixture a larger |s| makes its random predictions more confident, so perplexity grows
/// with |s|; the soup of +0.4 and −0.4 has lm_head exactly 0, uniform predictions, perplexity = the vocabulary
/// (512). Greedy must keep both small ones (their soup improves on either) and refuse the destroyer.
final class SoupRunTests: XCTestCase {
    private var scratch: URL!
    private let logger: Logger = {
        var logger = Logger(label: "prune-dist.tests")
        logger.logLevel = .warning
        return logger
    }()

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("soup-run") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// `SoupRun` over `ranks` in-memory ranks, rank 0 holding the output's lock as `average` does; every rank's report.
    private func soup(_ settings: SoupSettings, ranks: Int) throws -> [SoupReport] {
        let (out, logger) = (settings.out, logger)
        return try InMemoryCommunicator.run(ranks: ranks) { comm in
            let lock = comm.rank == 0 ? try OutputLock.acquire(partial: OutputFolder.partialFolder(for: out), out: out) : nil
            return try SoupRun(settings: settings, comm: comm, logger: logger, lock: lock).run()
        }
    }

    func testSelectionTriesBestFirstAndKeepsOnlyStrictImprovements() {
        // Lower is better: tried 1 (2.0), 2 (3.0), 0 (5.0), 3 (5.0, after 0 by command-line order).
        let soupScores: [[Int]: Double] = [[1, 2]: 1.5, [0, 1, 2]: 1.5, [1, 2, 3]: 1.4]
        var asked: [[Int]] = []
        let selection = GreedySoup.select(scores: [5, 2, 3, 5], lowerIsBetter: true) { members in
            asked.append(members)
            return soupScores[members]!
        }
        XCTAssertEqual(asked, [[1, 2], [0, 1, 2], [1, 2, 3]], "each candidate is the kept soup plus one, best first")
        XCTAssertEqual(selection.steps.map(\.ingredient), [1, 2, 0, 3])
        XCTAssertEqual(selection.steps.map(\.kept), [true, true, false, true], "a tie (1.5 = 1.5) is not kept")
        XCTAssertEqual(selection.kept, [1, 2, 3])
        XCTAssertEqual(selection.score, 1.4)
        // Higher is better: the same scores read the other way.
        let higher = GreedySoup.select(scores: [5, 2, 3, 5], lowerIsBetter: false) { members in members == [0, 3] ? 6 : 1 }
        XCTAssertEqual(higher.steps.map(\.ingredient), [0, 3, 2, 1])
        XCTAssertEqual(higher.kept, [0, 3])
        XCTAssertEqual(higher.score, 6)
    }

    /// The tiny fixture (with a tokenizer) with lm_head scaled by each factor, and a text to score on.
    private func ingredients(scales: [Float]) throws -> (models: [URL], text: URL) {
        let base = try TinyEvaluationFixture.model(in: scratch)
        let models = try scales.enumerated().map { i, scale -> URL in
            let url = scratch.appendingPathComponent("ingredient-\(i)")
            try writeCheckpointVariant(of: base, to: url) { name, shape, values in
                (shape, name == "lm_head.weight" ? values.map { $0 * scale } : values)
            }
            return url
        }
        let text = scratch.appendingPathComponent("held-out.txt")
        try Data(String(repeating: "the cat sat on the mat and the dog ran in the park. ", count: 12).utf8).write(to: text)
        return (models, text)
    }

    func testGreedySoupKeepsTheRightIngredientsOnOneTwoAndFourRanks() throws {
        let (models, text) = try ingredients(scales: [0.4, -0.4, 12])
        let scoring = PruneRunEvaluation(texts: [text], seqlen: 32, maxWindows: nil, tasks: [], data: nil, limit: nil)
        var reports: [SoupReport] = []
        for ranks in [1, 2, 4] {
            let out = scratch.appendingPathComponent("soup-\(ranks)")
            let settings = SoupSettings(models: models, out: out, dtype: nil, scoring: scoring)
            let all = try soup(settings, ranks: ranks)
            let report = all[0]
            XCTAssertEqual(all.map(\.steps), Array(repeating: report.steps, count: ranks), "every rank has the report")
            XCTAssertEqual(report.method, "greedy")
            XCTAssertEqual(report.ingredients.map(\.kept), [true, true, false])
            XCTAssertEqual(report.ingredients.map(\.weight), [0.5, 0.5, 0])
            let steps = try XCTUnwrap(report.steps)
            XCTAssertEqual(steps.last?.ingredient, 2, "the destroyer scores worst alone, so it is tried last")
            XCTAssertGreaterThan(steps[2].score, 2 * max(steps[0].score, steps[1].score))
            XCTAssertFalse(steps[2].kept)
            XCTAssertLessThan(steps[1].soupScore, steps[0].soupScore, "the second small one improves the soup")
            XCTAssertEqual(try XCTUnwrap(report.score), 512, accuracy: 0.01, "uniform predictions over 512 tokens")
            // The output is the soup that was scored: lm_head exactly zero, everything else the fixture's.
            let soup = try Checkpoint(directory: out)
            XCTAssertEqual(Set(try soup.floats("lm_head.weight")), [0])
            let base = try Checkpoint(directory: models[0])
            XCTAssertEqual(try soup.floats("model.layers.1.mlp.down_proj.weight"), try base.floats("model.layers.1.mlp.down_proj.weight"))
            XCTAssertFalse(FileManager.default.fileExists(atPath: OutputFolder.partialFolder(for: out).path), "partial folder moved into place")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("candidate").path), "no candidate left")
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("tokenizer.json").path))
            reports.append(report)
        }
        // Perplexity is the same bits on any number of ranks (DistributedEvaluation), so every score is.
        XCTAssertEqual(reports[1].steps, reports[0].steps)
        XCTAssertEqual(reports[2].steps, reports[0].steps)
    }

    /// A soup scored alone is the ingredient's own score: the one-ingredient candidate is that model.
    func testIngredientScoreIsItsOwnPerplexity() throws {
        let (models, text) = try ingredients(scales: [0.4, -0.4])
        let scoring = PruneRunEvaluation(texts: [text], seqlen: 32, maxWindows: nil, tasks: [], data: nil, limit: nil)
        let out = scratch.appendingPathComponent("soup")
        let settings = SoupSettings(models: models, out: out, dtype: nil, scoring: scoring)
        let report = try soup(settings, ranks: 2)[0]
        let logger = logger
        let alone = try InMemoryCommunicator.run(ranks: 1) { comm in
            try scoring.evaluate(model: models[1], comm: comm, logger: logger).entries["perplexity"]
        }[0]
        XCTAssertEqual(report.ingredients[1].score, alone)
    }

    /// Zero-shot scoring (higher is better): the soup's score is the mean over the tasks of acc_norm where reported
    /// (acc otherwise) of the output model, as `eval zeroshot` measures it.
    func testZeroShotScoreIsTheOutputsTaskAverage() throws {
        let (models, _) = try ingredients(scales: [0.4, -0.4, 12])
        let tasks = try TinyEvaluationFixture.tasks(in: scratch)
        let scoring = PruneRunEvaluation(texts: [], seqlen: 512, maxWindows: nil, tasks: [.piqa, .sst2], data: tasks, limit: 8)
        let out = scratch.appendingPathComponent("soup")
        let settings = SoupSettings(models: models, out: out, dtype: nil, scoring: scoring)
        let report = try soup(settings, ranks: 2)[0]
        let logger = logger
        XCTAssertEqual(report.lowerIsBetter, false)
        XCTAssertTrue(report.measure?.contains("zero-shot average of piqa, sst2") == true, report.measure ?? "")
        let steps = try XCTUnwrap(report.steps)
        XCTAssertEqual(steps.map(\.score), steps.map(\.score).sorted(by: >), "tried best first")
        let summary = try InMemoryCommunicator.run(ranks: 1) { comm in
            try DistributedEvaluation.zeroShot(tasks: [.piqa, .sst2], folder: tasks, limit: 8, checkpoint: try Checkpoint(directory: out),
                                               comm: comm, logger: logger)
        }[0]
        XCTAssertEqual(try XCTUnwrap(report.score), (summary.tasks[0].headline + summary.tasks[1].headline) / 2)
    }
}
