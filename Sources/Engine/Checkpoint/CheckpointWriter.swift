import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes the weights of a Hugging Face checkpoint: one `model.safetensors`, or shards
/// `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` once the total passes
/// `maxShardBytes`. Tensors are declared up front (so every header and the index are known) and then
/// appended one by one in that order; each shard is renamed into place when its last tensor is written,
/// and the index is written last.
public final class CheckpointWriter {
    public let directory: URL
    public let shardFileNames: [String]
    private let shards: [[SafetensorsWriter.Entry]]
    private let shardOfTensor: [String: Int]
    private var writers: [Int: SafetensorsWriter] = [:]
    private var remaining: [Int]
    private let metadata: [String: String]

    /// Default shard size: 5 GB, as transformers' `save_pretrained` uses.
    public static let defaultMaxShardBytes = 5_000_000_000

    /// Resumable writers keep their unfinished shard under a fixed hidden name (`.NAME.partial`) and leave it
    /// on disk when dropped, so a later process can continue it (see `resumeAfter`).
    private let resumable: Bool

    /// - resumable: unfinished shards keep a fixed name and survive this writer (a run that can be resumed)
    /// - resumeAfter: the first `resumeAfter` tensors were written by an earlier resumable writer into
    ///   `directory`: finished shards are kept, the unfinished one is continued after its last such tensor.
    public init(directory: URL, tensors: [SafetensorsWriter.Entry], maxShardBytes: Int = CheckpointWriter.defaultMaxShardBytes,
                metadata: [String: String] = ["format": "pt"], resumable: Bool = false, resumeAfter written: Int = 0) throws {
        self.directory = directory
        self.metadata = metadata
        self.resumable = resumable || written > 0
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Greedy in declaration order, as transformers does: a new shard starts when the next tensor
        // would push the current one past the limit.
        var shards: [[SafetensorsWriter.Entry]] = [[]]
        var size = 0
        for entry in tensors {
            if size + entry.byteCount > maxShardBytes && !shards[shards.count - 1].isEmpty {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(entry)
            size += entry.byteCount
        }
        self.shards = shards
        let n = shards.count
        shardFileNames = n == 1 ? ["model.safetensors"]
            : (1...n).map { String(format: "model-%05d-of-%05d.safetensors", $0, n) }
        var shardOfTensor: [String: Int] = [:]
        for (i, shard) in shards.enumerated() {
            for entry in shard { shardOfTensor[entry.name] = i }
        }
        self.shardOfTensor = shardOfTensor
        remaining = shards.map(\.count)
        var before = 0
        for (i, shard) in shards.enumerated() where written > before {
            let done = min(written - before, shard.count)
            let final = directory.appendingPathComponent(shardFileNames[i])
            if done == shard.count {
                guard FileManager.default.fileExists(atPath: final.path) else {
                    throw PruneDistError(.format, "\(final.path): finished shard missing; cannot resume after \(written) tensors")
                }
            } else {
                writers[i] = try SafetensorsWriter(url: final, tensors: shard, metadata: metadata,
                                                   temporaryURL: temporaryURL(shard: i), resumeAfter: done)
            }
            remaining[i] -= done
            before += shard.count
        }
    }

    deinit {
        if resumable { for writer in writers.values { writer.abandonKeepingFile() } }
    }

    private func temporaryURL(shard: Int) -> URL? {
        resumable ? directory.appendingPathComponent(".\(shardFileNames[shard]).partial") : nil
    }

    /// Makes everything appended so far durable: the open shard's bytes and the folder's renames.
    public func sync() throws {
        for writer in writers.values { try writer.sync() }
        let fd = open(directory.path, O_RDONLY)
        guard fd >= 0 else { throw PruneDistError(.io, "\(directory.path): cannot open to sync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw PruneDistError(.io, "\(directory.path): fsync failed: \(String(cString: strerror(errno)))") }
    }

    private func writer(for name: String) throws -> SafetensorsWriter {
        guard let shard = shardOfTensor[name] else {
            throw PruneDistError(.argument, "\(directory.path): tensor \(name) was not declared for this checkpoint")
        }
        if let w = writers[shard] { return w }
        let w = try SafetensorsWriter(url: directory.appendingPathComponent(shardFileNames[shard]),
                                      tensors: shards[shard], metadata: metadata, temporaryURL: temporaryURL(shard: shard))
        writers[shard] = w
        return w
    }

    public func append(_ name: String, floats: [Float]) throws {
        try writer(for: name).append(name, floats: floats)
        try tensorWritten(name)
    }

    public func append(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        try writer(for: name).append(name, bytes: bytes)
        try tensorWritten(name)
    }

    private func tensorWritten(_ name: String) throws {
        let shard = shardOfTensor[name]!
        remaining[shard] -= 1
        if remaining[shard] == 0 {
            try writers[shard]!.finish()
            writers[shard] = nil
        }
    }

    /// Checks every tensor was written and writes the index (sharded output only).
    public func finish() throws {
        if let unfinished = remaining.firstIndex(where: { $0 > 0 }) {
            throw PruneDistError(.argument, "\(directory.path): \(shardFileNames[unfinished]) is missing \(remaining[unfinished]) tensors")
        }
        guard shards.count > 1 else { return }
        var weightMap: [String: String] = [:]
        for (name, shard) in shardOfTensor { weightMap[name] = shardFileNames[shard] }
        let totalSize = shards.joined().reduce(0) { $0 + $1.byteCount }
        let index: [String: Any] = ["metadata": ["total_size": totalSize], "weight_map": weightMap]
        let data = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
        try writeFileAtomically(data, to: directory.appendingPathComponent("model.safetensors.index.json"))
    }
}
