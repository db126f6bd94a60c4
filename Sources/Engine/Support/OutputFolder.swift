import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The rules every command that writes a model folder (`prune`, `convert`) follows so that no file a user
/// already has is ever deleted or overwritten:
/// - `--out` must be absent or an empty folder, and must not be, hold, or sit inside any input;
/// - everything is written into `.OUT.partial` beside it, which holds an exclusive lock (`flock`) while a
///   run writes, so a second run on the same `--out` stops at once instead of deleting the first one's files;
/// - the finished folder is moved into place by `rename(2)`, which cannot replace a non-empty folder.
public enum OutputFolder {
    /// A command-line path with the option it was given as, so messages can name the user's words.
    public struct Argument: Sendable {
        public let option: String
        public let url: URL
        public init(_ option: String, _ url: URL) {
            self.option = option
            self.url = url
        }
    }

    /// Refuses an `out` that exists as anything but an empty folder, or that is, holds or sits inside one of
    /// `inputs` (a model folder, a calibration file, a report), before any work is done.
    public static func checkFresh(_ out: Argument, inputs: [Argument]) throws {
        try checkSeparate(out, from: inputs)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out.url.path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw PruneDistError(.argument, "\(out.option) \(out.url.path): exists and is not a folder (\(fileKind(out.url))); it would be lost. Choose a new folder name")
        }
        let contents = (try? FileManager.default.contentsOfDirectory(atPath: out.url.path)) ?? []
        guard contents.isEmpty else {
            throw PruneDistError(.argument, "\(out.option) \(out.url.path): folder exists and is not empty (\(contents.count) entries, e.g. \(contents.sorted()[0])); remove it or choose another \(out.option)")
        }
    }

    /// Refuses a path that is, holds or sits inside one of `others` (compared after resolving symbolic links).
    public static func checkSeparate(_ path: Argument, from others: [Argument]) throws {
        let resolved = resolvedPath(path.url)
        for other in others {
            let otherResolved = resolvedPath(other.url)
            let relation: String?
            if resolved == otherResolved {
                relation = "is the same path as"
            } else if resolved.hasPrefix(otherResolved + "/") {
                relation = "is inside"
            } else if otherResolved.hasPrefix(resolved + "/") {
                relation = "contains"
            } else {
                relation = nil
            }
            if let relation {
                throw PruneDistError(.argument, "\(path.option) \(path.url.path) \(relation) \(other.option) \(other.url.path); they must not overlap, or writing one could destroy the other. Choose a path outside it")
            }
        }
    }

    /// The absolute path with symbolic links of its existing part resolved (the rest appended as given).
    static func resolvedPath(_ url: URL) -> String {
        var existing = url.standardizedFileURL
        var rest: [String] = []
        while !FileManager.default.fileExists(atPath: existing.path), existing.path != "/" {
            rest.insert(existing.lastPathComponent, at: 0)
            existing = existing.deletingLastPathComponent()
        }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let base = realpath(existing.path, &buffer) != nil ? String(cString: buffer) : existing.path
        return ([base == "/" ? "" : base] + rest).joined(separator: "/")
    }

    /// "a regular file", "a FIFO", … for messages about a path that is not what was expected.
    public static func fileKind(_ url: URL) -> String {
        var status = stat()
        guard stat(url.path, &status) == 0 else { return "unreadable: \(String(cString: strerror(errno)))" }
        switch status.st_mode & S_IFMT {
        case S_IFREG: return "a regular file of \(status.st_size) bytes"
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        default: return "a special file"
        }
    }

    /// Where a run writing `out` keeps its unfinished output.
    public static func partialFolder(for out: URL) -> URL {
        out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).partial")
    }

    /// Moves the finished `partial` folder to `out` with rename(2): an absent or empty `out` is replaced, a
    /// non-empty one (something written there during the run) is not, and the error says where the result is.
    public static func moveIntoPlace(_ partial: URL, out: URL, option: String = "--out") throws {
        guard rename(partial.path, out.path) == 0 else {
            let reason = String(cString: strerror(errno))
            throw PruneDistError(.io, "\(option) \(out.path): cannot move the finished output into place: \(reason) (was something written there during the run?); the finished output is kept in \(partial.path)")
        }
        // The lock file moved with the folder; it is not part of the output.
        unlink(out.appendingPathComponent(OutputLock.fileName).path)
    }

    /// Creates `url` and its missing parents, naming `option` and the system's reason on failure.
    public static func create(_ url: URL, option: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw PruneDistError(.io, "\(option): cannot create folder \(url.path): \(fileKind(url)) is in the way")
            }
            return
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path { try create(parent, option: option) }
        guard mkdir(url.path, 0o755) == 0 || errno == EEXIST else {
            throw PruneDistError(.io, "\(option): cannot create folder \(url.path): \(String(cString: strerror(errno)))")
        }
    }
}

/// An exclusive lock on an output's partial folder, held while a run writes it: `flock` on
/// `.prune-dist.lock`, which holds the owner's pid and host so a refused run can say who has it. The kernel
/// releases the lock when the process ends however it ends, so a crashed run never blocks the next one.
public final class OutputLock: @unchecked Sendable {  // immutable after init
    public static let fileName = ".prune-dist.lock"
    public let partial: URL
    private let descriptor: Int32

    private init(partial: URL, descriptor: Int32) {
        self.partial = partial
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// Creates `partial` if needed and locks it; throws `.busy` at once, naming the holder, when another
    /// run holds it. Nothing in the folder is touched before the lock is held.
    public static func acquire(partial: URL, out: URL, option: String = "--out") throws -> OutputLock {
        try OutputFolder.create(partial, option: option)
        let path = partial.appendingPathComponent(fileName).path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw PruneDistError(.io, "\(option) \(out.path): cannot create the lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw PruneDistError(.busy, "another prune-dist run (\(holder.isEmpty ? "pid and host unknown" : holder)) is writing \(out.path) (lock \(path)); wait for it to finish or choose another \(option)")
        }
        let owner = Data("pid \(getpid()), host \(currentHostName())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = owner.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
        return OutputLock(partial: partial, descriptor: fd)
    }

    /// Removes everything in the partial folder but the lock: a fresh run must not mix in an earlier one's files.
    public func clearPartialFolder() throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: partial.path)) ?? []
        for name in names where name != OutputLock.fileName {
            try FileManager.default.removeItem(at: partial.appendingPathComponent(name))
        }
    }

    /// Removes the partial folder (a failed run that cannot be resumed) while the lock is still held.
    public func removePartialFolder() {
        try? FileManager.default.removeItem(at: partial)
    }
}

/// This machine's host name, as lock files and fingerprints report it.
public func currentHostName() -> String {
    var name = [CChar](repeating: 0, count: 256)
    gethostname(&name, name.count)
    return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
