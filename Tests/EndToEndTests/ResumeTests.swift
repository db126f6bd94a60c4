import Engine
import Foundation
import TestSupport
import XCTest

/// `prune --resume` (design §6): a run killed mid-way and resumed writes exactly the bytes an uninterrupted
/// run writes; a run with another fingerprint is refused with the reason.
final class ResumeTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("resume") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func calibration() throws -> URL {
        let url = scratch.appendingPathComponent("calib.json")
        if !FileManager.default.fileExists(atPath: url.path) {
            try writeRandomCalibrationWindows(to: url, count: 16, seqlen: 64, seed: 5)
        }
        return url
    }

    private func arguments(model: String = "fixtures/tiny-llama", out: URL, extra: [String] = []) throws -> [String] {
        ["prune", "--model", try Fixtures.path(model).path, "--out", out.path, "--method", "krp", "--sparsity", "0.5",
         "--calib", try calibration().path, "--samples", "16", "--seqlen", "64", "--log-level", "info"] + extra
    }

    private func run(ranks: Int?, _ arguments: [String], environment: [String: String] = [:]) throws -> PruneDistBinary.Result {
        try ranks.map { try PruneDistBinary.mpirun(ranks: $0, arguments, environment: environment) }
            ?? PruneDistBinary.run(arguments, environment: environment)
    }

    private func partial(_ out: URL) -> URL {
        out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).partial")
    }

    private func journalBlocks(_ out: URL) throws -> Int {
        let text = try String(contentsOf: partial(out).appendingPathComponent("journal.jsonl"), encoding: .utf8)
        return text.split(separator: "\n").count - 1
    }

    func testResumeAfterRankExitIsByteIdenticalAtTwoRanks() throws {
        let reference = scratch.appendingPathComponent("reference")
        XCTAssertEqual(try run(ranks: 2, try arguments(out: reference)).status, 0)

        let out = scratch.appendingPathComponent("out")
        let failed = try run(ranks: 2, try arguments(out: out), environment: ["PRUNE_DIST_FAULT_RANK": "1", "PRUNE_DIST_FAULT_BLOCK": "2"])
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertEqual(try journalBlocks(out), 2, "blocks 0 and 1 finished before rank 1 died at block 2")

        let resumed = try run(ranks: 2, try arguments(out: out, extra: ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("blocks 0-1 finished earlier"), resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("block 3/3 done"), resumed.stderr)
        XCTAssertFalse(resumed.stderr.contains("block 1/3 done"), "finished blocks were pruned again: \(resumed.stderr)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: partial(out).path))
        XCTAssertEqual(try checkpointFileDifferences(reference, out), [])
    }

    /// kill -9 of a rank while block 1 runs, then resume: still the uninterrupted bytes.
    func testResumeAfterKillNineIsByteIdentical() throws {
        let reference = scratch.appendingPathComponent("reference")
        XCTAssertEqual(try run(ranks: 2, try arguments(out: reference)).status, 0)
        let out = scratch.appendingPathComponent("out")
        let pidFile = scratch.appendingPathComponent("pid")
        let job = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/mpirun"),
                                        ["--allow-run-as-root", "--oversubscribe", "-n", "2", "--mca", "btl", "self,vader,tcp",
                                         PruneDistBinary.executable.path] + (try arguments(out: out)),
                                        environment: ["PRUNE_DIST_FAULT_RANK": "1", "PRUNE_DIST_FAULT_BLOCK": "1",
                                                      "PRUNE_DIST_FAULT_PAUSE": "1", "PRUNE_DIST_FAULT_PIDFILE": pidFile.path])
        var pid: Int32 = 0
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 120) {
            pid = (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            return pid > 0
        })
        XCTAssertEqual(kill(pid, SIGKILL), 0)
        XCTAssertNotEqual(job.wait(seconds: 60), 0)
        XCTAssertEqual(try journalBlocks(out), 1)
        XCTAssertEqual(try run(ranks: 2, try arguments(out: out, extra: ["--resume"])).status, 0)
        XCTAssertEqual(try checkpointFileDifferences(reference, out), [])
    }

    /// bf16 output in two shards (the resume files keep the Float32 weights later blocks were computed with),
    /// one process interrupted in the last block.
    func testResumeOfShardedBf16OutputIsByteIdentical() throws {
        let model = "fixtures/tiny-llama-bf16-sharded"
        let reference = scratch.appendingPathComponent("reference")
        XCTAssertEqual(try run(ranks: nil, try arguments(model: model, out: reference)).status, 0)
        let out = scratch.appendingPathComponent("out")
        let failed = try run(ranks: nil, try arguments(model: model, out: out), environment: ["PRUNE_DIST_FAULT_RANK": "0", "PRUNE_DIST_FAULT_BLOCK": "2"])
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertEqual(try journalBlocks(out), 2)
        let resumed = try run(ranks: nil, try arguments(model: model, out: out, extra: ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try checkpointFileDifferences(reference, out), [])
    }

    /// Another seed is another run: refused, naming what changed; the interrupted run's files stay.
    func testResumeWithAnotherFingerprintIsRefused() throws {
        let out = scratch.appendingPathComponent("out")
        XCTAssertNotEqual(try run(ranks: nil, try arguments(out: out), environment: ["PRUNE_DIST_FAULT_RANK": "0", "PRUNE_DIST_FAULT_BLOCK": "1"]).status, 0)
        let refused = try run(ranks: nil, try arguments(out: out, extra: ["--resume", "--seed", "7"]))
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("belongs to a different run"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("samples × seqlen, seed: was 16 × 64, seed 0, now 16 × 64, seed 7"), refused.stderr)
        XCTAssertEqual(try journalBlocks(out), 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    /// --resume with nothing to resume starts from block 0 and gives the ordinary result.
    func testResumeWithoutAnInterruptedRunStartsAfresh() throws {
        let out = scratch.appendingPathComponent("out")
        let result = try run(ranks: nil, try arguments(out: out, extra: ["--resume"]))
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("nothing to resume"), result.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
    }
}
