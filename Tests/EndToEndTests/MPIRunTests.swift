import Foundation
import TestSupport
import XCTest

/// `prune-dist comm-check` as operators run it: alone, and under mpirun with 1, 2 and 4 ranks.
/// No assertions on speed (the machine is shared); only that bandwidth was measured.
final class MPIRunTests: XCTestCase {
    /// comm-check passed on `ranks` ranks: its JSON object (rank 0's last line starting with "{") says so.
    func assertPassed(_ result: PruneDistBinary.Result, ranks: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(result.status, 0, "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)", file: file, line: line)
        let json = try result.lastJSON()
        XCTAssertEqual(json["ok"] as? Bool, true, "\(json["failures"] ?? "")", file: file, line: line)
        XCTAssertEqual(json["ranks"] as? Int, ranks, file: file, line: line)
        XCTAssertEqual((json["rank_hosts"] as? [String])?.count, ranks, file: file, line: line)
        XCTAssertEqual((json["hosts"] as? [String])?.count, 1, "all ranks run on this machine", file: file, line: line)
        XCTAssertEqual(json["failures"] as? [String], [], file: file, line: line)
        XCTAssertEqual((json["checks"] as? [String])?.count, 11, file: file, line: line)
        XCTAssertGreaterThan(json["allreduce_gbps"] as? Double ?? 0, 0, file: file, line: line)
        XCTAssertGreaterThan(json["reduce_gbps"] as? Double ?? 0, 0, file: file, line: line)
        // Exactly one rank prints the report.
        XCTAssertEqual(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.count, 1, file: file, line: line)
    }

    func testCommCheckAloneWithoutMpirun() throws {
        try assertPassed(try PruneDistBinary.run(["comm-check", "--megabytes", "1", "--json"]), ranks: 1)
    }

    func testCommCheckOneRank() throws {
        try assertPassed(try PruneDistBinary.mpirun(ranks: 1, ["comm-check", "--megabytes", "1", "--json"]), ranks: 1)
    }

    func testCommCheckTwoRanks() throws {
        try assertPassed(try PruneDistBinary.mpirun(ranks: 2, ["comm-check", "--megabytes", "2", "--json"]), ranks: 2)
    }

    func testCommCheckFourRanks() throws {
        try assertPassed(try PruneDistBinary.mpirun(ranks: 4, ["comm-check", "--megabytes", "1", "--json"]), ranks: 4)
    }

    /// Messages cut into pieces of 1000 (and 777, which divides nothing evenly) elements must give the
    /// same closed-form results: this is the path a 70B model's Hessians take past Int32.max elements.
    func testCommCheckWithMessagesInPieces() throws {
        let result = try PruneDistBinary.mpirun(ranks: 3, ["comm-check", "--megabytes", "1", "--json", "--max-message-elements", "777"])
        try assertPassed(result, ranks: 3)
        XCTAssertEqual(try result.lastJSON()["max_message_elements"] as? Int, 777)
    }

    /// The checks can fail: a rank that adds 1 to its reduction inputs makes comm-check report it and exit 1.
    func testCommCheckReportsWrongSums() throws {
        let result = try PruneDistBinary.mpirun(ranks: 2, ["comm-check", "--megabytes", "0", "--json", "--perturb-rank", "1"])
        XCTAssertNotEqual(result.status, 0)
        let json = try result.lastJSON()
        XCTAssertEqual(json["ok"] as? Bool, false)
        let failures = json["failures"] as? [String] ?? []
        XCTAssertTrue(failures.contains("rank 0: reduceSum to root 0: element 0 is 4.0, expected 3.0"), "\(failures)")
        XCTAssertTrue(failures.contains("rank 1: allreduceSum: element 0 is 4.0, expected 3.0"), "\(failures)")
    }

    /// A rank that fails while the others wait in a collective must end the whole job, promptly and with
    /// a non-zero status and its message, instead of leaving it hanging (design §6).
    func testFailingRankEndsTheJob() throws {
        let result = try failingCommCheck(["--fail-rank", "1"])
        XCTAssertTrue(result.stderr.contains("prune-dist: rank 1 of 4 on "), result.stderr)
        XCTAssertTrue(result.stderr.contains("comm-check: rank 1 failing on purpose (--fail-rank 1)"), result.stderr)
        XCTAssertFalse(result.stdout.contains("\"ok\""), "no report from a failed job:\n\(result.stdout)")
    }

    /// Four ranks split into two groups of two (Communicator.split over MPI_Comm_split): every check passes
    /// inside each group at once, and a failing rank inside a group still ends the whole job, not only its group.
    func testCommCheckInSplitGroups() throws {
        let result = try PruneDistBinary.mpirun(ranks: 4, ["comm-check", "--megabytes", "1", "--json", "--split-groups", "2"])
        try assertPassed(result, ranks: 2)
        XCTAssertEqual(try result.lastJSON()["split_groups"] as? Int, 2)

        let failed = try failingCommCheck(["--split-groups", "2", "--fail-rank", "3"])
        XCTAssertTrue(failed.stderr.contains("prune-dist: rank 1 of 2 on "), failed.stderr)
        XCTAssertTrue(failed.stderr.contains("comm-check: rank 3 failing on purpose (--fail-rank 3)"), failed.stderr)
        XCTAssertFalse(failed.stdout.contains("\"ok\""), "no report from a failed job:\n\(failed.stdout)")
    }

    /// `comm-check` with a failing rank under `mpirun -n 4`, checked to end non-zero well before a 120 s
    /// timeout (timeout(1) sends SIGTERM, the signal mpirun cleans up on, and exits 124 if the job hangs).
    private func failingCommCheck(_ arguments: [String]) throws -> PruneDistBinary.Result {
        let limit = 120
        let start = Date()
        let result = try PruneDistBinary.launch(
            URL(fileURLWithPath: "/usr/bin/timeout"),
            ["--kill-after=10", String(limit), "/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "4",
             "--mca", "btl", "self,vader,tcp", PruneDistBinary.executable.path, "comm-check", "--megabytes", "0", "--json"]
                + arguments)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertNotEqual(result.status, 124, "the job hung until timeout killed it")
        XCTAssertLessThan(Date().timeIntervalSince(start), Double(limit - 10))
        return result
    }

    /// Alone (no mpirun), a failing rank is an ordinary error: message and exit 1.
    func testFailingSingleRankExitsWithItsError() throws {
        let result = try PruneDistBinary.run(["comm-check", "--megabytes", "0", "--fail-rank", "0"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("comm-check: rank 0 failing on purpose (--fail-rank 0)"), result.stderr)
    }
}

/// comm-check is for operators: absent from the command list, but with its own help.
final class CommCheckHelpTests: XCTestCase {
    func testCommCheckIsHiddenButDocumented() throws {
        let overview = try PruneDistBinary.run(["--help"])
        XCTAssertEqual(overview.status, 0, overview.stderr)
        XCTAssertFalse(overview.stdout.contains("comm-check"), overview.stdout)
        let help = try PruneDistBinary.run(["comm-check", "--help"])
        XCTAssertEqual(help.status, 0, help.stderr)
        XCTAssertTrue(help.stdout.contains("--megabytes"), help.stdout)
        XCTAssertTrue(help.stdout.contains("--json"), help.stdout)
        XCTAssertFalse(help.stdout.contains("--fail-rank"), "test hooks stay out of the help:\n\(help.stdout)")
    }

    func testNegativeMegabytesIsRefused() throws {
        let result = try PruneDistBinary.run(["comm-check", "--megabytes=-1"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("--megabytes must be a non-negative integer no larger than 65536, got -1"), result.stderr)
    }
}
