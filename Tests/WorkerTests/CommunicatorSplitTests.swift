import Engine
import Foundation
import WorkerTesting
import XCTest
@testable import Worker

/// Communicator.split: groups of ranks with collectives of their own, ranked by key, independent of each other,
/// and a failure or abort in any group ending the whole job. InMemoryCommunicator with 1–4 ranks, and
/// MPICommunicator as a singleton here (mpirun -n 4 with groups is in MPIRunTests, through comm-check).
final class CommunicatorSplitTests: XCTestCase {
    struct Seen: Equatable {
        var group: [Int]  // world ranks of this rank's group, in group rank order (from an allgather)
        var subRank: Int
        var subSize: Int
        var sum: Double
        var broadcast: [Double]
    }

    /// color = rank mod 2, key = −rank: group 0 of 4 ranks is world ranks [2, 0] (key order), group 1 [3, 1].
    /// Sums, broadcasts from group rank 0 and allgathers stay inside the group.
    func testGroupsSumInsideThemselvesInKeyOrder() throws {
        for ranks in 1...4 {
            let seen = try InMemoryCommunicator.run(ranks: ranks) { comm -> Seen in
                let sub = try comm.split(color: comm.rank % 2, key: -comm.rank)
                var values = [Double(10 * (comm.rank + 1))]
                try sub.allreduceSum(&values)
                var reduced = [Double(comm.rank)]
                try sub.reduceSum(&reduced, root: sub.size - 1)
                var fromRoot = sub.rank == 0 ? [Double(comm.rank), 0.5] : [-1, -1]
                try sub.broadcast(&fromRoot, root: 0)
                let members = try sub.allgather(Data([UInt8(comm.rank)])).map { Int($0[0]) }
                XCTAssertEqual(try sub.gather(Data([UInt8(comm.rank)]), root: 0).count, sub.rank == 0 ? sub.size : 0)
                XCTAssertEqual(try sub.allreduceMax(Double(comm.rank)), Double(members.max()!))
                try sub.barrier()
                if sub.rank == sub.size - 1 { XCTAssertEqual(reduced, [Double(members.reduce(0, +))]) }
                return Seen(group: members, subRank: sub.rank, subSize: sub.size, sum: values[0], broadcast: fromRoot)
            }
            for (rank, s) in seen.enumerated() {
                let expected = (0..<ranks).filter { $0 % 2 == rank % 2 }.reversed().map { $0 }
                XCTAssertEqual(s.group, expected, "\(ranks) ranks, rank \(rank)")
                XCTAssertEqual(s.subRank, expected.firstIndex(of: rank), "\(ranks) ranks, rank \(rank)")
                XCTAssertEqual(s.subSize, expected.count)
                XCTAssertEqual(s.sum, Double(expected.map { 10 * ($0 + 1) }.reduce(0, +)))
                XCTAssertEqual(s.broadcast, [Double(expected[0]), 0.5])
            }
        }
    }

    /// Groups of unequal sizes run different sequences of collectives at the same time without meeting:
    /// group 0 (rank 0) allreduces three times while group 1 (ranks 1, 2) gathers and barriers; then all of
    /// the world meets again. Equal keys rank by the parent's rank. Splits of splits work too.
    func testGroupsAreIndependentAndNest() throws {
        let results = try InMemoryCommunicator.run(ranks: 3) { comm -> [Double] in
            let sub = try comm.split(color: comm.rank == 0 ? 0 : 1, key: 7)
            var out: [Double] = [Double(sub.rank), Double(sub.size)]
            if comm.rank == 0 {
                for _ in 0..<3 {
                    var x = [1.0]
                    try sub.allreduceSum(&x)
                    out.append(x[0])
                }
            } else {
                let bytes = try sub.allgather(Data([UInt8(comm.rank)]))
                out.append(Double(bytes.map { Int($0[0]) }.reduce(0, +)))
                try sub.barrier()
                let single = try sub.split(color: sub.rank, key: 0)
                var y = [Double(comm.rank)]
                try single.allreduceSum(&y)
                out.append(y[0] + Double(single.size * 100))
            }
            var world = [1.0]
            try comm.allreduceSum(&world)
            out.append(world[0])
            return out
        }
        XCTAssertEqual(results[0], [0, 1, 1, 1, 1, 3])
        XCTAssertEqual(results[1], [0, 2, 3, 101, 3])
        XCTAssertEqual(results[2], [1, 2, 3, 102, 3])
    }

