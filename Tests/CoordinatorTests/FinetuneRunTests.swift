import Engine
import Foundation
import Logging
import TestSupport
import Worker
import WorkerTesting
import XCTest
@testable import Coordinator

/// `finetune` over 1, 2 and 4 in-memory ranks: the loss curve, the evaluation curve and the trained factors do not
/// depend on the rank count beyond the order of the Double sums; and the merged checkpoint keeps a sparse model's
/// zeros and a structured model's widths.
final class FinetuneRunTests: XCTestCase {
    private var scratch: URL!
    private let logger: Logger = {
        var logger = Logger(label: "prune-dist.tests")
        logger.logLevel = .warning
        return logger
    }()

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("finetune-run") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func tokens(_ name: String, count: Int, seed: UInt64) throws -> URL {
        try writeLearnableTokens(to: scratch.appendingPathComponent(name), count: count, seed: seed)
    }

    private func settings(model: URL, dropout: Double = 0.1) throws -> FinetuneSettings {
        FinetuneSettings(model: model, data: [try tokens("train.json", count: 40 * 16, seed: 1)], out: scratch.appendingPathComponent("out"),
                         lora: LoraSettings(rank: 4, alpha: 8, dropout: dropout, targets: LlamaLinear.allCases),
                         learningRate: 5e-3, warmup: 2, decay: .cosine, weightDecay: 0.01, steps: 5, epochs: nil,
                         // 3 sequences per micro-batch, 2 micro-batches: 6 per step, which 4 ranks split unevenly
                         batch: 3, accumulate: 2, seqlen: 16, seed: 3, evalTexts: [try tokens("eval.json", count: 8 * 16, seed: 2)],
                         evalEvery: 2, evalMaxWindows: nil, saveEvery: 100, merge: false, resume: false)
    }

    private func run(_ settings: FinetuneSettings, ranks: Int) throws -> FinetuneRun.Result {
        let logger = logger
        return try InMemoryCommunicator.run(ranks: ranks) { comm in
            try FinetuneRun(settings: settings, comm: comm, logger: logger).run()
        }[0]
    }

    func testLossCurveAndAdapterDoNotDependOnTheRankCount() throws {
        let settings = try settings(model: try Fixtures.path("fixtures/tiny-llama"))
        let one = try run(settings, ranks: 1)
        XCTAssertEqual(one.report.curves.loss.count, 5)
        XCTAssertEqual(one.report.curves.eval.map(\.step), [0, 2, 4, 5])
        XCTAssertLessThan(one.report.curves.eval.last!.nll, one.report.curves.eval.first!.nll, "training lowers the held-out loss")
        for ranks in [2, 4] {
            let many = try run(settings, ranks: ranks)
            for (a, b) in zip(one.report.curves.loss, many.report.curves.loss) {
                XCTAssertEqual(a.loss, b.loss, accuracy: 1e-5, "\(ranks) ranks, step \(a.step)")
            }
            for (a, b) in zip(one.report.curves.eval, many.report.curves.eval) {
                XCTAssertEqual(a.nll, b.nll, accuracy: 1e-5, "\(ranks) ranks, eval after step \(a.step)")
            }
            // Adam divides by √v: where a gradient is near zero its rounding moves the update by a share of lr
            // (5e-3), so factors agree to a few 1e-5, not to the loss's 1e-5; 1e-4 is 2 % of one step.
            let worst = zip(one.adapter.flattened, many.adapter.flattened).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-4, "\(ranks) ranks: largest factor difference \(worst)")
        }
    }

    /// Merging keeps every zero of a sparse model (the update there is dropped) and adds scaling·B·A elsewhere.
    func testMergeKeepsTheMaskOfASparseModel() throws {
        // The tiny model with every other weight of each linear zeroed: an unstructured 50 % model.
        let dense = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let sparseFolder = scratch.appendingPathComponent("sparse")
        let names = dense.tensorNames
        let writer = try CheckpointWriter(directory: sparseFolder, tensors: try names.map { .init(name: $0, dtype: .f32, shape: try dense.info($0).shape) })
        for name in names {
            var values = try dense.floats(name)
            if name.contains("_proj.weight") { for i in stride(from: 0, to: values.count, by: 2) { values[i] = 0 } }
            try writer.append(name, floats: values)
        }
        try writer.finish()
        try FileManager.default.copyItem(at: dense.directory.appendingPathComponent("config.json"), to: sparseFolder.appendingPathComponent("config.json"))
        let sparse = try Checkpoint(directory: sparseFolder)
        let model = try FrozenLlama(checkpoint: sparse)
        var adapter = LoraAdapter(settings: LoraSettings(rank: 2, alpha: 4, dropout: 0, targets: [.q, .down]), shapes: model.shapes, seed: 1)
        var random = SplitMix64(seed: 9)
        adapter.update { values in for i in values.indices { values[i] = Float(random.nextGaussian()) * 0.1 } }

        let merged = scratch.appendingPathComponent("merged")
        let masked = try MergedCheckpoint.write(source: sparse, adapter: adapter, to: merged)
        let result = try Checkpoint(directory: merged)
        var expectedMasked = 0
        for layer in 0..<3 {
            for linear in LlamaLinear.allCases {
                let base = try sparse.floats(linear.weightName(layer: layer)), out = try result.floats(linear.weightName(layer: layer))
                guard let delta = adapter.delta(layer: layer, linear: linear) else {
                    XCTAssertEqual(out, base, "\(linear) is not adapted: copied")
                    continue
                }
                for i in 0..<base.count {
                    if base[i] == 0 {
                        XCTAssertEqual(out[i], 0, "layer \(layer) \(linear) element \(i): a pruned weight came back")
                        expectedMasked += 1
                    } else {
                        XCTAssertEqual(out[i], base[i] + delta[i], accuracy: 1e-6)
                    }
                }
            }
        }
        XCTAssertEqual(masked, expectedMasked)
        XCTAssertEqual(result.tensorNames, sparse.tensorNames)
    }
}
