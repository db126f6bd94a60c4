import Engine
import Foundation

/// Everything under some folders, hidden entries included: each path with its kind, size, modification time
/// and (for files) a hash of its bytes. Two snapshots are equal when nothing was created, removed or changed,
/// which is how the hostile-input tests prove that a refused command touched nothing.
public struct DirectorySnapshot: Equatable, CustomStringConvertible {
    public let entries: [String: String]

    public init(_ roots: [URL]) {
        var entries: [String: String] = [:]
        for root in roots {
            entries[root.path] = DirectorySnapshot.describe(root)
            guard let walker = FileManager.default.enumerator(atPath: root.path) else { continue }
            while let relative = walker.nextObject() as? String {
                let url = root.appendingPathComponent(relative)
                entries[url.path] = DirectorySnapshot.describe(url)
            }
        }
        self.entries = entries
    }

    /// "file 123 bytes, mtime …, hash …", "folder", "fifo", or "absent".
    private static func describe(_ url: URL) -> String {
        var status = stat()
        guard lstat(url.path, &status) == 0 else { return "absent" }
        let mtime = "\(status.st_mtim.tv_sec).\(status.st_mtim.tv_nsec)"
        switch status.st_mode & S_IFMT {
        case S_IFREG:
            let data = (try? Data(contentsOf: url)) ?? Data()
            return "file \(status.st_size) bytes, mtime \(mtime), fnv \(hashHex(data))"
        case S_IFDIR: return "folder"
        case S_IFIFO: return "fifo"
        default: return "other, mtime \(mtime)"
        }
    }

    /// The paths that differ from `earlier`, as "path: before → after".
    public func changes(since earlier: DirectorySnapshot) -> [String] {
        Set(entries.keys).union(earlier.entries.keys).sorted().compactMap { path in
            let before = earlier.entries[path] ?? "absent", after = entries[path] ?? "absent"
            return before == after ? nil : "\(path): \(before) → \(after)"
        }
    }

    public var description: String { entries.keys.sorted().map { "\($0): \(entries[$0]!)" }.joined(separator: "\n") }
}
