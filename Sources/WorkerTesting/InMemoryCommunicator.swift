import Engine
import Foundation
import Worker

/// N ranks as N threads of one process, for unit tests of code written against `Communicator`.
///
/// Every collective deposits each rank's contribution and waits until all ranks have deposited; every
/// rank then computes the result from the same snapshot. Sums are taken in rank order, so results are
/// deterministic and equal on every rank. Unlike MPI, it also checks that all ranks called the same
/// operation with the same root and counts, and it turns a rank that throws, aborts, or returns early
/// into an error on the others instead of a hang.
public final class InMemoryCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    private let sentBytes = SentBytes()
    public var bytesSent: Int { sentBytes.bytes }
    public let size: Int
    public var hostName: String { "in-memory" }
    private let exchange: Exchange
    /// Splits this rank has made so far: ranks make them in the same order, so the count names one split.
    private var splits = 0

    private init(rank: Int, exchange: Exchange) {
        self.rank = rank
        self.size = exchange.size
        self.exchange = exchange
    }

    /// Runs `body` once per rank, each on its own thread, and returns the results in rank order.
    /// If any rank throws, the first error thrown (in time) is rethrown after all threads have ended; a
    /// rank that called `abort(code:)` makes the run throw too.
    public static func run<T>(ranks: Int, _ body: @Sendable (InMemoryCommunicator) throws -> T) throws -> [T] {
        guard ranks >= 1 else {
            throw PruneDistError(.argument, "InMemoryCommunicator.run needs at least 1 rank, got \(ranks)")
        }
        let exchange = Exchange(size: ranks)
        let results = ResultSlots<T>(count: ranks)
        let done = DispatchGroup()
        try withoutActuallyEscaping(body) { body in
            let bodyBox = BodyHolder(body)
            for rank in 0..<ranks {
                done.enter()
                // Real threads, not a dispatch pool: every rank must run at once or collectives deadlock.
                let thread = Thread {
                    let communicator = InMemoryCommunicator(rank: rank, exchange: exchange)
                    do {
                        results.set(rank, try bodyBox.body!(communicator))
                        exchange.rankFinished(rank)
                    } catch {
                        exchange.rankFailed(rank, error)
                    }
                    done.leave()
                }
                thread.stackSize = 8 << 20
                thread.start()
            }
            done.wait()
            // The Thread objects may outlive this call; they must not keep the non-escaping body.
            bodyBox.body = nil
            if let failure = exchange.failure { throw failure }
        }
        return results.values()
    }

    // MARK: Communicator

    public func reduceSum(_ buffer: inout [Double], root: Int) throws {
        if size > 1 { sentBytes.add(buffer.count * 8) }
        try checkRoot(root, "reduceSum")
        let all = try exchange.collect(rank, Contribution(operation: "reduceSum", root: root, payload: .doubles(buffer)))
        let parts = try doublesOfEqualCount(all, "reduceSum")
        if rank == root { buffer = sumInRankOrder(parts) }
    }

    public func allreduceSum(_ buffer: inout [Double]) throws {
        if size > 1 { sentBytes.add(buffer.count * 8) }
        let all = try exchange.collect(rank, Contribution(operation: "allreduceSum", root: nil, payload: .doubles(buffer)))
        buffer = sumInRankOrder(try doublesOfEqualCount(all, "allreduceSum"))
    }

    public func allreduceMax(_ value: Double) throws -> Double {
        if size > 1 { sentBytes.add(8) }
        let all = try exchange.collect(rank, Contribution(operation: "allreduceMax", root: nil, payload: .doubles([value])))
        return try doublesOfEqualCount(all, "allreduceMax").map { $0[0] }.max()!
    }

    public func broadcast(_ buffer: inout [Float], root: Int) throws {
        if size > 1, rank == root { sentBytes.add(buffer.count * 4) }
        try checkRoot(root, "broadcast")
        let all = try exchange.collect(rank, Contribution(operation: "broadcast [Float]", root: root, payload: .floats(buffer)))
        guard case .floats(let sent) = all[root].payload else { preconditionFailure("payload kind checked by collect") }
        guard sent.count == buffer.count else {
            throw communicationError("broadcast", "root \(root) sends \(sent.count) elements but this rank's buffer holds \(buffer.count)")
        }
        buffer = sent
    }

    public func broadcast(_ buffer: inout [Double], root: Int) throws {
        if size > 1, rank == root { sentBytes.add(buffer.count * 8) }
        try checkRoot(root, "broadcast")
        let all = try exchange.collect(rank, Contribution(operation: "broadcast [Double]", root: root, payload: .doubles(buffer)))
        guard case .doubles(let sent) = all[root].payload else { preconditionFailure("payload kind checked by collect") }
        guard sent.count == buffer.count else {
            throw communicationError("broadcast", "root \(root) sends \(sent.count) elements but this rank's buffer holds \(buffer.count)")
        }
        buffer = sent
    }

    public func broadcast(_ data: inout Data, root: Int) throws {
        if size > 1, rank == root { sentBytes.add(data.count) }
        try checkRoot(root, "broadcast")
        let all = try exchange.collect(rank, Contribution(operation: "broadcast Data", root: root, payload: .bytes(data)))
        guard case .bytes(let sent) = all[root].payload else { preconditionFailure("payload kind checked by collect") }
        data = sent
    }

    public func gather(_ data: Data, root: Int) throws -> [Data] {
        if size > 1, rank != root { sentBytes.add(data.count) }
        try checkRoot(root, "gather")
        let all = try exchange.collect(rank, Contribution(operation: "gather", root: root, payload: .bytes(data)))
        return rank == root ? all.map(\.bytes) : []
    }

    public func allgather(_ data: Data) throws -> [Data] {
        if size > 1 { sentBytes.add(data.count) }
        return try exchange.collect(rank, Contribution(operation: "allgather", root: nil, payload: .bytes(data))).map(\.bytes)
    }

    public func barrier() throws {
        _ = try exchange.collect(rank, Contribution(operation: "barrier", root: nil, payload: .none))
    }

    /// Marks the job aborted: every rank waiting in, or later entering, a collective throws, and `run`
    /// throws. Unlike MPI_Abort this returns, since the ranks are threads of the test process.
    /// On a communicator made by `split` it aborts the whole run's job all the same.
    public func abort(code: Int32) {
        exchange.abort(rank, code: code)
    }

    /// The ranks of equal color meet in a new exchange of their own, ranked by (key, rank); the other groups'
    /// collectives never wait for them. A failure or abort anywhere in the run stops every group.
    public func split(color: Int, key: Int) throws -> Communicator {
        guard color >= 0, abs(Double(color)) < 0x1p53, abs(Double(key)) < 0x1p53 else {
            throw communicationError("split", "color must be ≥ 0 and color and key below 2^53 in magnitude, got color \(color) key \(key)")
        }
        let all = try exchange.collect(rank, Contribution(operation: "split", root: nil, payload: .doubles([Double(color), Double(key)])))
        let pairs = try doublesOfEqualCount(all, "split").map { (color: Int($0[0]), key: Int($0[1])) }
        let members = pairs.indices.filter { pairs[$0].color == color }.sorted { (pairs[$0].key, $0) < (pairs[$1].key, $1) }
        let group = exchange.child(split: splits, color: color, members: members)
        splits += 1
        return InMemoryCommunicator(rank: members.firstIndex(of: rank)!, exchange: group)
    }

    // MARK: helpers

    /// parts: [ranks][count] → [count], added in rank order (((p0 + p1) + p2) + …) on every rank alike.
    private func sumInRankOrder(_ parts: [[Double]]) -> [Double] {
        var sum = parts[0]
        for part in parts.dropFirst() {
            for i in sum.indices { sum[i] += part[i] }
        }
        return sum
    }

    private func doublesOfEqualCount(_ all: [Contribution], _ operation: String) throws -> [[Double]] {
        let parts = all.map { contribution -> [Double] in
            guard case .doubles(let values) = contribution.payload else { preconditionFailure("payload kind checked by collect") }
            return values
        }
        let counts = parts.map(\.count)
        guard Set(counts).count == 1 else {
            throw communicationError(operation, "ranks pass different element counts \(counts) (in rank order)")
        }
        return parts
    }
}

