import Engine
import Foundation
import Logging
import TestSupport
import Worker
import WorkerTesting
import XCTest
@testable import Coordinator

/// The distributed runs themselves, over 1, 2 and 4 in-memory ranks (threads of this process): `PruneRun` for
/// every unstructured method, `StructuredPruneRun` (LLM-Pruner) and `AdaPrunerSearch`. The number of ranks
/// changes only the order of the Double sums of statistics and gradients, so masks and kept groups must be
/// equal and weights within 1e-5 (importances within 1e-6 relative). mpirun smoke tests (EndToEndTests) cover
/// the same runs through the binary and Open MPI.
final class InProcessRunTests: XCTestCase {
    private var scratch: URL!
    /// Warnings only: the runs' progress lines would drown the test output.
    private let logger: Logger = {
        var logger = Logger(label: "prune-dist.tests")
        logger.logLevel = .warning
        return logger
    }()

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("in-process")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    private func model() throws -> URL { try Fixtures.path("fixtures/tiny-llama") }

    /// 16 windows of 64 tokens: more tokens (1024) than any linear has inputs (172), so every statistic is well conditioned.
    private func calibration() throws -> URL {
        let url = scratch.appendingPathComponent("calib.json")
        if FileManager.default.fileExists(atPath: url.path) { return url }
        return try writeRandomCalibrationWindows(to: url, count: 16, seqlen: 64, seed: 5)
    }

    /// Rank 0's lock on `out`'s partial folder, as `prune` takes it before any work; nil on other ranks.
    private static func lock(_ out: URL, rank: Int) throws -> OutputLock? {
        rank == 0 ? try OutputLock.acquire(partial: OutputFolder.partialFolder(for: out), out: out) : nil
    }

    // MARK: PruneRun

    private func pruneSettings(method: PruneMethod, pattern: SparsityPattern, out: URL) throws -> PruneSettings {
        PruneSettings(model: try model(), out: out, method: method, pattern: pattern, calibration: try calibration(),
                      samples: 16, seqlen: 64, seed: 0, trueSequential: method == .krp, blocksize: 128, percdamp: 0.01,
                      krpRectification: method == .krp ? .towardDense(ratio: 3, correction: 0.5, perInput: true) : .legacy)
    }

    /// Runs `settings` over `ranks` in-memory ranks; returns the written checkpoint's linear weights by tensor name.
    private func prune(_ settings: PruneSettings, ranks: Int, out name: String) throws -> (weights: [String: [Float]], report: RunReport) {
        let out = scratch.appendingPathComponent(name)
        var common = settings
        common.out = out
        let (shared, logger) = (common, logger)
        let reports = try InMemoryCommunicator.run(ranks: ranks) { comm in
            var settings = shared
            settings.outputLock = try InProcessRunTests.lock(out, rank: comm.rank)
            return try PruneRun(settings: settings, comm: comm, logger: logger).run()
        }
        let checkpoint = try Checkpoint(directory: out)
        var weights: [String: [Float]] = [:]
        for name in checkpoint.tensorNames where LlamaLinear.parse(weightName: name) != nil {
            weights[name] = try checkpoint.floats(name)
        }
        return (weights, reports[0])
    }

