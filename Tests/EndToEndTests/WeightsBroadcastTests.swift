import Engine
import Foundation
import TestSupport
import XCTest

/// `prune --weights broadcast`: only rank 0 reads the model and the calibration data; the result is the
/// same bytes as every rank reading a shared directory.
final class WeightsBroadcastTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("broadcast") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func calibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 16, seqlen: 64, seed: 5)
    }

    private func arguments(model: String, calib: String, out: URL, method: String = "krp") -> [String] {
        ["prune", "--model", model, "--out", out.path, "--method", method, "--sparsity", "0.5",
         "--calib", calib, "--samples", "16", "--seqlen", "64", "--log-level", "warning"]
    }

    func testBroadcastEqualsSharedAtTwoAndFourRanks() throws {
        let calib = try calibration().path
        for (model, ranks) in [("fixtures/tiny-llama", 2), ("fixtures/tiny-llama-bf16-sharded", 4)] {
            let path = try Fixtures.path(model).path
            let shared = scratch.appendingPathComponent("shared-\(ranks)")
            let broadcast = scratch.appendingPathComponent("broadcast-\(ranks)")
            let a = try PruneDistBinary.mpirun(ranks: ranks, arguments(model: path, calib: calib, out: shared))
            XCTAssertEqual(a.status, 0, a.stderr)
            let b = try PruneDistBinary.mpirun(ranks: ranks, arguments(model: path, calib: calib, out: broadcast) + ["--weights", "broadcast"])
            XCTAssertEqual(b.status, 0, b.stderr)
            XCTAssertEqual(try checkpointFileDifferences(shared, broadcast), [])
        }
    }

    /// Rank 1 is given paths that do not exist (an MPMD launch): with broadcast it never opens them.
    func testOnlyRankZeroReadsTheModel() throws {
        let calib = try calibration().path
        let model = try Fixtures.path("fixtures/tiny-llama").path
        let missing = scratch.appendingPathComponent("not-here").path
        let shared = scratch.appendingPathComponent("shared")
        XCTAssertEqual(try PruneDistBinary.mpirun(ranks: 2, arguments(model: model, calib: calib, out: shared)).status, 0)
        let out = scratch.appendingPathComponent("out")
        func mpmd(_ extra: [String]) throws -> PruneDistBinary.Result {
            try PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/mpirun"),
                ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader,tcp",
                 "-n", "1", PruneDistBinary.executable.path] + arguments(model: model, calib: calib, out: out) + extra
                + [":", "-n", "1", PruneDistBinary.executable.path] + arguments(model: missing, calib: missing, out: out) + extra)
        }
        let broadcast = try mpmd(["--weights", "broadcast"])
        XCTAssertEqual(broadcast.status, 0, broadcast.stderr)
        XCTAssertEqual(try checkpointFileDifferences(shared, out), [])
        try FileManager.default.removeItem(at: out)
        let sharedMissing = try mpmd([])
        XCTAssertNotEqual(sharedMissing.status, 0, "rank 1 should fail to read \(missing) without broadcast")
        XCTAssertTrue(sharedMissing.stderr.contains("not-here"), sharedMissing.stderr)
    }
}
