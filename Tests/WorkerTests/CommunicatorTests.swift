import CMPI
import Engine
import Foundation
import WorkerTesting
import XCTest
@testable import Worker

/// InMemoryCommunicator with 1–4 ranks, every operation checked against closed forms, and the errors it
/// turns hangs into; plus MPICommunicator as a singleton (size 1) in this process.
final class CommunicatorTests: XCTestCase {
    static let rankCounts = [1, 2, 3, 4]

    /// rank r's buffer: [count], element i = (r + 1)(i + 1), so the sum over n ranks is n(n+1)/2 · (i + 1).
    static func rankBuffer(rank: Int, count: Int) -> [Double] {
        (0..<count).map { Double((rank + 1) * ($0 + 1)) }
    }

    static func expectedSum(ranks: Int, count: Int) -> [Double] {
        (0..<count).map { Double(ranks * (ranks + 1) / 2 * ($0 + 1)) }
    }

    /// rank r's bytes: r·3 + extra bytes (rank 0 may send none), byte i = (16r + i) mod 256.
    static func rankBytes(rank: Int, extra: Int = 0) -> Data {
        Data((0..<(rank * 3 + extra)).map { UInt8((16 * rank + $0) & 0xff) })
    }

    // MARK: reductions

    func testReduceSumGivesClosedFormOnEveryRoot() throws {
        for ranks in Self.rankCounts {
            for root in 0..<ranks {
                let results = try InMemoryCommunicator.run(ranks: ranks) { comm -> [Double] in
                    var buffer = Self.rankBuffer(rank: comm.rank, count: 11)
                    try comm.reduceSum(&buffer, root: root)
                    return buffer
                }
                XCTAssertEqual(results[root], Self.expectedSum(ranks: ranks, count: 11), "ranks \(ranks) root \(root)")
            }
        }
    }

    func testSumsAreTakenInRankOrder() throws {
        // (((1 + 1e16) − 1e16) + 3) = 3 in Double, since 1 + 1e16 rounds to 1e16; any order that adds
        // 1e16 − 1e16 first gives 4. The result must be 3 on every rank and at every root.
        let values: [Double] = [1, 1e16, -1e16, 3]
        let allreduced = try InMemoryCommunicator.run(ranks: 4) { comm -> Double in
            var buffer = [values[comm.rank]]
            try comm.allreduceSum(&buffer)
            return buffer[0]
        }
        XCTAssertEqual(allreduced, [3, 3, 3, 3])
        for root in 0..<4 {
            let reduced = try InMemoryCommunicator.run(ranks: 4) { comm -> Double in
                var buffer = [values[comm.rank]]
                try comm.reduceSum(&buffer, root: root)
                return buffer[0]
            }
            XCTAssertEqual(reduced[root], 3, "root \(root)")
        }
    }

    func testAllreduceSumGivesClosedFormOnEveryRank() throws {
        for ranks in Self.rankCounts {
            for count in [0, 1, 1000] {
                let results = try InMemoryCommunicator.run(ranks: ranks) { comm -> [Double] in
                    var buffer = Self.rankBuffer(rank: comm.rank, count: count)
                    try comm.allreduceSum(&buffer)
                    return buffer
                }
                for (rank, result) in results.enumerated() {
                    XCTAssertEqual(result, Self.expectedSum(ranks: ranks, count: count), "ranks \(ranks) rank \(rank) count \(count)")
                }
            }
        }
    }

    func testAllreduceMax() throws {
        for ranks in Self.rankCounts {
            // Rising values: max is the last rank's; all-negative values: max is rank 0's.
            let rising = try InMemoryCommunicator.run(ranks: ranks) { comm in try comm.allreduceMax(1.5 * Double(comm.rank) - 2) }
            XCTAssertEqual(rising, Array(repeating: 1.5 * Double(ranks - 1) - 2, count: ranks))
            let negative = try InMemoryCommunicator.run(ranks: ranks) { comm in try comm.allreduceMax(-Double(comm.rank + 1)) }
            XCTAssertEqual(negative, Array(repeating: -1, count: ranks))
        }
    }

    // MARK: broadcast

