import Engine
import Foundation
import TestSupport
import XCTest

/// A rank that dies in the middle of a prune run (design §6): the job ends non-zero within 30 s with a
/// message naming the rank and the host, and nothing that looks like a finished checkpoint is left.
final class FaultTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("fault") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    static func hostName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func calibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 16, seqlen: 64, seed: 5)
    }

    private func mpirunArguments(ranks: Int, out: URL) throws -> [String] {
        ["--allow-run-as-root", "--oversubscribe", "-n", String(ranks), "--mca", "btl", "self,vader,tcp",
         PruneDistBinary.executable.path, "prune", "--model", try Fixtures.path("fixtures/tiny-llama").path,
         "--out", out.path, "--method", "krp", "--sparsity", "0.5", "--calib", try calibration().path,
         "--samples", "16", "--seqlen", "64", "--log-level", "warning"]
    }

    /// No `out`, and every other entry beside it is hidden and named partial.
    private func assertNothingLooksFinished(_ out: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "\(out.path) exists after a failed run", file: file, line: line)
        for name in try FileManager.default.contentsOfDirectory(atPath: scratch.path) where name != "calib.json" && name != "pid" {
            XCTAssertTrue(name.hasPrefix(".") && name.contains("partial"), "unexpected \(name) after a failed run", file: file, line: line)
        }
    }

    func testRankExitingMidRunEndsTheJobNamingRankAndHost() throws {
        let out = scratch.appendingPathComponent("out")
        let job = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/mpirun"), try mpirunArguments(ranks: 2, out: out),
                                        environment: ["PRUNE_DIST_FAULT_RANK": "1", "PRUNE_DIST_FAULT_BLOCK": "1"])
        let status = job.wait(seconds: 120)
        let elapsed = Date().timeIntervalSince(job.started)
        XCTAssertNotNil(status, "the job hung")
        XCTAssertNotEqual(status, 0)
        XCTAssertLessThan(elapsed, 30, "took \(elapsed) s")
        XCTAssertTrue(job.stderr.contains("rank 1"), job.stderr)
        XCTAssertTrue(job.stderr.contains(FaultTests.hostName()), job.stderr)
        try assertNothingLooksFinished(out)
    }

    func testKillNineOfOneRankEndsTheJobNamingRankAndHost() throws {
        let out = scratch.appendingPathComponent("out")
        let pidFile = scratch.appendingPathComponent("pid")
        let job = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/mpirun"), try mpirunArguments(ranks: 2, out: out),
                                        environment: ["PRUNE_DIST_FAULT_RANK": "1", "PRUNE_DIST_FAULT_BLOCK": "2",
                                                      "PRUNE_DIST_FAULT_PAUSE": "1", "PRUNE_DIST_FAULT_PIDFILE": pidFile.path])
        var pid: Int32 = 0
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 120) {
            pid = (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            return pid > 0
        }, "rank 1 never reached block 2: \(job.stderr)")
        let killed = Date()
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        let status = job.wait(seconds: 60)
        let elapsed = Date().timeIntervalSince(killed)
        XCTAssertNotNil(status, "the job hung after kill -9 of rank 1")
        XCTAssertNotEqual(status, 0)
        XCTAssertLessThan(elapsed, 30, "took \(elapsed) s after the kill")
        XCTAssertTrue(job.stderr.contains("rank 1"), job.stderr)
        XCTAssertTrue(job.stderr.contains(FaultTests.hostName()), job.stderr)
        XCTAssertTrue(job.stderr.contains("signal 9"), job.stderr)
        try assertNothingLooksFinished(out)
    }
}
