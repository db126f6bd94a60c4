import Engine
import Foundation

/// The collective operations ranks use to cooperate on a prune run. Every rank must call the same
/// operations in the same order with the same root (MPI's rule); a rank that fails should call
/// `abort(code:)` so the others do not wait for it forever.
///
/// Two implementations: `MPICommunicator` (Open MPI, one process per rank, also as a singleton without
/// mpirun) and `InMemoryCommunicator` in WorkerTesting (threads as ranks, for tests only).
public protocol Communicator: AnyObject, Sendable {
    /// This process's index, 0 ..< size.
    var rank: Int { get }
    /// Number of ranks in the job.
    var size: Int { get }
    /// The host this rank runs on, as the transport names it.
    var hostName: String { get }

    /// Element-wise sum of every rank's buffer, written into `buffer` on `root` only (other ranks' buffers
    /// are left in an unspecified state). The result does not depend on which rank is root.
    /// buffer: [count] with the same count on every rank
    func reduceSum(_ buffer: inout [Double], root: Int) throws

    /// Element-wise sum of every rank's buffer, written into `buffer` on every rank.
    /// buffer: [count] with the same count on every rank
    func allreduceSum(_ buffer: inout [Double]) throws

    /// The largest of every rank's value, returned on every rank.
    func allreduceMax(_ value: Double) throws -> Double

    /// Copies root's buffer into every rank's buffer.
    /// buffer: [count], already sized to root's count on every rank
    func broadcast(_ buffer: inout [Float], root: Int) throws

    /// Copies root's buffer into every rank's buffer.
    /// buffer: [count], already sized to root's count on every rank
    func broadcast(_ buffer: inout [Double], root: Int) throws

    /// Copies root's bytes into every rank's `data`; other ranks need not know the length beforehand.
    func broadcast(_ data: inout Data, root: Int) throws

    /// Collects every rank's bytes (any length, zero included) on root, in rank order. Other ranks get [].
    func gather(_ data: Data, root: Int) throws -> [Data]

    /// Collects every rank's bytes (any length) on every rank, in rank order.
    func allgather(_ data: Data) throws -> [Data]

    /// Returns once every rank has called it.
    func barrier() throws

    /// Ends the whole job with `code`: the other ranks are stopped instead of waiting for this one.
    func abort(code: Int32)

    /// Seconds a failing rank other than 0 waits before reporting and aborting (see abortingJobOnError).
    var failureReportDelay: Double { get }

    /// Payload bytes this rank has contributed to collectives so far (SentBytes says what is counted).
    var bytesSent: Int { get }

    /// MPI_Comm_split: a collective every rank calls. The ranks passing the same `color` (≥ 0) form one new
    /// communicator, ranked by `key` (ties by rank here); its collectives involve only those ranks and work
    /// like this one's, and its `abort(code:)` still ends the whole job.
    func split(color: Int, key: Int) throws -> Communicator
}

extension Communicator {
    /// The error every communication failure becomes: operation, where, and the transport's reason.
    public func communicationError(_ operation: String, _ reason: String) -> PruneDistError {
        PruneDistError(.communication, "\(operation) failed on rank \(rank) of \(size): \(reason)")
    }

    /// Throws unless `root` names a rank of this job.
    public func checkRoot(_ root: Int, _ operation: String) throws {
        guard (0..<size).contains(root) else {
            throw communicationError(operation, "root \(root) is not a rank (ranks are 0..<\(size))")
        }
    }

    /// Runs `body`; if it throws on a job of more than one rank, reports the error on standard error with
    /// this rank's number and ends the whole job with `abort(code:)`, because the other ranks would
    /// otherwise wait in their next collective forever. On one rank the error is rethrown.
    public func abortingJobOnError<T>(_ body: () throws -> T) rethrows -> T {
        do {
            return try body()
        } catch {
            guard size > 1 else { throw error }
            // Bad input usually fails every rank at once; rank 0 reports at once and its abort ends the other
            // ranks during their delay, so the job says it once rather than once per rank. A rank failing on
            // its own still reports, after the delay.
            if rank != 0 { Thread.sleep(forTimeInterval: failureReportDelay) }
            let line = "prune-dist: rank \(rank) of \(size) on \(hostName) failed: \(error)\n"
            FileHandle.standardError.write(Data(line.utf8))
            abort(code: 1)
            throw error  // reached only by communicators whose abort returns (InMemoryCommunicator)
        }
    }
}

extension Communicator {
    /// No delay unless a transport sets one (in-process communicators have nobody to wait for).
    public var failureReportDelay: Double { 0 }
}

/// Splits `count` elements into consecutive messages of at most `maxElements` each, because MPI counts
/// are Int32: a 70B model's Hessian blocks exceed 2³¹ elements.
/// Calls body(offset, count) in order; nothing for count 0.
func forEachMessage(count: Int, maxElements: Int, _ body: (_ offset: Int, _ count: Int) throws -> Void) rethrows {
    precondition(maxElements > 0)
    var offset = 0
    while offset < count {
        let n = min(maxElements, count - offset)
        try body(offset, n)
        offset += n
    }
}
