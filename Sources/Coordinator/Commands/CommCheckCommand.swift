import ArgumentParser
import Engine
import Foundation
import Worker

/// `prune-dist comm-check`: a diagnostic every rank runs under mpirun before trusting a cluster with a
/// prune run. Not listed in `prune-dist --help` (it is for operators); `prune-dist comm-check --help`
/// documents it.
struct CommCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm-check",
        abstract: "Check that the ranks of an MPI job compute reductions, broadcasts and gathers correctly, and measure allreduce bandwidth.",
        discussion: """
        Run it the way a prune run is started, e.g. `mpirun -n 4 prune-dist comm-check --json`, or alone (one \
        rank). Every operation the prune run uses is checked against closed-form values from rank-dependent \
        buffers, with every rank as root; reductions must also be bit-identical whichever rank is root. Rank 0 \
        prints the ranks, their hosts, whether all checks passed, and the allreduce and reduce bandwidth \
        (buffer bytes / time of the slowest rank, best of --repetitions). Exits non-zero if any check fails.
        """,
        shouldDisplay: false)

    @Option(name: .long, parsing: .unconditional, help: "Buffer size for the bandwidth measurement, in MB (10^6 bytes); 0 skips it.")
    var megabytes: Int = 64

    @Option(name: .long, help: "Bandwidth measurements to take; the best is reported.")
    var repetitions: Int = 3

    @Flag(name: .long, help: "Print one JSON object on rank 0 instead of text.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Test hook: this rank fails after start-up, to show the job ends instead of hanging.", visibility: .hidden))
    var failRank: Int?

    @Option(name: .long, help: ArgumentHelp("Test hook: this rank adds 1 to its reduction inputs, so the checks must fail.", visibility: .hidden))
    var perturbRank: Int?

    @Option(name: .long, help: ArgumentHelp("Longest MPI message in elements (default 2^27), small to exercise piecewise messages.", visibility: .hidden))
    var maxMessageElements: Int?

    @Option(name: .long, help: ArgumentHelp("Test hook: split the ranks into this many groups of consecutive ranks (Communicator.split) and run the checks in every group at once.", visibility: .hidden))
    var splitGroups: Int?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try CommandLineLimits.check(megabytes, "--megabytes", in: CommandLineLimits.megabytes)
        try CommandLineLimits.check(repetitions, "--repetitions", in: CommandLineLimits.count)
        if let splitGroups, splitGroups < 1 { throw ValidationError("--split-groups must be at least 1, got \(splitGroups)") }
        if let maxMessageElements, !(1...Int(Int32.max)).contains(maxMessageElements) {
            throw ValidationError("--max-message-elements must be in 1...\(Int32.max), got \(maxMessageElements)")
        }
    }

    func run() throws {
        _ = try global.makeLogger()
        let comm = try MPICommunicator.start()
        if let maxMessageElements { comm.maxElementsPerMessage = maxMessageElements }
        var groupFailures: [String] = []
        let report = try comm.abortingJobOnError {
            guard let splitGroups else {
                if comm.rank == failRank {
                    throw PruneDistError(.communication, "comm-check: rank \(comm.rank) failing on purpose (--fail-rank \(comm.rank))")
                }
                return try CommunicationCheck(megabytes: megabytes, repetitions: repetitions, perturbRank: perturbRank).run(comm)
            }
            // Each group checks its own communicator; a failure inside a group must still end the whole job.
            let group = comm.rank * splitGroups / comm.size
            let sub = try comm.split(color: group, key: comm.rank)
            let report = try sub.abortingJobOnError {
                if comm.rank == failRank {
                    throw PruneDistError(.communication, "comm-check: rank \(comm.rank) failing on purpose (--fail-rank \(comm.rank))")
                }
                return try CommunicationCheck(megabytes: megabytes, repetitions: repetitions, perturbRank: perturbRank).run(sub)
            }
            let mine = sub.rank == 0 ? report.failures.map { "group \(group): \($0)" }.joined(separator: "\n") : ""
            groupFailures = try comm.gather(Data(mine.utf8), root: 0).flatMap {
                String(decoding: $0, as: UTF8.self).split(separator: "\n").map(String.init)
            }
            return report
        }
        // Rank 0 prints before the others may exit: a rank that exits non-zero makes mpirun end the job, and rank 0's
        // report was sometimes lost on a loaded machine when it printed after MPI_Finalize.
        if comm.rank == 0 {
            var object = report.jsonObject()
            object["max_message_elements"] = comm.maxElementsPerMessage
            if let splitGroups {
                object["split_groups"] = splitGroups
                object["failures"] = groupFailures
                object["ok"] = groupFailures.isEmpty
            }
            printLine(json ? try jsonLine(object) : report.text())
        }
        try comm.barrier()
        comm.finish()
        if !report.ok || !groupFailures.isEmpty { throw ExitCode.failure }
    }
}

/// The checks and measurements of comm-check, over any Communicator.
struct CommunicationCheck {
    let megabytes: Int
    let repetitions: Int
    let perturbRank: Int?
    /// Odd, so segments and messages split unevenly over 2, 3 and 4 ranks.
    let checkElements = 100_003