/// What one rank brings to a collective.
private struct Contribution: Sendable {
    enum Payload: Sendable {
        case none
        case doubles([Double])
        case floats([Float])
        case bytes(Data)
    }
    let operation: String
    let root: Int?
    let payload: Payload

    var bytes: Data {
        if case .bytes(let data) = payload { return data }
        preconditionFailure("payload kind checked by collect")
    }
}

/// The meeting point of all ranks of one `run`, or of one group made by `split` (a child exchange).
private final class Exchange: @unchecked Sendable {
    let size: Int
    /// For a child: the exchange it was split from, and the parent rank of each of its ranks
    private weak var parent: Exchange?
    private let members: [Int]
    /// Groups split from this exchange, by "split number:color"
    private var children: [String: Exchange] = [:]
    private let condition = NSCondition()
    private var pending: [Contribution?]
    private var arrived = 0
    private var generation = 0
    private var completed: [Contribution] = []
    private var finishedRanks: [Int] = []
    private var stop: (rank: Int, reason: String)?
    private var firstFailure: Error?
    private var firstFailureIsAbortBy: Int?

    init(size: Int, parent: Exchange? = nil, members: [Int]? = nil) {
        self.size = size
        self.parent = parent
        self.members = members ?? Array(0..<size)
        pending = Array(repeating: nil, count: size)
    }

