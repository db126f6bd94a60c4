import Engine
import XCTest

final class InputStatisticsTests: XCTestCase {
    /// Two batches into one statistic (its product buffer reused) equal the sum of each batch alone, to the bit,
    /// and the Hessian, cross term and column norms agree with sums taken directly in Double.
    func testBatchesAddUpAndMatchDirectSums() {
        let d = 13, n = 37
        var random = SplitMix64(seed: 5)
        let batches = (0..<2).map { _ in (0..<(n * d)).map { _ in Float(random.nextGaussian()) } }
        let dense = (0..<2).map { _ in (0..<(n * d)).map { _ in Float(random.nextGaussian()) } }
        let needs = StatisticsNeeds(hessian: true, cross: true, columnNorms: true)
        var both = InputStatistics(dimension: d, needs: needs)
        var parts = [InputStatistics(dimension: d, needs: needs), InputStatistics(dimension: d, needs: needs)]
        for b in 0..<2 {
            both.accumulate(pruned: batches[b], dense: dense[b], tokens: n)
            parts[b].accumulate(pruned: batches[b], dense: dense[b], tokens: n)
        }
        for i in 0..<d {
            for j in i..<d {
                XCTAssertEqual(both.hessian[i * d + j], parts[0].hessian[i * d + j] + parts[1].hessian[i * d + j])
                var direct = 0.0
                for b in 0..<2 { for t in 0..<n { direct += Double(batches[b][t * d + i]) * Double(batches[b][t * d + j]) } }
                XCTAssertEqual(both.hessian[i * d + j], direct, accuracy: 1e-5 * max(1, abs(direct)))
            }
            for j in 0..<d {
                XCTAssertEqual(both.cross[i * d + j], parts[0].cross[i * d + j] + parts[1].cross[i * d + j])
                var direct = 0.0
                for b in 0..<2 { for t in 0..<n { direct += Double(batches[b][t * d + i]) * Double(dense[b][t * d + j]) } }
                XCTAssertEqual(both.cross[i * d + j], direct, accuracy: 1e-5 * max(1, abs(direct)))
            }
            XCTAssertEqual(both.columnNorms[i], both.hessian[i * d + i], accuracy: 1e-5 * both.columnNorms[i])
        }
        XCTAssertEqual(both.tokens, 2 * n)
    }
}
