import Foundation

/// A whole file mapped read-only into memory, unmapped when the last reference goes. Checkpoints are read through
/// it so that a tensor costs no copy until it is widened, and a 70B shard never has to fit in the heap.
public final class MappedFile: @unchecked Sendable {  // immutable after init; the mapping is read-only
    public let url: URL
    /// The file's bytes (an empty buffer for an empty file).
    public let bytes: UnsafeRawBufferPointer

    /// - kind: what the file should be ("safetensors file", "GGUF file"), for the error messages.
    public init(url: URL, kind: String) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw PruneDistError(.io, "\(path): cannot open \(kind): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw PruneDistError(.io, "\(path): cannot stat: \(String(cString: strerror(errno)))")
        }
        let size = Int(st.st_size)
        var mapping: UnsafeMutableRawPointer? = nil
        if size > 0 {  // mmap refuses a length of 0
            guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
                throw PruneDistError(.io, "\(path): cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
            }
            mapping = m
        }
        bytes = UnsafeRawBufferPointer(start: mapping, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}