    /// The group exchange of split number `split` and `color`, made by whichever member asks first.
    /// members: parent ranks in the group's rank order
    func child(split: Int, color: Int, members: [Int]) -> Exchange {
        condition.lock()
        defer { condition.unlock() }
        let name = "\(split):\(color)"
        if let existing = children[name] { return existing }
        let made = Exchange(size: members.count, parent: self, members: members)
        if let stop { made.stopAll(stop) }
        children[name] = made
        return made
    }

    private var childList: [Exchange] {
        condition.lock()
        defer { condition.unlock() }
        return Array(children.values)
    }

    /// Stops this exchange and every group split from it: ranks waiting in, or entering, a collective throw.
    private func stopAll(_ reason: (rank: Int, reason: String)) {
        condition.lock()
        if stop == nil { stop = reason }
        condition.broadcast()
        condition.unlock()
        for child in childList { child.stopAll(reason) }
    }

    var failure: Error? {
        condition.lock()
        defer { condition.unlock() }
        return firstFailure
    }

    /// Deposits `rank`'s contribution and returns every rank's, in rank order, once all have arrived.
    /// Throws on every rank alike if the ranks disagree on the operation or root.
    func collect(_ rank: Int, _ mine: Contribution) throws -> [Contribution] {
        condition.lock()
        defer { condition.unlock() }
        try throwIfStopped(rank, mine.operation)
        pending[rank] = mine
        arrived += 1
        let myGeneration = generation
        if arrived == size {
            completed = pending.map { $0! }
            pending = Array(repeating: nil, count: size)
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == myGeneration {
                try throwIfStopped(rank, mine.operation)
                if !finishedRanks.isEmpty {
                    throw error(rank, mine.operation, "rank(s) \(finishedRanks) returned without calling \(mine.operation)")
                }
                condition.wait()
            }
        }
        // `completed` stays valid until the next round completes, which needs this rank's next deposit.
        let all = completed
        let first = all[0]
        for (other, contribution) in all.enumerated() {
            guard contribution.operation == first.operation, contribution.root == first.root,
                  sameKind(contribution.payload, first.payload) else {
                throw error(rank, mine.operation, "ranks called different collectives: rank 0 \(describe(first)), rank \(other) \(describe(contribution))")
            }
        }
        return all
    }

    func rankFinished(_ rank: Int) {
        condition.lock()
        finishedRanks.append(rank)
        condition.broadcast()
        condition.unlock()
        for child in childList {
            if let groupRank = child.members.firstIndex(of: rank) { child.rankFinished(groupRank) }
        }
    }

    func rankFailed(_ rank: Int, _ failure: Error) {
        condition.lock()
        // A rank that aborts and then throws (abortingJobOnError) is reported by its own error.
        if firstFailure == nil || firstFailureIsAbortBy == rank {
            firstFailure = failure
            firstFailureIsAbortBy = nil
        }
        if stop == nil { stop = (rank, "rank \(rank) failed: \(failure)") }
        let reason = stop!
        condition.broadcast()
        condition.unlock()
        for child in childList { child.stopAll(reason) }
    }

    /// An abort in a group is the whole run's: it is recorded, with the run's rank number, at the top.
    func abort(_ rank: Int, code: Int32) {
        if let parent {
            parent.abort(members[rank], code: code)
            return
        }
        condition.lock()
        if stop == nil { stop = (rank, "rank \(rank) aborted the job with code \(code)") }
        if firstFailure == nil {
            firstFailure = PruneDistError(.communication, "rank \(rank) of \(size) aborted the job with code \(code)")
            firstFailureIsAbortBy = rank
        }
        let reason = stop!
        condition.broadcast()
        condition.unlock()
        for child in childList { child.stopAll(reason) }
    }

    private func throwIfStopped(_ rank: Int, _ operation: String) throws {
        if let stop { throw error(rank, operation, stop.reason) }
    }

    private func error(_ rank: Int, _ operation: String, _ reason: String) -> PruneDistError {
        PruneDistError(.communication, "\(operation) failed on rank \(rank) of \(size): \(reason)")
    }

    private func describe(_ contribution: Contribution) -> String {
        contribution.operation + (contribution.root.map { " (root \($0))" } ?? "")
    }

    private func sameKind(_ a: Contribution.Payload, _ b: Contribution.Payload) -> Bool {
        switch (a, b) {
        case (.none, .none), (.doubles, .doubles), (.floats, .floats), (.bytes, .bytes): return true
        default: return false
        }
    }
}

/// Per-rank results written by the rank threads, read after all have ended.
private final class ResultSlots<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [T?]
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: T) { lock.lock(); slots[index] = value; lock.unlock() }
    func values() -> [T] { lock.lock(); defer { lock.unlock() }; return slots.map { $0! } }
}

/// Carries the non-escaping body into the rank threads; `run` waits for them, then drops the body.
private final class BodyHolder<T>: @unchecked Sendable {
    var body: ((InMemoryCommunicator) throws -> T)?
    init(_ body: @escaping (InMemoryCommunicator) throws -> T) { self.body = body }
}