    private func assertSameModel(_ a: [String: [Float]], _ b: [String: [Float]], _ what: String,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted(), what, file: file, line: line)
        XCTAssertEqual(a.count, 21, "3 blocks of 7 linears", file: file, line: line)
        for (tensor, values) in a {
            guard let other = b[tensor], other.count == values.count else {
                XCTFail("\(what): \(tensor) missing or of another size", file: file, line: line)
                continue
            }
            let maskDifferences = zip(values, other).filter { ($0.0 == 0) != ($0.1 == 0) }.count
            let worst = zip(values, other).map { abs($0 - $1) }.max() ?? 0
            XCTAssertEqual(maskDifferences, 0, "\(what): \(tensor) mask", file: file, line: line)
            XCTAssertLessThan(worst, 1e-5, "\(what): \(tensor) weights", file: file, line: line)
        }
    }

    /// Every unstructured method on 1, 2 and 4 ranks (KRP also with the authors' ridge, SparseGPT also with OWL's
    /// per-block sparsities): the same masks and weights, the same report entries.
    func testPruneRunGivesTheSameModelOnOneTwoAndFourRanks() throws {
        let runs: [(String, PruneMethod, SparsityPattern, (inout PruneSettings) -> Void)] = [
            ("magnitude", .magnitude, .unstructured(fraction: 0.3), { _ in }),
            ("wanda-2of4", .wanda, .nOfM(n: 2, m: 4), { _ in }),
            ("sparsegpt", .sparsegpt, .unstructured(fraction: 0.5), { _ in }),
            ("krp", .krp, .unstructured(fraction: 0.5), { _ in }),
            ("krp-legacy", .krp, .unstructured(fraction: 0.5), { $0.krpRectification = .legacy }),
            ("sparsegpt-owl", .sparsegpt, .unstructured(fraction: 0.6), { $0.allocation = .owl }),
        ]
        for (name, method, pattern, adjust) in runs {
            var settings = try pruneSettings(method: method, pattern: pattern, out: scratch)
            adjust(&settings)
            let one = try prune(settings, ranks: 1, out: "\(name)-1")
            XCTAssertEqual(one.report.linears.map(\.name), (0..<3).flatMap { layer in LlamaLinear.allCases.map { $0.weightName(layer: layer) } },
                           "report entries by block, then in execution order")
            let zeros = one.weights.values.reduce(0) { $0 + $1.filter { $0 == 0 }.count }
            XCTAssertGreaterThan(zeros, 0, "\(name) pruned nothing")
            for ranks in [2, 4] {
                let many = try prune(settings, ranks: ranks, out: "\(name)-\(ranks)")
                assertSameModel(one.weights, many.weights, "\(name) on \(ranks) ranks")
                XCTAssertEqual(many.report.ranks, ranks)
                XCTAssertEqual(many.report.linears.map(\.name), one.report.linears.map(\.name), "report order")
                XCTAssertEqual(many.report.linears.map(\.zeros), one.report.linears.map(\.zeros))
                XCTAssertGreaterThan(Set(many.report.linears.map(\.owner)).count, 1, "the linears are solved on several ranks")
                if method != .magnitude {  // magnitude reads no calibration data
                    XCTAssertEqual(many.report.rankUsage.map(\.sequences), (0..<ranks).map { r in (0..<16).filter { $0 % ranks == r }.count })
                }
            }
        }
    }

    /// `--ignore` and `--sparsity-override` (LinearRules) change what is pruned, the same way on 1 and 2 ranks:
    /// an ignored linear is the input's weight to the bit, an overridden one has its own sparsity, the rest the run's.
    func testIgnoredAndOverriddenLinearsOnOneAndTwoRanks() throws {
        var settings = try pruneSettings(method: .krp, pattern: .unstructured(fraction: 0.5), out: scratch)
        settings.linearRules = LinearRules(ignore: ["re:.*down_proj", "lm_head"],
                                           overrides: [try LinearRules.parseOverride("re:model\\.layers\\.1\\..*_proj=0.25"),
                                                       try LinearRules.parseOverride("model.layers.1.mlp.up_proj=2:4")])
        let input = try Checkpoint(directory: try model())
        let one = try prune(settings, ranks: 1, out: "rules-1")
        for layer in 0..<3 {
            for linear in LlamaLinear.allCases {
                let name = linear.weightName(layer: layer)
                let weights = try XCTUnwrap(one.weights[name])
                let sparsity = Double(weights.filter { $0 == 0 }.count) / Double(weights.count)
                if linear == .down {
                    XCTAssertTrue(weights == (try input.floats(name)), "\(name) is ignored: left as it is")
                } else if layer == 1, linear == .up {
                    XCTAssertEqual(sparsity, 0.5, accuracy: 1e-9, "\(name): the later override (2:4) wins")
                    XCTAssertTrue(stride(from: 0, to: weights.count, by: 4).allSatisfy { weights[$0..<($0 + 4)].filter { $0 == 0 }.count == 2 }, "\(name) is 2:4")
                } else if layer == 1 {
                    XCTAssertEqual(sparsity, 0.25, accuracy: 0.01, "\(name): overridden to 0.25")
                } else {
                    XCTAssertEqual(sparsity, 0.5, accuracy: 0.01, "\(name): the run's sparsity")
                }
            }
        }
        let two = try prune(settings, ranks: 2, out: "rules-2")
        assertSameModel(one.weights, two.weights, "ignore and overrides on 2 ranks")
        XCTAssertEqual(two.report.linears.map(\.zeros), one.report.linears.map(\.zeros))
    }

    /// Bytes sent per rank, counted by the communicator, against plan's estimate for the same run: on 2 ranks both
    /// count each rank's reductions and the weights it broadcasts, so they agree up to the small messages plan leaves out
    /// (windows are computed, not sent; the report gather). One rank sends nothing. Relative errors are error / ‖W x‖².
    func testBytesSentMatchPlansEstimateOnTwoRanks() throws {
        for method in [PruneMethod.sparsegpt, .krp] {
            let settings = try pruneSettings(method: method, pattern: .unstructured(fraction: 0.5), out: scratch)
            let two = try prune(settings, ranks: 2, out: "bytes-\(method)-2").report
            for usage in two.rankUsage {
                let sent = try XCTUnwrap(usage.bytesSent), planned = try XCTUnwrap(usage.plannedBytesSent)
                XCTAssertGreaterThan(planned, 100_000, "\(method) rank \(usage.rank): the statistics and weights of 3 blocks")
                XCTAssertLessThan(abs(sent - planned), 4096, "\(method) rank \(usage.rank): sent \(sent), plan \(planned)")
            }
            let one = try prune(settings, ranks: 1, out: "bytes-\(method)-1").report
            XCTAssertEqual(one.rankUsage.map(\.bytesSent), [0])
            XCTAssertEqual(one.rankUsage.map(\.plannedBytesSent), [0])
            for linear in one.linears {
                let energy = try XCTUnwrap(linear.outputEnergy, linear.name)
                XCTAssertEqual(try XCTUnwrap(linear.relativeErrorAfter), try XCTUnwrap(linear.errorAfter) / energy, accuracy: 1e-15)
                XCTAssertLessThan(try XCTUnwrap(linear.relativeErrorBefore), 1, "\(linear.name): masking half the weights loses less than the whole output")
            }
        }
    }

    /// A target that matches no linear is refused by name before any work (a typo would prune what was meant to stay dense).
    func testATargetMatchingNoLinearIsRefused() throws {
        var settings = try pruneSettings(method: .magnitude, pattern: .unstructured(fraction: 0.5), out: scratch)
        settings.linearRules = LinearRules(ignore: ["re:.*down_prj"])
        XCTAssertThrowsError(try prune(settings, ranks: 1, out: "typo")) { error in
            XCTAssertTrue("\(error)".contains("--ignore re:.*down_prj matches no linear"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("typo").path))
    }

    /// `--weights broadcast` (only rank 0 reads; config, windows, embedding and blocks are broadcast) writes the
    /// same bytes as every rank reading the model.
    func testBroadcastWeightsWriteTheSameBytesAsSharedWeights() throws {
        var settings = try pruneSettings(method: .sparsegpt, pattern: .unstructured(fraction: 0.5), out: scratch)
        _ = try prune(settings, ranks: 2, out: "shared")
        settings.weights = .broadcast
        _ = try prune(settings, ranks: 2, out: "broadcast")
        XCTAssertEqual(try checkpointFileDifferences(scratch.appendingPathComponent("shared"), scratch.appendingPathComponent("broadcast")), [])
    }

    // MARK: StructuredPruneRun and AdaPrunerSearch

    /// 8 windows of 32 tokens for the structured runs (gradients of every block are held at once).
    private func structuredCalibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib-structured.json"), count: 8, seqlen: 32, seed: 9)
    }

    private func structuredSettings(search: AdaPrunerSettings? = nil, importance: TaylorTerm = .el1) throws -> StructuredPruneSettings {
        StructuredPruneSettings(model: try model(), out: scratch, method: search == nil ? .llmPruner : .adapruner, ratio: 0.4,
                                importance: importance, aggregation: .sum, calibration: try structuredCalibration(), samples: 8, seqlen: 32,
                                seed: 0, calibrationDraw: .stream, blocks: 0...2, outputDType: nil, reportURL: nil, search: search)
    }

    private func structuredPrune(_ settings: StructuredPruneSettings, ranks: Int, out name: String) throws -> StructuredReport {
        let out = scratch.appendingPathComponent(name)
        var common = settings
        common.out = out
        let (shared, logger) = (common, logger)
        let reports = try InMemoryCommunicator.run(ranks: ranks) { comm in
            var settings = shared
            settings.outputLock = try InProcessRunTests.lock(out, rank: comm.rank)
            return try StructuredPruneRun(settings: settings, comm: comm, logger: logger).run()
        }
        return reports[0]
    }

    private func assertSameScores(_ a: [StructuredGroupScores], _ b: [StructuredGroupScores], _ what: String,
                                  file: StaticString = #filePath, line: UInt = #line) {
        let x = a.flatMap { $0.keyValueHeads + $0.channels }, y = b.flatMap { $0.keyValueHeads + $0.channels }
        XCTAssertEqual(x.count, y.count, what, file: file, line: line)
        XCTAssertFalse(x.isEmpty, what, file: file, line: line)
        for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-6 * abs(u), what, file: file, line: line) }
    }

    /// LLM-Pruner (el1 and el2) keeps the same groups on 1, 2 and 4 ranks, and writes the same checkpoint.
    func testStructuredPruneRunKeepsTheSameGroupsOnOneTwoAndFourRanks() throws {
        for importance in [TaylorTerm.el1, .el2] {
            let settings = try structuredSettings(importance: importance)
            let one = try structuredPrune(settings, ranks: 1, out: "llm-\(importance.rawValue)-1")
            XCTAssertEqual(one.kept.map(\.layer), [0, 1, 2])
            XCTAssertGreaterThan(one.parametersRemoved, 0)
            XCTAssertEqual(one.samples, 8)
            XCTAssertEqual(one.importance, importance.rawValue)
            XCTAssertNotNil(one.calibrationLoss)
            XCTAssertGreaterThan(one.gradientSeconds, 0)
            XCTAssertGreaterThan(one.totalSeconds, one.gradientSeconds)
            for ranks in [2, 4] {
                let many = try structuredPrune(settings, ranks: ranks, out: "llm-\(importance.rawValue)-\(ranks)")
                XCTAssertEqual(many.kept, one.kept, "\(importance.rawValue) on \(ranks) ranks")
                XCTAssertEqual(many.rankUsage.map(\.rank), Array(0..<ranks))
                assertSameScores(one.scores, many.scores, "\(importance.rawValue) on \(ranks) ranks")
                XCTAssertEqual(many.calibrationLoss!, one.calibrationLoss!, accuracy: 1e-6 * one.calibrationLoss!)
                XCTAssertEqual(try checkpointFileDifferences(scratch.appendingPathComponent("llm-\(importance.rawValue)-1"),
                                                             scratch.appendingPathComponent("llm-\(importance.rawValue)-\(ranks)")), [])
            }
        }
    }

    /// A four-trial search in rounds of two: the same points, perplexities, chosen trial and kept groups on 1, 2
    /// and 4 ranks (one or two groups of ranks).
    func testAdaPrunerSearchIsTheSameOnOneTwoAndFourRanks() throws {
        var random = SplitMix64(seed: 23)
        let documents = (0..<40).map { d in (0..<(40 + d % 7 * 10)).map { _ in Int(random.next() % 512) } }
        let pool = scratch.appendingPathComponent("pool.json")
        try JSONSerialization.data(withJSONObject: documents).write(to: pool)
        let search = AdaPrunerSettings(trials: 4, pool: pool, searchSeed: 4, minDocumentTokens: 40, sampleChoices: [4, 8], seedChoices: 3,
                                       terms: [.vector, .el1], betaChoices: [.vector: [1, 10, 100], .el1: [1], .el2: [1]],
                                       objectiveWindows: 4, objectiveSeqlen: 32, gamma: 0.25, startupTrials: 2, parallelTrials: 2)
        let settings = try structuredSettings(search: search)
        let one = try XCTUnwrap(try structuredPrune(settings, ranks: 1, out: "ada-1").search)
        XCTAssertEqual(one.trials.map(\.index), [0, 1, 2, 3])
        XCTAssertEqual(one.trials[0].coefficients, ["vector": 0, "el1": 1], "the first trial is LLM-Pruner's el1")
        XCTAssertEqual(one.best.objectivePerplexity, one.trials.map(\.objectivePerplexity).min())
        for ranks in [2, 4] {
            let report = try structuredPrune(settings, ranks: ranks, out: "ada-\(ranks)")
            let many = try XCTUnwrap(report.search)
            XCTAssertEqual(many.groups, ranks == 2 ? [[0], [1]] : [[0, 1], [2, 3]])
            XCTAssertEqual(many.trials.map(\.group), [0, 1, 0, 1])
            for (a, b) in zip(one.trials, many.trials) {
                XCTAssertEqual(a.calibrationSeed, b.calibrationSeed, "\(ranks) ranks, trial \(a.index)")
                XCTAssertEqual(a.samples, b.samples)
                XCTAssertEqual(a.coefficients, b.coefficients)
                XCTAssertEqual(a.objectivePerplexity, b.objectivePerplexity, accuracy: 1e-6 * a.objectivePerplexity)
            }
            XCTAssertEqual(many.best.index, one.best.index)
            XCTAssertEqual(report.samples, many.best.samples, "the report gives the chosen trial's calibration")
            XCTAssertEqual(report.seed, many.best.calibrationSeed)
            XCTAssertNil(report.importance, "AdaPruner mixes terms")
            XCTAssertNil(report.calibrationLoss)
            XCTAssertEqual(try checkpointFileDifferences(scratch.appendingPathComponent("ada-1"), scratch.appendingPathComponent("ada-\(ranks)")), [])
        }
    }
}