    struct Report {
        let ranks: Int
        let rankHosts: [String]
        let checks: [String]
        /// "rank r: what differed", from every rank, in rank order; empty when all passed.
        let failures: [String]
        let megabytes: Int
        let allreduceGBps: Double?
        let reduceGBps: Double?
        let allreduceSeconds: Double?
        var ok: Bool { failures.isEmpty }

        var hosts: [String] {
            var seen = Set<String>()
            return rankHosts.filter { seen.insert($0).inserted }
        }

        func jsonObject() -> [String: Any] {
            [
                "ok": ok, "ranks": ranks, "hosts": hosts, "rank_hosts": rankHosts, "checks": checks,
                "failures": failures, "megabytes": megabytes,
                "allreduce_gbps": allreduceGBps ?? NSNull(), "reduce_gbps": reduceGBps ?? NSNull(),
                "allreduce_seconds": allreduceSeconds ?? NSNull(),
            ]
        }

        func text() -> String {
            var lines = ["ranks: \(ranks) on \(hosts.count) host(s): \(hosts.joined(separator: ", "))",
                         "checks: \(checks.joined(separator: ", "))"]
            if let allreduceGBps, let reduceGBps, let allreduceSeconds {
                lines.append(String(format: "%d MB: allreduce %.3f GB/s (%.4f s), reduce %.3f GB/s", megabytes, allreduceGBps, allreduceSeconds, reduceGBps))
            }
            lines.append(ok ? "ok" : "FAILED:\n" + failures.joined(separator: "\n"))
            return lines.joined(separator: "\n")
        }
    }