    func testBroadcastFloatsAndDoublesFromEveryRoot() throws {
        for ranks in Self.rankCounts {
            for root in 0..<ranks {
                let results = try InMemoryCommunicator.run(ranks: ranks) { comm -> ([Float], [Double]) in
                    var floats = (0..<9).map { Float(comm.rank * 1000 + $0) + 0.25 }
                    var doubles = (0..<5).map { Double(comm.rank) * 1e-3 + Double($0) }
                    try comm.broadcast(&floats, root: root)
                    try comm.broadcast(&doubles, root: root)
                    return (floats, doubles)
                }
                for (rank, result) in results.enumerated() {
                    XCTAssertEqual(result.0, (0..<9).map { Float(root * 1000 + $0) + 0.25 }, "ranks \(ranks) root \(root) rank \(rank)")
                    XCTAssertEqual(result.1, (0..<5).map { Double(root) * 1e-3 + Double($0) }, "ranks \(ranks) root \(root) rank \(rank)")
                }
            }
        }
    }

    func testBroadcastDataOfRootLength() throws {
        for ranks in Self.rankCounts {
            for root in 0..<ranks {
                let results = try InMemoryCommunicator.run(ranks: ranks) { comm -> Data in
                    // Every rank starts with a different length; root's (possibly empty) bytes win.
                    var data = Self.rankBytes(rank: comm.rank)
                    try comm.broadcast(&data, root: root)
                    return data
                }
                XCTAssertEqual(results, Array(repeating: Self.rankBytes(rank: root), count: ranks), "ranks \(ranks) root \(root)")
            }
        }
    }

    // MARK: gather

    func testGatherVariableSizesInRankOrder() throws {
        for ranks in Self.rankCounts {
            let expected = (0..<ranks).map { Self.rankBytes(rank: $0) }
            for root in 0..<ranks {
                let results = try InMemoryCommunicator.run(ranks: ranks) { comm in
                    try comm.gather(Self.rankBytes(rank: comm.rank), root: root)
                }
                for (rank, result) in results.enumerated() {
                    XCTAssertEqual(result, rank == root ? expected : [], "ranks \(ranks) root \(root) rank \(rank)")
                }
            }
            let all = try InMemoryCommunicator.run(ranks: ranks) { comm in try comm.allgather(Self.rankBytes(rank: comm.rank)) }
            XCTAssertEqual(all, Array(repeating: expected, count: ranks), "allgather, ranks \(ranks)")
        }
    }

    // MARK: barrier

    func testBarrierSeparatesBeforeAndAfter() throws {
        for ranks in Self.rankCounts {
            let log = EventLog()
            _ = try InMemoryCommunicator.run(ranks: ranks) { comm in
                // Rank r sleeps r ms before arriving, so without a barrier the fast ranks would log "after" first.
                Thread.sleep(forTimeInterval: 0.002 * Double(comm.rank))
                log.append("before")
                try comm.barrier()
                log.append("after")
            }
            XCTAssertEqual(log.events, Array(repeating: "before", count: ranks) + Array(repeating: "after", count: ranks))
        }
    }

    // MARK: errors

