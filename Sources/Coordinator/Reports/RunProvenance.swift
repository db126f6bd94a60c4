import Engine
import Foundation

/// Where a run's result came from, recorded in every run report and in the output's config.json
/// (`prune_dist`): enough to know later what a folder is and to run it again.
public struct RunProvenance: Codable, Sendable {
    public struct FileRecord: Codable, Sendable {
        public var path: String
        public var bytes: Int
        public var sha256: String
    }

    /// The arguments as the process received them, and the same as one shell-quoted line.
    public var arguments: [String]
    public var commandLine: String
    public var version: String
    /// The source tree's commit (see BuildInfo), "unknown" when it cannot be found.
    public var gitCommit: String
    /// Whether tracked files differed from the commit when the run started (nil: not known).
    public var gitDirty: Bool?
    /// ISO 8601, UTC, when the run started.
    public var date: String
    /// The distinct hosts of the ranks, in rank order.
    public var hosts: [String]
    public var ranks: Int
    public var calibration: FileRecord?
    /// The input checkpoint's storage dtype and the output's.
    public var inputDType: String
    public var outputDType: String
    public var seed: Int
    /// Every setting of the run (defaults included), by name, as text.
    public var options: [String: String]

    enum CodingKeys: String, CodingKey {
        case arguments, version, date, hosts, ranks, calibration, seed, options
        case commandLine = "command_line", gitCommit = "git_commit", gitDirty = "git_dirty"
        case inputDType = "input_dtype", outputDType = "output_dtype"
    }

    /// - settings: the run's resolved settings (every stored property is recorded, optionals unwrapped)
    /// - hosts: each rank's host name, in rank order
    static func make(settings: Any, calibration: URL?, seed: Int, inputDType: DType, outputDType: DType,
                     hosts: [String], start: Date) throws -> RunProvenance {
        let arguments = CommandLine.arguments
        var distinct: [String] = []
        for host in hosts where !distinct.contains(host) { distinct.append(host) }
        let build = BuildInfo.current
        return RunProvenance(arguments: arguments, commandLine: arguments.map(shellQuoted).joined(separator: " "),
                             version: PruneDistVersion.string, gitCommit: build.commit, gitDirty: build.dirty,
                             date: iso8601(start), hosts: distinct, ranks: hosts.count,
                             calibration: try calibration.map { url in
                                 let (hex, bytes) = try SHA256.file(url)
                                 return FileRecord(path: url.standardizedFileURL.path, bytes: bytes, sha256: hex)
                             },
                             inputDType: inputDType.torchName, outputDType: outputDType.torchName, seed: seed,
                             options: optionValues(settings))
    }

    /// Stored properties of `settings` as text: optionals unwrapped ("none" when nil), URLs as paths; the
    /// output lock (a run-time handle, not a setting) and the recipe (embedded whole beside) left out.
    static func optionValues(_ settings: Any) -> [String: String] {
        var values: [String: String] = [:]
        for child in Mirror(reflecting: settings).children {
            guard let label = child.label, label != "outputLock", label != "recipe" else { continue }
            values[snakeCase(label)] = text(child.value)
        }
        return values
    }

    private static func text(_ value: Any) -> String {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return "none" }
            return text(wrapped)
        }
        if let url = value as? URL { return url.path }
        if let range = value as? ClosedRange<Int> { return "\(range.lowerBound)...\(range.upperBound)" }
        if mirror.displayStyle == .struct, !(value is CustomStringConvertible) {
            let fields = mirror.children.compactMap { child in child.label.map { "\(snakeCase($0))=\(text(child.value))" } }
            return fields.joined(separator: ", ")
        }
        return String(describing: value)
    }

    static func snakeCase(_ name: String) -> String {
        // outputDType → output_dtype, reportURL → report_url: a run of capitals is one word.
        var out = ""
        var previousWasLower = false
        for character in name {
            if character.isUppercase {
                if previousWasLower { out += "_" }
                out += character.lowercased()
                previousWasLower = false
            } else {
                out.append(character)
                previousWasLower = true
            }
        }
        return out
    }

    static func shellQuoted(_ argument: String) -> String {
        let safe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%")
        if !argument.isEmpty, argument.unicodeScalars.allSatisfy({ safe.contains($0) }) { return argument }
        return "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func iso8601(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// The entries as a JSON object (for config.json's `prune_dist`).
    func jsonObject() throws -> [String: Any] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try JSONSerialization.jsonObject(with: encoder.encode(self)) as? [String: Any] ?? [:]
    }
}

/// The commit prune-dist was built from. The source tree's location is fixed when the binary is compiled
/// (`#filePath`); its git metadata is read when asked: `git rev-parse HEAD` (and `git status` for local
/// changes) when git is installed, else `.git/HEAD` and the refs it names read directly (worktrees and packed
/// refs included). A binary whose source tree is gone reports "unknown".
public struct BuildInfo: Sendable {
    public var commit: String
    public var dirty: Bool?

    public static let current: BuildInfo = read(root: sourceRoot)

    /// Sources/Coordinator/RunProvenance.swift → the package root.
    static var sourceRoot: URL {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }

    static func read(root: URL) -> BuildInfo {
        if let commit = git(["rev-parse", "HEAD"], in: root), commit.count == 40 {
            let status = git(["status", "--porcelain", "--untracked-files=no"], in: root)
            return BuildInfo(commit: commit, dirty: status.map { !$0.isEmpty })
        }
        return BuildInfo(commit: readHead(root: root) ?? "unknown", dirty: nil)
    }

    private static func git(_ arguments: [String], in root: URL) -> String? {
        for candidate in ["/usr/bin/git", "/usr/local/bin/git", "/bin/git"] where FileManager.default.isExecutableFile(atPath: candidate) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: candidate)
            process.arguments = ["-C", root.path] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { return nil }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return nil
    }

    /// HEAD without git: `.git` may be a folder or a `gitdir:` file (worktrees, whose refs live in the common dir).
    static func readHead(root: URL) -> String? {
        let dotGit = root.appendingPathComponent(".git")
        var gitDir = dotGit
        if let text = try? String(contentsOf: dotGit, encoding: .utf8), text.hasPrefix("gitdir:") {
            let path = text.dropFirst("gitdir:".count).trimmingCharacters(in: .whitespacesAndNewlines)
            gitDir = path.hasPrefix("/") ? URL(fileURLWithPath: path) : root.appendingPathComponent(path)
        }
        var commonDir = gitDir
        if let text = try? String(contentsOf: gitDir.appendingPathComponent("commondir"), encoding: .utf8) {
            let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
            commonDir = path.hasPrefix("/") ? URL(fileURLWithPath: path) : gitDir.appendingPathComponent(path).standardizedFileURL
        }
        guard let head = try? String(contentsOf: gitDir.appendingPathComponent("HEAD"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
        guard head.hasPrefix("ref:") else { return head.count == 40 ? head : nil }
        let ref = head.dropFirst("ref:".count).trimmingCharacters(in: .whitespaces)
        for dir in [gitDir, commonDir] {
            if let value = try? String(contentsOf: dir.appendingPathComponent(ref), encoding: .utf8) {
                return value.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        if let packed = try? String(contentsOf: commonDir.appendingPathComponent("packed-refs"), encoding: .utf8) {
            for line in packed.split(separator: "\n") where line.hasSuffix(" " + ref) {
                return String(line.prefix(40))
            }
        }
        return nil
    }
}
