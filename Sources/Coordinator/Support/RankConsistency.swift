import Engine
import Foundation
import Worker

/// Every rank of a job must run the same command on the same files: ranks started with other options, or
/// reading a different copy of the model (same shapes, other weights) would otherwise finish with rc 0 and a
/// mixed checkpoint. At start every rank's run fingerprint is all-gathered; rank 0 compares and aborts the
/// job on the first mismatch, naming both values (the other ranks wait in their next collective until then,
/// so the failure is reported once).
enum RankConsistency {
    /// Options whose value is a path: a rank may see the same file under another mount point, so paths are
    /// compared through the files' sizes and modification times, not spelled out.
    static let pathOptions: Set<String> = ["--model", "--calib", "--pool", "--eval-text", "--eval-data", "--eval-attack-data",
                                           "--eval-attack-log", "--eval-attack-wordnet", "--report", "--log-level"]
    /// Path options that take several values (`average --models A B …`): every value up to the next option.
    static let pathListOptions: Set<String> = ["--models"]

    /// Readable lines: the command line without path values ("--sparsity 0.5"), then each file's size and mtime.
    static func fingerprint(arguments: [String], files: [URL]) -> [String] {
        commandLineLines(arguments) + files.map(fileLine)
    }

    /// One line per option with its values, path-valued options left out (the program name too).
    private static func commandLineLines(_ arguments: [String]) -> [String] {
        var lines: [String] = []
        var skipNext = false, skipValues = false
        for argument in arguments.dropFirst() {
            if skipNext { skipNext = false; continue }
            if skipValues && !argument.hasPrefix("-") { continue }
            skipValues = false
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if pathOptions.contains(name) {
                skipNext = !argument.contains("=")
                continue
            }
            if pathListOptions.contains(name) {
                skipValues = true
                continue
            }
            // An option starts a line, its values join it: "--sparsity 0.5".
            if argument.hasPrefix("-") || lines.isEmpty || !lines[lines.count - 1].hasPrefix("-") {
                lines.append(argument)
            } else {
                lines[lines.count - 1] += " \(argument)"
            }
        }
        return lines
    }

    /// "file NAME: SIZE bytes, modified TIME", the time in UTC to the millisecond (readable in the message).
    private static func fileLine(_ file: URL) -> String {
        let attributes = try? FileManager.default.attributesOfItem(atPath: file.resolvingSymlinksInPath().path)
        let size = (attributes?[.size] as? Int).map(String.init) ?? "absent"
        let modified = (attributes?[.modificationDate] as? Date).map(utcTimestamp) ?? "-"
        return "file \(file.lastPathComponent): \(size) bytes, modified \(modified)"
    }

    /// The files of a model folder a run reads: config.json and the safetensors (and their index).
    static func modelFiles(_ model: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: model.path)) ?? []
        return names.filter { $0 == "config.json" || $0.hasSuffix(".safetensors") || $0 == "model.safetensors.index.json" }
            .sorted().map { model.appendingPathComponent($0) }
    }

    /// All-gathers the fingerprints; on rank 0, throws naming the first rank and line that differ.
    static func check(_ fingerprint: [String], comm: Communicator) throws {
        guard comm.size > 1 else { return }
        let gathered = try comm.allgather(try JSONEncoder().encode(fingerprint))
        guard comm.rank == 0 else { return }
        for (rank, data) in gathered.enumerated().dropFirst() {
            let other = (try? JSONDecoder().decode([String].self, from: data)) ?? []
            guard other != fingerprint else { continue }
            let index = fingerprint.indices.first { $0 >= other.count || fingerprint[$0] != other[$0] } ?? fingerprint.count
            let mine = index < fingerprint.count ? fingerprint[index] : "nothing"
            let theirs = index < other.count ? other[index] : "nothing"
            throw PruneDistError(.argument, "ranks disagree: rank 0 has \"\(mine)\" but rank \(rank) has \"\(theirs)\"; every rank must run the same command on the same files")
        }
    }
}

extension PruneCommand {
    /// This rank's run fingerprint: its command line and (when it reads them) the model and data files.
    func rankFingerprint() -> [String] {
        // With --weights broadcast only rank 0 reads the files; other ranks may not even see them.
        let files = weights == .broadcast ? [] : RankConsistency.modelFiles(URL(fileURLWithPath: model))
            + [calib, adapruner.pool, recipe].compactMap { $0 }.map { URL(fileURLWithPath: $0) }
        return RankConsistency.fingerprint(arguments: CommandLine.arguments, files: files)
    }
}

/// "2026-12-03T18:55:47.757Z" with the C library's gmtime: Foundation's ISO8601DateFormatter loads ICU's data,
/// some 10 MB of resident memory on every rank, for one line of a message.
func utcTimestamp(_ date: Date) -> String {
    var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
    let milliseconds = Int((date.timeIntervalSince1970 - Double(seconds)) * 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                  Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), milliseconds)
}