    /// Every rank runs this; the report is complete on rank 0 (other ranks' hold only ok).
    func run(_ comm: Communicator) throws -> Report {
        var failures: [String] = []
        func expect(_ condition: Bool, _ what: @autoclosure () -> String) {
            if !condition { failures.append("rank \(comm.rank): \(what())") }
        }
        let n = comm.size, me = comm.rank
        let perturbation: Double = me == perturbRank ? 1 : 0
        let rankHosts = try comm.allgather(Data(comm.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) }

        // reduceSum and allreduceSum: rank r holds (r+1)·(i mod 1009 + 1), summing to n(n+1)/2·(i mod 1009 + 1),
        // exact in Double. Checked with every rank as root.
        func reductionInput() -> [Double] {
            var values = (0..<checkElements).map { Double((me + 1) * ($0 % 1009 + 1)) }
            values[0] += perturbation
            return values
        }
        let triangle = Double(n * (n + 1) / 2)
        func firstMismatch(_ values: [Double]) -> Int? {
            values.indices.first { values[$0] != triangle * Double($0 % 1009 + 1) }
        }
        for root in 0..<n {
            var buffer = reductionInput()
            try comm.reduceSum(&buffer, root: root)
            if me == root, let i = firstMismatch(buffer) {
                expect(false, "reduceSum to root \(root): element \(i) is \(buffer[i]), expected \(triangle * Double(i % 1009 + 1))")
            }
        }
        var allreduced = reductionInput()
        try comm.allreduceSum(&allreduced)
        if let i = firstMismatch(allreduced) {
            expect(false, "allreduceSum: element \(i) is \(allreduced[i]), expected \(triangle * Double(i % 1009 + 1))")
        }

        // Root independence: inexact sums must be bit-identical whichever rank receives them. Rank r is root
        // of the r-th reduction and keeps a hash of its result, and hashes its allreduce result too; rank 0
        // compares the hashes.
        func inexactInput(_ root: Int) -> [Double] {
            (0..<checkElements).map { Double(me + 1) * 0.1 + Double($0 % 97) / 3e3 + perturbation * Double(root) }
        }
        var myRootHash: UInt64 = 0
        for root in 0..<n {
            var buffer = inexactInput(root)
            try comm.reduceSum(&buffer, root: root)
            if me == root { myRootHash = bitHash(buffer) }
        }
        var inexactAllreduced = inexactInput(me)
        try comm.allreduceSum(&inexactAllreduced)
        let hashPair = [myRootHash, bitHash(inexactAllreduced)].withUnsafeBytes { Data($0) }
        let hashPairs = try comm.gather(hashPair, root: 0).map { pair in
            pair.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
                (root: bytes.loadUnaligned(as: UInt64.self), all: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
        }
        if me == 0 {
            let rootHashes = hashPairs.map(\.root), allHashes = hashPairs.map(\.all)
            expect(Set(rootHashes).count == 1, "reduceSum results differ between roots (hashes by root: \(rootHashes.map { String($0, radix: 16) }))")
            expect(Set(allHashes).count == 1, "allreduceSum results differ between ranks (hashes by rank: \(allHashes.map { String($0, radix: 16) }))")
        }

        let maximum = try comm.allreduceMax(Double(me) - 0.5 + perturbation * 100)
        expect(maximum == Double(n - 1) - 0.5, "allreduceMax is \(maximum), expected \(Double(n - 1) - 0.5)")

        // Broadcasts from every root: root's values are root-dependent, the others start from something else.
        for root in 0..<n {
            let floatsFromRoot = (0..<checkElements).map { Float(root * 7 + $0 % 1000) + 0.5 }
            var floats = me == root ? floatsFromRoot : [Float](repeating: -1, count: checkElements)
            try comm.broadcast(&floats, root: root)
            expect(floats == floatsFromRoot, "broadcast [Float] from root \(root) differs")

            let doublesFromRoot = (0..<checkElements).map { Double(root) / 3 + Double($0) }
            var doubles = me == root ? doublesFromRoot : [Double](repeating: .nan, count: checkElements)
            try comm.broadcast(&doubles, root: root)
            expect(doubles == doublesFromRoot, "broadcast [Double] from root \(root) differs")

            var bytes = me == root ? Self.pattern(rank: root) : Data([0xff])
            try comm.broadcast(&bytes, root: root)
            expect(bytes == Self.pattern(rank: root), "broadcast Data from root \(root): \(bytes.count) bytes, expected \(Self.pattern(rank: root).count)")
        }

        // Gathers of rank-dependent lengths (rank 0 sends nothing) to every root, then to all.
        let expectedGather = (0..<n).map { Self.pattern(rank: $0) }
        for root in 0..<n {
            let gathered = try comm.gather(Self.pattern(rank: me), root: root)
            expect(gathered == (me == root ? expectedGather : []),
                   "gather to root \(root): lengths \(gathered.map(\.count)), expected \(me == root ? expectedGather.map(\.count) : [])")
        }
        let allgathered = try comm.allgather(Self.pattern(rank: me))
        expect(allgathered == expectedGather, "allgather: lengths \(allgathered.map(\.count)), expected \(expectedGather.map(\.count))")
        try comm.barrier()

        // Bandwidth: time of the slowest rank, best of `repetitions`; each result checked too.
        var allreduceSeconds: Double?, reduceSeconds: Double?
        let count = megabytes * 1_000_000 / MemoryLayout<Double>.stride
        if count > 0 {
            var buffer = [Double](repeating: 0, count: count)
            for _ in 0..<repetitions {
                for i in buffer.indices { buffer[i] = Double(me + 1) }
                try comm.barrier()
                let start = DispatchTime.now().uptimeNanoseconds
                try comm.allreduceSum(&buffer)
                let seconds = try comm.allreduceMax(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                allreduceSeconds = min(allreduceSeconds ?? .infinity, seconds)
                expect(buffer.allSatisfy { $0 == triangle }, "bandwidth allreduceSum result differs from \(triangle)")

                for i in buffer.indices { buffer[i] = Double(me + 1) }
                try comm.barrier()
                let reduceStart = DispatchTime.now().uptimeNanoseconds
                try comm.reduceSum(&buffer, root: 0)
                let reduceTime = try comm.allreduceMax(Double(DispatchTime.now().uptimeNanoseconds - reduceStart) / 1e9)
                reduceSeconds = min(reduceSeconds ?? .infinity, reduceTime)
                if me == 0 { expect(buffer.allSatisfy { $0 == triangle }, "bandwidth reduceSum result differs from \(triangle)") }
            }
        }

        // Every rank's failures to rank 0; every rank learns whether any failed, for its exit status.
        let failureLists = try comm.gather(Data(failures.joined(separator: "\n").utf8), root: 0)
        let anyFailed = try comm.allreduceMax(failures.isEmpty ? 0 : 1) > 0
        let allFailures = failureLists.flatMap { String(decoding: $0, as: UTF8.self).split(separator: "\n").map(String.init) }
        let bytes = Double(count * MemoryLayout<Double>.stride)
        return Report(
            ranks: n, rankHosts: rankHosts,
            checks: ["reduceSum", "reduceSum root independence", "allreduceSum", "allreduceSum equal on all ranks", "allreduceMax",
                     "broadcast [Float]", "broadcast [Double]", "broadcast Data", "gather", "allgather", "barrier"],
            failures: me == 0 ? allFailures : (anyFailed ? ["see rank 0"] : []),
            megabytes: megabytes,
            allreduceGBps: allreduceSeconds.map { bytes / $0 / 1e9 },
            reduceGBps: reduceSeconds.map { bytes / $0 / 1e9 },
            allreduceSeconds: allreduceSeconds)
    }

    /// rank r's gather/broadcast bytes: 1237·r mod 5000 + r bytes (none for rank 0), byte i = (31r + i) mod 256.
    static func pattern(rank: Int) -> Data {
        Data((0..<(1237 * rank % 5000 + rank)).map { UInt8((31 * rank + $0) & 0xff) })
    }
}

/// FNV-1a over the bit patterns of values: equal hashes for bit-identical arrays.
/// values: [count]
private func bitHash(_ values: [Double]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for value in values {
        hash = (hash ^ value.bitPattern) &* 0x100_0000_01b3
    }
    return hash
}
