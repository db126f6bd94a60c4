import Foundation

/// The payload bytes a rank has handed to collectives as a contributor: its buffer for a reduction (every rank
/// contributes), root's buffer for a broadcast, a non-root's bytes for a gather, its bytes for an allgather;
/// nothing on a job of one rank. What MPI puts on the wire on top (tree and ring forwarding, lengths) is not
/// counted: `plan` estimates that. Counted by both communicators alike, so tests see the figure a run reports.
public final class SentBytes: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0

    public init() {}

    public var bytes: Int { lock.withLock { total } }

    public func add(_ count: Int) { lock.withLock { total += count } }
}
