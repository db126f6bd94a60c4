import Engine
import Foundation
import TestSupport
import XCTest

/// prune across three simulated hosts (network namespaces on a private bridge, cluster/netns), over TCP:
/// the same result as one process, and a host cut off mid-run ends the job cleanly in under 60 s.
/// Skipped, with the reason, only where namespaces cannot be created (not root, no CAP_NET_ADMIN).
final class MultiHostTests: XCTestCase {
    private var scratch: URL!
    private var id = ""
    private var harness: URL { Fixtures.packageRoot.appendingPathComponent("cluster/netns") }

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("multihost")
        id = "pd" + String(UUID().uuidString.prefix(4)).lowercased()
        let up = try PruneDistBinary.launch(URL(fileURLWithPath: "/bin/sh"), [harness.appendingPathComponent("up.sh").path, id, "3"])
        if up.status != 0 {
            _ = try? PruneDistBinary.launch(URL(fileURLWithPath: "/bin/sh"), [harness.appendingPathComponent("down.sh").path, id])
            throw XCTSkip("network namespaces cannot be created here (cluster/netns/up.sh: \(up.stderr.trimmingCharacters(in: .whitespacesAndNewlines))); multi-host tests not run")
        }
    }

    override func tearDownWithError() throws {
        _ = try? PruneDistBinary.launch(URL(fileURLWithPath: "/bin/sh"), [harness.appendingPathComponent("down.sh").path, id])
        try? FileManager.default.removeItem(at: scratch)
    }

    private func calibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 16, seqlen: 64, seed: 5)
    }

    private func pruneArguments(out: URL) throws -> [String] {
        ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", out.path, "--method", "krp",
         "--sparsity", "0.5", "--calib", try calibration().path, "--samples", "16", "--seqlen", "64"]
    }

    private func runArguments(_ arguments: [String]) -> [String] {
        [harness.appendingPathComponent("run.sh").path, id, "3", PruneDistBinary.executable.path] + arguments
    }

    private func linearWeights(_ directory: URL) throws -> [String: [Float]] {
        let checkpoint = try Checkpoint(directory: directory)
        var result: [String: [Float]] = [:]
        for name in checkpoint.tensorNames where LlamaLinear.parse(weightName: name) != nil { result[name] = try checkpoint.floats(name) }
        return result
    }

    func testPruneAcrossThreeHostsMatchesOneProcess() throws {
        let across = scratch.appendingPathComponent("across")
        let result = try PruneDistBinary.launch(URL(fileURLWithPath: "/bin/sh"), runArguments(try pruneArguments(out: across)))
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: across.appendingPathComponent("prune-report.json"))) as? [String: Any])
        let hosts = Set(try XCTUnwrap(report["rank_usage"] as? [[String: Any]]).compactMap { $0["host"] as? String })
        XCTAssertEqual(hosts.count, 3, "three ranks on three hosts: \(hosts)")
        XCTAssertTrue(hosts.isSuperset(of: ["h2", "h3"]), "\(hosts)")

        let single = scratch.appendingPathComponent("single")
        XCTAssertEqual(try PruneDistBinary.run(try pruneArguments(out: single)).status, 0)
        let local = scratch.appendingPathComponent("local")
        XCTAssertEqual(try PruneDistBinary.mpirun(ranks: 3, try pruneArguments(out: local)).status, 0)
        // Same ranks, same reduction order: TCP between hosts gives the bytes shared memory gives.
        XCTAssertEqual(try Data(contentsOf: across.appendingPathComponent("model.safetensors")),
                       try Data(contentsOf: local.appendingPathComponent("model.safetensors")))
        // One process: masks equal, weights within the tolerance of Double summation order (as PruneTests).
        let a = try linearWeights(across), b = try linearWeights(single)
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
        for (name, values) in b {
            let other = try XCTUnwrap(a[name])
            XCTAssertEqual(zip(values, other).filter { ($0.0 == 0) != ($0.1 == 0) }.count, 0, "\(name) mask")
            XCTAssertLessThan(zip(values, other).map { abs($0 - $1) }.max() ?? 0, 1e-5, "\(name) weights")
        }
    }

    /// Rank 0 pauses in block 1 (so the job is surely mid-run), then host 3's link goes down.
    func testHostCutOffMidRunFailsCleanlyInUnderAMinute() throws {
        let out = scratch.appendingPathComponent("out")
        let pidFile = scratch.appendingPathComponent("pid")
        let job = try BackgroundProcess(URL(fileURLWithPath: "/bin/sh"), runArguments(try pruneArguments(out: out)), environment: [
            "PRUNE_DIST_FAULT_RANK": "0", "PRUNE_DIST_FAULT_BLOCK": "1", "PRUNE_DIST_FAULT_PAUSE": "1",
            "PRUNE_DIST_FAULT_PIDFILE": pidFile.path,
            "MPIRUN_EXTRA": "-x PRUNE_DIST_FAULT_RANK -x PRUNE_DIST_FAULT_BLOCK -x PRUNE_DIST_FAULT_PAUSE -x PRUNE_DIST_FAULT_PIDFILE",
        ])
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 120) { FileManager.default.fileExists(atPath: pidFile.path) },
                      "the run never reached block 1: \(job.stderr)")
        let cut = Date()
        let down = try PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "-n", "\(id)-sw", "link", "set", "port3", "down"])
        XCTAssertEqual(down.status, 0, down.stderr)
        let status = job.wait(seconds: 90)
        let elapsed = Date().timeIntervalSince(cut)
        XCTAssertNotNil(status, "the job hung after host 3 was cut off")
        XCTAssertNotEqual(status, 0)
        XCTAssertLessThan(elapsed, 60, "took \(elapsed) s")
        XCTAssertTrue(job.stderr.contains("10.77.0.3"), "the message should name the lost host: \(job.stderr)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        // Nothing left running in the namespaces (down.sh would otherwise have to kill it).
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 20) {
            (1...3).allSatisfy { i in
                ((try? PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/env"), ["ip", "netns", "pids", "\(self.id)-h\(i)"]))?.stdout ?? "x")
                    .trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            }
        }, "processes left in the namespaces")
    }
}