    func testRootOutsideTheJobIsAnError() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            var buffer: [Float] = [1, 2]
            try comm.broadcast(&buffer, root: 2)
        }) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .communication)
            XCTAssertTrue("\(error)".contains("root 2 is not a rank (ranks are 0..<2)"), "\(error)")
            XCTAssertTrue("\(error)".hasPrefix("broadcast failed on rank "), "\(error)")
        }
    }

    func testDifferentCountsInAReductionAreAnError() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 3) { comm in
            var buffer = [Double](repeating: 1, count: comm.rank == 2 ? 4 : 5)
            try comm.allreduceSum(&buffer)
        }) { error in
            // Every rank sees the mismatch; whichever throws first is reported.
            XCTAssertTrue("\(error)".hasPrefix("allreduceSum failed on rank "), "\(error)")
            XCTAssertTrue("\(error)".hasSuffix(" of 3: ranks pass different element counts [5, 5, 4] (in rank order)"), "\(error)")
        }
    }

    func testBroadcastIntoAWronglySizedBufferIsAnError() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            var buffer = [Float](repeating: 0, count: comm.rank == 0 ? 4 : 3)
            try comm.broadcast(&buffer, root: 0)
        }) { error in
            XCTAssertEqual("\(error)", "broadcast failed on rank 1 of 2: root 0 sends 4 elements but this rank's buffer holds 3")
        }
    }

    func testRanksCallingDifferentCollectivesIsAnError() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            if comm.rank == 0 {
                try comm.barrier()
            } else {
                var buffer: [Double] = [1]
                try comm.reduceSum(&buffer, root: 0)
            }
        }) { error in
            XCTAssertTrue("\(error)".contains("ranks called different collectives: rank 0 barrier, rank 1 reduceSum (root 0)"), "\(error)")
        }
    }

    func testAFailingRankReleasesTheOthersAndItsErrorIsRethrown() throws {
        let failure = PruneDistError(.numerics, "rank 2 could not factorise")
        let start = Date()
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 3) { comm in
            if comm.rank == 2 {
                Thread.sleep(forTimeInterval: 0.01)  // the others are already waiting in the barrier
                throw failure
            }
            try comm.barrier()
        }) { error in
            XCTAssertEqual(error as? PruneDistError, failure)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    func testAbortStopsTheOtherRanks() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 3) { comm in
            if comm.rank == 1 {
                comm.abort(code: 3)
                return
            }
            try comm.barrier()
            XCTFail("rank \(comm.rank) passed a barrier that rank 1 never reached")
        }) { error in
            XCTAssertEqual("\(error)", "rank 1 of 3 aborted the job with code 3")
        }
    }

    func testAbortingJobOnErrorAbortsOnManyRanksAndRethrowsOnOne() throws {
        let failure = PruneDistError(.data, "shard empty")
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            try comm.abortingJobOnError {
                if comm.rank == 0 { throw failure }
                try comm.barrier()
            }
        }) { error in
            XCTAssertEqual(error as? PruneDistError, failure)
        }
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 1) { comm in
            try comm.abortingJobOnError { throw failure }
        }) { error in
            XCTAssertEqual(error as? PruneDistError, failure)
        }
    }

    func testARankReturningEarlyIsAnErrorNotAHang() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            if comm.rank == 0 { try comm.barrier() }
        }) { error in
            XCTAssertEqual("\(error)", "barrier failed on rank 0 of 2: rank(s) [1] returned without calling barrier")
        }
    }

    func testZeroRanksIsAnArgumentError() {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 0) { _ in 0 }) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .argument)
        }
    }

    // MARK: MPI as a singleton

    func testMPISingletonRunsEveryOperationInPieces() throws {
        let comm = try MPICommunicator.start()
        XCTAssertTrue(comm === (try MPICommunicator.start()), "start() returns the one communicator")
        if ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil {
            XCTAssertEqual(comm.rank, 0)
            XCTAssertEqual(comm.size, 1)
        }
        XCTAssertFalse(comm.hostName.isEmpty)
        let saved = comm.maxElementsPerMessage
        defer { comm.maxElementsPerMessage = saved }
        comm.maxElementsPerMessage = 3  // 10 elements go as 4 messages; 11 bytes of gather as 4 rounds

        var reduced = Self.rankBuffer(rank: 0, count: 10)
        try comm.reduceSum(&reduced, root: 0)
        XCTAssertEqual(reduced, Self.expectedSum(ranks: 1, count: 10))
        var allreduced = Self.rankBuffer(rank: 0, count: 10)
        try comm.allreduceSum(&allreduced)
        XCTAssertEqual(allreduced, Self.expectedSum(ranks: 1, count: 10))
        XCTAssertEqual(try comm.allreduceMax(-2.5), -2.5)

        var floats = (0..<10).map { Float($0) / 4 }
        try comm.broadcast(&floats, root: 0)
        XCTAssertEqual(floats, (0..<10).map { Float($0) / 4 })
        var data = Self.rankBytes(rank: 3, extra: 2)
        try comm.broadcast(&data, root: 0)
        XCTAssertEqual(data, Self.rankBytes(rank: 3, extra: 2))
        XCTAssertEqual(try comm.gather(Self.rankBytes(rank: 3, extra: 2), root: 0), [Self.rankBytes(rank: 3, extra: 2)])
        XCTAssertEqual(try comm.allgather(Data()), [Data()])
        try comm.barrier()
    }

    func testMPIErrorCodesBecomeCommunicationErrors() throws {
        let comm = try MPICommunicator.start()
        XCTAssertThrowsError(try comm.check(cmpi_err_root(), "broadcast")) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .communication)
            // Open MPI's text for MPI_ERR_ROOT is "MPI_ERR_ROOT: invalid root".
            XCTAssertEqual("\(error)", "broadcast failed on rank \(comm.rank) of \(comm.size): MPI_ERR_ROOT: invalid root")
        }
        XCTAssertNoThrow(try comm.check(cmpi_success(), "barrier"))
        var one: [Double] = [1]
        XCTAssertThrowsError(try comm.reduceSum(&one, root: 1)) { error in
            XCTAssertEqual("\(error)", "reduceSum failed on rank 0 of 1: root 1 is not a rank (ranks are 0..<1)")
        }
    }
}

/// Events appended by rank threads, in the order they happened.
private final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ event: String) { lock.lock(); stored.append(event); lock.unlock() }
    var events: [String] { lock.lock(); defer { lock.unlock() }; return stored }
}
