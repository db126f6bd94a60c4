import Engine
import Foundation
import XCTest
@testable import Coordinator

final class ZeroShotSummaryTests: XCTestCase {
    /// lm-eval's stderr of acc: sample standard deviation of the 0/1 outcomes over √n.
    func testStandardErrorIsTheHarnesss() {
        let outcomes = [Double](repeating: 1, count: 195) + [Double](repeating: 0, count: 105)
        let mean = outcomes.reduce(0, +) / 300
        let sampleStd = (outcomes.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 299).squareRoot()
        XCTAssertEqual(ZeroShotTaskResult.standardError(correct: 195, documents: 300), sampleStd / Double(300).squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(ZeroShotTaskResult.standardError(correct: 1, documents: 1), 0)
    }

    /// The average leaves SST-2 out and uses acc_norm where a task reports it.
    func testAverageOfTableTasks() throws {
        func result(_ task: String, _ acc: Double, _ norm: Double?) -> ZeroShotTaskResult {
            ZeroShotTaskResult(task: task, documents: 10, correct: Int(acc * 10), correctNorm: Int((norm ?? 0) * 10), acc: acc, accStderr: 0,
                               accNorm: norm, accNormStderr: norm.map { _ in 0 }, seconds: 0)
        }
        let summary = ZeroShotSummary(tasks: [result("boolq", 0.4, nil), result("piqa", 0.6, 0.7), result("sst2", 0.9, nil)])
        XCTAssertEqual(try XCTUnwrap(summary.averageAcc), 0.5, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(summary.averageHeadline), 0.55, accuracy: 1e-12)
        XCTAssertEqual(summary.reportEntries["zeroshot.sst2.acc"], 0.9)
        XCTAssertNil(summary.reportEntries["zeroshot.boolq.acc_norm"])
        XCTAssertTrue(summary.table.contains("average of 2 tasks"))
        XCTAssertEqual(try DistributedEvaluation.parseTasks("all").count, 7)
        XCTAssertEqual(try DistributedEvaluation.parseTasks("piqa, winogrande_xl,piqa"), [.piqa, .winogrande])
        XCTAssertThrowsError(try DistributedEvaluation.parseTasks(","))
    }
}
