import CMPI
import Engine
import Foundation

/// Open MPI over MPI_COMM_WORLD. One per process: `start()` initialises MPI once (under mpirun, or as a
/// singleton of size 1 without it) and `finish()` finalises it once.
///
/// Every MPI call returns its error code (MPI_ERRORS_RETURN), which becomes
/// PruneDistError(.communication, "<operation> failed on rank r of n: <MPI's message>").
/// Messages longer than `maxElementsPerMessage` are sent in pieces, since MPI counts are Int32.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let hostName: String
    private let sentBytes = SentBytes()
    public var bytesSent: Int { sentBytes.bytes }
    /// MPI_COMM_WORLD, or for a communicator made by `split` the sub-communicator (freed on deinit)
    private let world: MPI_Comm
    private let isSplit: Bool

    /// Longest single MPI message, in elements. Int32.max is MPI's limit; smaller values bound MPI's
    /// internal temporary buffers and let tests exercise the piecewise path with small buffers.
    public var maxElementsPerMessage: Int {
        get { state.withLock { state.maxElements } }
        set {
            precondition(newValue > 0 && newValue <= Int(Int32.max), "maxElementsPerMessage must be in 1...Int32.max")
            state.withLock { state.maxElements = newValue }
        }
    }

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var maxElements = 1 << 27  // 1 GiB of Double per message
        func withLock<R>(_ body: () -> R) -> R { lock.lock(); defer { lock.unlock() }; return body() }
    }
    private let state = State()

    private final class Registry: @unchecked Sendable {
        let lock = NSLock()
        var shared: MPICommunicator?
        var finished = false
    }
    private static let registry = Registry()

    private init(world: MPI_Comm, rank: Int, size: Int, hostName: String, isSplit: Bool = false) {
        self.world = world
        self.rank = rank
        self.size = size
        self.hostName = hostName
        self.isSplit = isSplit
    }

    /// A sub-communicator is freed when its last reference goes; after MPI_Finalize there is nothing to free
    /// (and MPI calls are not allowed).
    deinit {
        guard isSplit, cmpi_is_initialized() != 0, cmpi_is_finalized() == 0 else { return }
        var handle: MPI_Comm? = world
        _ = cmpi_comm_free(&handle)
    }

    /// Initialises MPI (MPI_THREAD_MULTIPLE requested) the first time and returns the process's
    /// communicator; later calls return the same one. MPI cannot start again after `finish()`.
    public static func start() throws -> MPICommunicator {
        registry.lock.lock()
        defer { registry.lock.unlock() }
        if let shared = registry.shared { return shared }
        if registry.finished || cmpi_is_finalized() != 0 {
            throw PruneDistError(.communication, "MPI start failed: MPI was already finalized in this process and cannot start again")
        }
        var provided: Int32 = 0
        let initCode = cmpi_init(&provided)
        guard initCode == cmpi_success() else {
            throw PruneDistError(.communication, "MPI_Init_thread failed: \(mpiErrorString(initCode))")
        }
        guard let world = cmpi_comm_world() else {
            throw PruneDistError(.communication, "MPI start failed: MPI_COMM_WORLD is null")
        }
        let handlerCode = cmpi_set_errors_return(world)
        guard handlerCode == cmpi_success() else {
            throw PruneDistError(.communication, "MPI_Comm_set_errhandler failed: \(mpiErrorString(handlerCode))")
        }
        var rank: Int32 = 0, size: Int32 = 0
        let rankCode = MPI_Comm_rank(world, &rank)
        guard rankCode == cmpi_success() else {
            throw PruneDistError(.communication, "MPI_Comm_rank failed: \(mpiErrorString(rankCode))")
        }
        let sizeCode = MPI_Comm_size(world, &size)
        guard sizeCode == cmpi_success() else {
            throw PruneDistError(.communication, "MPI_Comm_size failed: \(mpiErrorString(sizeCode))")
        }
        var name = [CChar](repeating: 0, count: 256)
        cmpi_processor_name(&name, Int32(name.count))
        let communicator = MPICommunicator(world: world, rank: Int(rank), size: Int(size),
                                           hostName: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        registry.shared = communicator
        return communicator
    }

    /// Finalises MPI. Safe to call more than once; every rank must call it before exiting normally.
    public func finish() {
        Self.registry.lock.lock()
        defer { Self.registry.lock.unlock() }
        guard !Self.registry.finished else { return }
        Self.registry.finished = true
        Self.registry.shared = nil
        if cmpi_is_finalized() == 0 { _ = cmpi_finalize() }
    }

    // MARK: reductions

    /// An allreduce whose result root keeps. MPI_Reduce's tree is rooted at root, so with three or more
    /// ranks the order of additions, and so the last bits of a statistic, would depend on which rank owns
    /// it (comm-check shows this). An allreduce has no root and leaves the same bits on every rank. A
    /// reduce-scatter followed by a gather to root is root-independent too, but measured 1.3–3.9x slower
    /// than MPI_Allreduce with Open MPI 4.1 over shared memory (2–4 ranks, 64 MB), and on a ring both
    /// bring root 2·(n−1)/n of the buffer.
    public func reduceSum(_ buffer: inout [Double], root: Int) throws {
        if size > 1 { sentBytes.add(buffer.count * 8) }
        try begin("reduceSum", root: root)
        try checkSameCount(buffer.count, "reduceSum")
        try allreduceInPlace(&buffer, "reduceSum")
    }

    public func allreduceSum(_ buffer: inout [Double]) throws {
        if size > 1 { sentBytes.add(buffer.count * 8) }
        try begin("allreduceSum")
        try checkSameCount(buffer.count, "allreduceSum")
        try allreduceInPlace(&buffer, "allreduceSum")
    }

    /// buffer: [count], summed over ranks in place, message by message
    private func allreduceInPlace(_ buffer: inout [Double], _ operation: String) throws {
        let maxElements = maxElementsPerMessage
        try buffer.withUnsafeMutableBufferPointer { all in
            guard let base = all.baseAddress else { return }
            try forEachMessage(count: all.count, maxElements: maxElements) { offset, count in
                try check(MPI_Allreduce(cmpi_in_place(), base + offset, Int32(count), cmpi_double(), cmpi_sum(), world),
                          operation)
            }
        }
    }

    public func allreduceMax(_ value: Double) throws -> Double {
        if size > 1 { sentBytes.add(8) }
        try begin("allreduceMax")
        var result = value
        try check(MPI_Allreduce(cmpi_in_place(), &result, 1, cmpi_double(), cmpi_max(), world), "allreduceMax")
        return result
    }

    /// Every rank must pass the same element count to a reduction; a mismatch would otherwise truncate or
    /// hang inside MPI, so it is caught first with one small allreduce (max and -min at once).
    private func checkSameCount(_ count: Int, _ operation: String) throws {
        var extremes = [Int64(count), -Int64(count)]
        try check(MPI_Allreduce(cmpi_in_place(), &extremes, 2, cmpi_int64(), cmpi_max(), world), operation)
        guard extremes[0] == -extremes[1] else {
            throw communicationError(operation, "ranks pass different element counts (from \(-extremes[1]) to \(extremes[0])); this rank has \(count)")
        }
    }

    // MARK: broadcast

    public func broadcast(_ buffer: inout [Float], root: Int) throws {
        if size > 1, rank == root { sentBytes.add(buffer.count * 4) }
        try begin("broadcast", root: root)
        try checkRootCount(buffer.count, root: root, "broadcast")
        try buffer.withUnsafeMutableBufferPointer { all in
            try broadcastMessages(UnsafeMutableRawPointer(all.baseAddress), count: all.count, stride: MemoryLayout<Float>.stride,
                                  type: cmpi_float(), root: root, "broadcast")
        }
    }

    public func broadcast(_ buffer: inout [Double], root: Int) throws {
        if size > 1, rank == root { sentBytes.add(buffer.count * 8) }
        try begin("broadcast", root: root)
        try checkRootCount(buffer.count, root: root, "broadcast")
        try buffer.withUnsafeMutableBufferPointer { all in
            try broadcastMessages(UnsafeMutableRawPointer(all.baseAddress), count: all.count, stride: MemoryLayout<Double>.stride,
                                  type: cmpi_double(), root: root, "broadcast")
        }
    }

    public func broadcast(_ data: inout Data, root: Int) throws {
        if size > 1, rank == root { sentBytes.add(data.count) }
        try begin("broadcast", root: root)
        var length = Int64(data.count)
        try check(MPI_Bcast(&length, 1, cmpi_int64(), Int32(root), world), "broadcast (length)")
        if rank != root { data = Data(count: Int(length)) }
        try data.withUnsafeMutableBytes { bytes in
            try broadcastMessages(bytes.baseAddress, count: bytes.count, stride: 1, type: cmpi_uint8(), root: root, "broadcast")
        }
    }

    /// Root's element count is broadcast first, so a rank whose buffer has another size reports it
    /// instead of MPI truncating the message.
    private func checkRootCount(_ count: Int, root: Int, _ operation: String) throws {
        var rootCount = Int64(count)
        try check(MPI_Bcast(&rootCount, 1, cmpi_int64(), Int32(root), world), "\(operation) (length)")
        guard rootCount == Int64(count) else {
            throw communicationError(operation, "root \(root) sends \(rootCount) elements but this rank's buffer holds \(count)")
        }
    }

    /// base: [count] elements of `stride` bytes
    private func broadcastMessages(_ base: UnsafeMutableRawPointer?, count: Int, stride: Int, type: MPI_Datatype,
                                   root: Int, _ operation: String) throws {
        guard let base else { return }
        try forEachMessage(count: count, maxElements: maxElementsPerMessage) { offset, n in
            try check(MPI_Bcast(base + offset * stride, Int32(n), type, Int32(root), world), operation)
        }
    }

    // MARK: gather

    public func gather(_ data: Data, root: Int) throws -> [Data] {
        if size > 1, rank != root { sentBytes.add(data.count) }
        try begin("gather", root: root)
        return try gatherBytes(data, root: root, "gather")
    }

    public func allgather(_ data: Data) throws -> [Data] {
        if size > 1 { sentBytes.add(data.count) }
        try begin("allgather")
        return try gatherBytes(data, root: nil, "allgather")
    }

    /// Variable-length gather (to `root`, or to every rank when root is nil). Lengths are exchanged first;
    /// then the bytes move in rounds where each rank sends at most maxElementsPerMessage / size bytes, so
    /// every count and displacement of a round fits MPI's Int32.
    private func gatherBytes(_ data: Data, root: Int?, _ operation: String) throws -> [Data] {
        var lengths = [Int64](repeating: 0, count: size)
        var myLength = Int64(data.count)
        try check(MPI_Allgather(&myLength, 1, cmpi_int64(), &lengths, 1, cmpi_int64(), world), "\(operation) (lengths)")
        let receives = root == nil || root == rank
        var result: [Data] = receives ? lengths.map { Data(capacity: Int($0)) } : []
        let perRank = max(1, maxElementsPerMessage / size)
        let rounds = lengths.map { (Int($0) + perRank - 1) / perRank }.max() ?? 0
        let me = rank
        var roundBuffer = [UInt8](repeating: 0, count: receives ? max(1, min(perRank * size, lengths.reduce(0) { $0 + Int($1) })) : 1)
        for round in 0..<rounds {
            let start = round * perRank
            let counts = lengths.map { Int32(max(0, min(perRank, Int($0) - start))) }
            var offsets = [Int32](repeating: 0, count: size)
            for r in 1..<max(1, size) { offsets[r] = offsets[r - 1] + counts[r - 1] }
            let sent = Int(counts[me])
            try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
                // MPI wants a valid address even for zero bytes.
                var placeholder: UInt8 = 0
                try withUnsafeMutablePointer(to: &placeholder) { empty in
                    let sendAddress = sent > 0 ? UnsafeRawPointer(bytes.baseAddress! + start) : UnsafeRawPointer(empty)
                    if let root {
                        try check(MPI_Gatherv(sendAddress, counts[me], cmpi_uint8(), &roundBuffer, counts, offsets,
                                              cmpi_uint8(), Int32(root), world), operation)
                    } else {
                        try check(MPI_Allgatherv(sendAddress, counts[me], cmpi_uint8(), &roundBuffer, counts, offsets,
                                                 cmpi_uint8(), world), operation)
                    }
                }
            }
            if receives {
                for r in 0..<size where counts[r] > 0 {
                    let from = Int(offsets[r])
                    result[r].append(contentsOf: roundBuffer[from..<(from + Int(counts[r]))])
                }
            }
        }
        return result
    }

    // MARK: split

    /// MPI_Comm_split: a collective over this communicator. The new communicator inherits the message limit.
    public func split(color: Int, key: Int) throws -> Communicator {
        try begin("split")
        guard color >= 0, color <= Int(Int32.max), let key32 = Int32(exactly: key) else {
            throw communicationError("split", "color must be in 0...\(Int32.max) and key an Int32, got color \(color) key \(key)")
        }
        var handle: MPI_Comm? = nil
        try check(cmpi_comm_split(world, Int32(color), key32, &handle), "split")
        guard let handle else { throw communicationError("split", "MPI_Comm_split returned no communicator") }
        var subRank: Int32 = 0, subSize: Int32 = 0
        let rankCode = MPI_Comm_rank(handle, &subRank), sizeCode = MPI_Comm_size(handle, &subSize)
        guard rankCode == cmpi_success(), sizeCode == cmpi_success() else {
            var owned: MPI_Comm? = handle
            _ = cmpi_comm_free(&owned)
            try check(rankCode, "split (MPI_Comm_rank)")
            try check(sizeCode, "split (MPI_Comm_size)")
            return self  // not reached: one of the codes is an error
        }
        let result = MPICommunicator(world: handle, rank: Int(subRank), size: Int(subSize), hostName: hostName, isSplit: true)
        result.maxElementsPerMessage = maxElementsPerMessage
        return result
    }

    // MARK: control

    public func barrier() throws {
        try begin("barrier")
        try check(MPI_Barrier(world), "barrier")
    }

    /// Long enough for rank 0's MPI_Abort to reach the other ranks (mpirun kills them within ~1 s).
    public var failureReportDelay: Double { 3 }

    public func abort(code: Int32) {
        fflush(nil)
        // MPI_COMM_WORLD even on a sub-communicator: the whole job ends, not only this rank's group.
        if cmpi_is_initialized() != 0 && cmpi_is_finalized() == 0, let everyone = cmpi_comm_world() {
            _ = MPI_Abort(everyone, code)
        }
        exit(code)
    }

    /// MPI calls after MPI_Finalize are undefined (they may crash rather than return an error code).
    private func begin(_ operation: String, root: Int? = nil) throws {
        let finished = Self.registry.lock.withLock { Self.registry.finished }
        guard !finished else { throw communicationError(operation, "MPI was already finalized by finish()") }
        if let root { try checkRoot(root, operation) }
    }

    /// Turns an MPI return code into PruneDistError(.communication) naming the operation and this rank.
    func check(_ code: Int32, _ operation: String) throws {
        guard code != cmpi_success() else { return }
        throw communicationError(operation, mpiErrorString(code))
    }
}

/// MPI's own text for an error code.
private func mpiErrorString(_ code: Int32) -> String {
    var text = [CChar](repeating: 0, count: 512)
    cmpi_error_string(code, &text, Int32(text.count))
    let message = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return message.isEmpty ? "MPI error code \(code)" : message
}
