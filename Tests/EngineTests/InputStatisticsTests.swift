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

    /// Batches multiplied on several threads and added in batch order give the one-thread sums to the bit, for
    /// every thread count, including more threads than batches and a last group smaller than the others.
    func testThreadsGiveTheSameBitsAsOneThread() {
        let d = 29, n = 41, count = 7
        var random = SplitMix64(seed: 11)
        // Batches of very different scales, so that Double sums added in another order round differently.
        let pruned = (0..<count).map { b in (0..<(n * d)).map { _ in Float(random.nextGaussian()) * Float(1 << (8 * b)) } }
        let dense = (0..<count).map { _ in (0..<(n * d)).map { _ in Float(random.nextGaussian()) } }
        let needs = StatisticsNeeds(hessian: true, cross: true, columnNorms: true)
        var one = InputStatistics(dimension: d, needs: needs)
        for b in 0..<count { one.accumulate(pruned: pruned[b], dense: dense[b], tokens: n) }
        for threads in [1, 2, 3, 4, 9] {
            var several = InputStatistics(dimension: d, needs: needs)
            several.accumulate(batches: count, threads: threads, tokens: n) { (pruned[$0], dense[$0]) }
            XCTAssertEqual(several.hessian, one.hessian, "\(threads) threads")
            XCTAssertEqual(several.cross, one.cross, "\(threads) threads")
            XCTAssertEqual(several.columnNorms, one.columnNorms, "\(threads) threads")
            XCTAssertEqual(several.tokens, count * n)
        }
        // Added in another order the sums are not the same bits: the test would see a group added out of order.
        var reversed = InputStatistics(dimension: d, needs: needs)
        for b in (0..<count).reversed() { reversed.accumulate(pruned: pruned[b], dense: dense[b], tokens: n) }
        XCTAssertNotEqual(reversed.hessian, one.hessian)
    }

    /// Every element is visited once, by thread index ≡ element index (mod threads).
    func testForEachConcurrentlyVisitsEveryElementOnce() {
        for threads in [1, 2, 3, 8, 20] {
            var items = [(visits: Int, thread: Int)](repeating: (0, -1), count: 17)
            forEachConcurrently(&items, threads: threads) { i, t, item in
                item.visits += 1
                item.thread = t
                XCTAssertEqual(i % min(threads, 17), t)
            }
            XCTAssertEqual(items.map(\.visits), [Int](repeating: 1, count: 17), "\(threads) threads")
        }
    }
}
