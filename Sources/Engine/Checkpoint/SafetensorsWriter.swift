import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes one safetensors file as a stream: the header is computed from the declared tensors up front,
/// then each tensor's bytes are appended in the declared order, so a model is never held whole in memory.
/// The file is written under a temporary name, flushed to disk and renamed by `finish()`; a writer that
/// is dropped unfinished removes its temporary file, so no half-written file ever carries the final name.
///
/// The output is what the Python `safetensors` package expects: tensors contiguous in declaration order
/// starting at offset 0, the JSON header padded with spaces to a multiple of 8 bytes.
public final class SafetensorsWriter {
    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public init(name: String, dtype: DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
        public var byteCount: Int { shape.reduce(1, *) * dtype.size }
    }

    public let url: URL
    public let entries: [Entry]
    private let temporaryURL: URL
    private var fd: Int32
    private var next = 0
    private var finished = false

    /// - temporaryURL: where the file is written until `finish()` (default: a hidden name with this process's id)
    /// - resumeAfter: continue a file an earlier process left at `temporaryURL` after its first `resumeAfter`
    ///   tensors: its header must be the one these tensors give; anything after those tensors is cut off.
    public init(url: URL, tensors: [Entry], metadata: [String: String] = [:], temporaryURL: URL? = nil,
                resumeAfter written: Int = 0) throws {
        self.url = url
        self.entries = tensors
        var seen = Set<String>()
        for entry in tensors {
            guard entry.name != "__metadata__", seen.insert(entry.name).inserted else {
                throw PruneDistError(.argument, "\(url.path): tensor name \(entry.name) is declared twice or reserved")
            }
        }
        self.temporaryURL = temporaryURL ?? url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        var header = Array(SafetensorsWriter.headerJSON(tensors, metadata: metadata).utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var length = UInt64(header.count).littleEndian
        if written > 0 {
            precondition(written <= tensors.count)
            fd = open(self.temporaryURL.path, O_RDWR)
            guard fd >= 0 else {
                throw PruneDistError(.io, "\(self.temporaryURL.path): cannot reopen to resume: \(String(cString: strerror(errno)))")
            }
            let prefix = withUnsafeBytes(of: &length) { Array($0) } + header
            var found = [UInt8](repeating: 0, count: prefix.count)
            let n = pread(fd, &found, prefix.count, 0)
            guard n == prefix.count, found == prefix else {
                close(fd)
                throw PruneDistError(.format, "\(self.temporaryURL.path): its header is not the one this run declares; cannot resume into it")
            }
            let end = prefix.count + tensors[0..<written].reduce(0) { $0 + $1.byteCount }
            var status = stat()
            guard fstat(fd, &status) == 0, Int(status.st_size) >= end else {
                close(fd)
                throw PruneDistError(.format, "\(self.temporaryURL.path): holds fewer bytes than its first \(written) tensors need (\(end))")
            }
            guard ftruncate(fd, off_t(end)) == 0, lseek(fd, off_t(end), SEEK_SET) == off_t(end) else {
                close(fd)
                throw PruneDistError(.io, "\(self.temporaryURL.path): cannot cut back to \(end) bytes: \(String(cString: strerror(errno)))")
            }
            next = written
            return
        }
        fd = open(self.temporaryURL.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw PruneDistError(.io, "\(self.temporaryURL.path): cannot create: \(String(cString: strerror(errno)))")
        }
        try withUnsafeBytes(of: &length) { try writeAll($0) }
        try header.withUnsafeBytes { try writeAll($0) }
    }

    /// Flushes what has been appended so far to disk (a resumable run's block boundary).
    public func sync() throws {
        guard fsync(fd) == 0 else {
            throw PruneDistError(.io, "\(temporaryURL.path): fsync failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Closes the file without removing it, so a later process can resume it.
    public func abandonKeepingFile() {
        guard !finished else { return }
        close(fd)
        finished = true
    }

    public convenience init(url: URL, tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]) throws {
        try self.init(url: url, tensors: tensors.map { Entry(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: metadata)
    }

    deinit {
        if !finished {
            close(fd)
            unlink(temporaryURL.path)
        }
    }

    static func headerJSON(_ tensors: [Entry], metadata: [String: String]) -> String {
        var parts: [String] = []
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(fields.joined(separator: ","))}")
        }
        var offset = 0
        for t in tensors {
            let end = offset + t.byteCount
            parts.append("\(jsonString(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// Appends the next declared tensor's bytes (already in its dtype, little-endian).
    public func append(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        let entry = try nextEntry(name)
        guard bytes.count == entry.byteCount else {
            throw PruneDistError(.shape, "\(url.path): tensor \(name): \(entry.shape) × \(entry.dtype.rawValue) needs \(entry.byteCount) bytes, got \(bytes.count)")
        }
        try writeAll(bytes)
        next += 1
    }

    /// Appends the next declared tensor from Float32 values, converted to its declared dtype.
    public func append(_ name: String, floats: [Float]) throws {
        let entry = try nextEntry(name)
        guard floats.count * entry.dtype.size == entry.byteCount else {
            throw PruneDistError(.shape, "\(url.path): tensor \(name): \(entry.shape) holds \(entry.byteCount / entry.dtype.size) values, got \(floats.count)")
        }
        if entry.dtype == .f32 {
            try floats.withUnsafeBytes { try append(name, bytes: $0) }
        } else {
            try encodeChecked(floats, as: entry.dtype, tensor: name).withUnsafeBytes { try append(name, bytes: $0) }
        }
    }

    private func nextEntry(_ name: String) throws -> Entry {
        guard next < entries.count else {
            throw PruneDistError(.argument, "\(url.path): tensor \(name) appended after all \(entries.count) declared tensors")
        }
        guard entries[next].name == name else {
            throw PruneDistError(.argument, "\(url.path): expected tensor \(entries[next].name) next, got \(name)")
        }
        return entries[next]
    }

    /// Flushes the file to disk and gives it its final name.
    public func finish() throws {
        guard next == entries.count else {
            throw PruneDistError(.argument, "\(url.path): finished after \(next) of \(entries.count) declared tensors (next: \(entries[next].name))")
        }
        guard fsync(fd) == 0 else {
            throw PruneDistError(.io, "\(temporaryURL.path): fsync failed: \(String(cString: strerror(errno)))")
        }
        close(fd)
        finished = true
        guard rename(temporaryURL.path, url.path) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temporaryURL.path)
            throw PruneDistError(.io, "\(url.path): cannot rename the finished file into place: \(message)")
        }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw PruneDistError(.io, "\(temporaryURL.path): write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

/// JSON string literal with the escapes JSON requires.
func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// `floats` as the bytes of `dtype`, refusing a finite value that narrowing turns into ±infinity (it would pass
/// for a weight and ruin the model silently).
public func encodeChecked(_ floats: [Float], as dtype: DType, tensor name: String) throws -> [UInt8] {
    let converted = encode(floats, as: dtype)
    guard dtype.size == 2, dtype.isWeightType else { return converted }
    let infinity: UInt16 = dtype == .f16 ? 0x7C00 : 0x7F80  // exponent all ones, mantissa zero (sign masked off)
    let overflow = converted.withUnsafeBytes { bytes in
        floats.indices.first { i in
            bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian & 0x7FFF == infinity && floats[i].isFinite
        }
    }
    if let element = overflow {
        let hint = dtype == .f16 ? "; F16 holds magnitudes up to 65504: use --dtype bf16 (F32's range) or f32" : ""
        throw PruneDistError(.nonFinite, "tensor \(name): element \(element) (\(floats[element])) becomes infinite in \(dtype.rawValue)\(hint)")
    }
    return converted
}

/// Writes `data` to `url` atomically: a temporary file in the same folder, flushed, then renamed.
public func writeFileAtomically(_ data: Data, to url: URL) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
    do {
        try data.write(to: temporary)
        let fd = open(temporary.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(temporary.path, url.path) == 0 else {
            throw PruneDistError(.io, "\(url.path): cannot rename into place: \(String(cString: strerror(errno)))")
        }
    } catch let error as PruneDistError {
        unlink(temporary.path)
        throw error
    } catch {
        unlink(temporary.path)
        throw PruneDistError(.io, "\(url.path): cannot write: \(error)")
    }
}
