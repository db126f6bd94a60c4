import Engine
import Foundation
import TestSupport
import Worker
import WorkerTesting
import XCTest

/// Gradients split over 1, 2 and 4 ranks (threads with InMemoryCommunicator) sum to the same gradients, and to
/// the single-process llamaGradients, within 1e-5 of each tensor's largest entry: the Float forward and backward
/// run as GEMMs of other batch sizes on each rank, which round differently (up to 1.2e-6 with OpenBLAS's AVX-512
/// kernels, below 1e-6 with its AVX2 ones); a wrong gradient is off by the size of its entries.
final class DistributedGradientsTests: XCTestCase {
    private func windows() -> [[Int]] {
        var random = SplitMix64(seed: 21)
        return (0..<6).map { _ in (0..<16).map { _ in Int(random.next() % 512) } }
    }

    private func reduced(ranks: Int, squares: Bool) throws -> (blocks: [Int: BlockGradientSums], nll: Double) {
        let checkpoint = try Checkpoint(directory: try Fixtures.path("fixtures/tiny-llama"))
        let all = windows()
        let results = try InMemoryCommunicator.run(ranks: ranks) { comm -> ([Int: BlockGradientSums], Double) in
            var blocks: [Int: BlockGradientSums] = [:]
            let mine = all.indices.filter { $0 % comm.size == comm.rank }.map { all[$0] }
            let result = try DistributedGradients.compute(checkpoint: checkpoint, mine: mine, seqlen: 16, totalSequences: all.count,
                                                          perSequenceSquares: squares, layers: [0, 1, 2], comm: comm) { blocks[$0.layer] = $0 }
            return (blocks, result.nllSum)
        }
        XCTAssertEqual(results[0].0.count, 3, "rank 0 receives every block")
        for r in 1..<ranks { XCTAssertTrue(results[r].0.isEmpty, "rank \(r) receives nothing") }
        return results[0]
    }

    private func assertClose(_ a: [Double], _ b: [Double], _ what: String, tolerance: Double = 1e-5) {
        let largest = a.map(abs).max()!
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(largest, 0, what)
        XCTAssertLessThanOrEqual(worst, tolerance * largest, "\(what): worst difference \(worst), largest entry \(largest)")
    }

    func testGradientsOverOneTwoFourRanksAgree() throws {
        let checkpoint = try Checkpoint(directory: try Fixtures.path("fixtures/tiny-llama"))
        let single = try llamaGradients(checkpoint: checkpoint, ids: windows().flatMap { $0 }, seqlen: 16)
        let one = try reduced(ranks: 1, squares: false)
        for ranks in [2, 4] {
            let many = try reduced(ranks: ranks, squares: false)
            XCTAssertEqual(many.nll, one.nll, accuracy: 1e-7 * one.nll)  // Float forward over differently sized batches
            for layer in 0..<3 {
                for linear in LlamaLinear.allCases {
                    assertClose(one.blocks[layer]!.gradients[linear], many.blocks[layer]!.gradients[linear],
                                "\(ranks) ranks, \(linear.weightName(layer: layer))")
                }
            }
        }
        for layer in 0..<3 {
            for linear in LlamaLinear.allCases {
                assertClose(single.gradients[linear.weightName(layer: layer)]!.map(Double.init), one.blocks[layer]!.gradients[linear],
                            "llamaGradients vs one rank, \(linear.weightName(layer: layer))")
            }
        }
    }

    func testPerSequenceSquaresOverRanksAgree() throws {
        let one = try reduced(ranks: 1, squares: true)
        let four = try reduced(ranks: 4, squares: true)
        for layer in 0..<3 {
            for linear in LlamaLinear.allCases {
                // Squares double the Float rounding of the per-sequence gradients (GEMMs of other batch sizes upstream).
                assertClose(one.blocks[layer]!.squaredPerSequence![linear], four.blocks[layer]!.squaredPerSequence![linear],
                            "Σ g_n², \(linear.weightName(layer: layer))")
                assertClose(one.blocks[layer]!.gradients[linear], four.blocks[layer]!.gradients[linear],
                            "g with per-sequence backward, \(linear.weightName(layer: layer))")
            }
        }
    }
}