    /// Sums inside a group are taken in group rank order whatever the world order: the same values give
    /// the same bits in a group of world ranks [1, 2] and in a world of 2.
    func testGroupSumsAreDeterministic() throws {
        let values: [Double] = [0.1, 0.2 + 1e-17, 0.7]
        let grouped = try InMemoryCommunicator.run(ranks: 3) { comm -> Double in
            let sub = try comm.split(color: comm.rank == 0 ? 0 : 1, key: comm.rank)
            var x = [values[comm.rank] * 3.3]
            try sub.allreduceSum(&x)
            return x[0]
        }
        let alone = try InMemoryCommunicator.run(ranks: 2) { comm -> Double in
            var x = [values[comm.rank + 1] * 3.3]
            try comm.allreduceSum(&x)
            return x[0]
        }
        XCTAssertEqual(grouped[1].bitPattern, alone[0].bitPattern)
        XCTAssertEqual(grouped[2].bitPattern, alone[1].bitPattern)
    }

    /// An abort in one group ends the whole job: the other group's ranks waiting in their own collective and
    /// the aborting rank's group partner are released, and the run reports the world rank that aborted.
    func testAbortInAGroupEndsTheWholeJob() throws {
        let start = Date()
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 4) { comm in
            let sub = try comm.split(color: comm.rank / 2, key: comm.rank)
            if comm.rank == 3 {
                Thread.sleep(forTimeInterval: 0.01)  // the others already wait
                sub.abort(code: 5)
                return
            }
            if comm.rank < 2 {
                try sub.barrier()
                try comm.barrier()  // rank 3 never comes
            } else {
                try sub.barrier()  // rank 3 never comes
            }
            XCTFail("rank \(comm.rank) passed a collective that rank 3 never reached")
        }) { error in
            XCTAssertEqual("\(error)", "rank 3 of 4 aborted the job with code 5")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    /// A rank that throws ends its group's and the other groups' collectives; aborting after a split through
    /// abortingJobOnError on the group rethrows the rank's own error from run.
    func testAFailureInAGroupReleasesEveryGroup() throws {
        let failure = PruneDistError(.numerics, "rank 1 could not factorise")
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 4) { comm in
            let sub = try comm.split(color: comm.rank / 2, key: comm.rank)
            try sub.abortingJobOnError {
                if comm.rank == 1 { throw failure }
                try sub.barrier()
                try comm.barrier()
            }
        }) { error in
            XCTAssertEqual(error as? PruneDistError, failure)
        }
    }

    func testARankReturningEarlyInAGroupIsAnErrorNotAHang() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 2) { comm in
            let sub = try comm.split(color: 0, key: 0)
            if comm.rank == 0 { try sub.barrier() }
        }) { error in
            XCTAssertEqual("\(error)", "barrier failed on rank 0 of 2: rank(s) [1] returned without calling barrier")
        }
    }

    func testNegativeColorIsAnError() throws {
        XCTAssertThrowsError(try InMemoryCommunicator.run(ranks: 1) { comm in _ = try comm.split(color: -1, key: 0) }) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .communication)
        }
    }

    /// MPI as a singleton: a split of one rank is a working communicator of one, freed when dropped.
    func testMPISingletonSplits() throws {
        let comm = try MPICommunicator.start()
        guard ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil else { return }
        for round in 0..<3 {
            let sub = try comm.split(color: round, key: 0)
            XCTAssertEqual(sub.rank, 0)
            XCTAssertEqual(sub.size, 1)
            var values: [Double] = [1, 2, 3]
            try sub.allreduceSum(&values)
            XCTAssertEqual(values, [1, 2, 3])
            var data = Data([1, 2, 3])
            try sub.broadcast(&data, root: 0)
            XCTAssertEqual(try sub.allgather(data), [Data([1, 2, 3])])
            try sub.barrier()
        }
        XCTAssertThrowsError(try comm.split(color: -2, key: 0)) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .communication)
        }
    }
}
