import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What makes two prune runs the same run: a resumed run must continue exactly the run that was interrupted.
/// Each field is a readable string, so a refusal can name what changed.
struct RunFingerprint: Codable, Equatable, Sendable {
    var fields: [String: String]

    /// model: every safetensors file's name, size and a hash of its header, and config.json's hash;
    /// data: the calibration file's size and hash; options that change the result; the code version.
    /// (The number of ranks is not part of it: results equal across rank counts up to Double summation order.)
    static func compute(settings: PruneSettings, checkpoint: Checkpoint) throws -> RunFingerprint {
        var fields: [String: String] = [:]
        fields["code version"] = PruneDistVersion.string
        for file in checkpoint.files {
            let url = file.url
            let size = (try? FileManager.default.attributesOfItem(atPath: url.resolvingSymlinksInPath().path)[.size] as? Int) ?? -1
            fields["model file \(url.lastPathComponent)"] = "\(size) bytes, header \(try headerHash(url))"
        }
        let config = settings.model.appendingPathComponent("config.json")
        fields["model config.json"] = hashHex(try Data(contentsOf: config))
        if let calibration = settings.calibration {
            let data = try Data(contentsOf: calibration, options: .mappedIfSafe)
            fields["calibration data"] = "\(calibration.lastPathComponent), \(data.count) bytes, \(hashHex(data))"
        }
        fields["method"] = settings.method.rawValue
        fields["pattern"] = settings.pattern.description
        fields["samples × seqlen, seed"] = "\(settings.samples) × \(settings.seqlen), seed \(settings.seed)"
        fields["true-sequential"] = String(settings.trueSequential)
        fields["blocksize, percdamp"] = "\(settings.blocksize), \(settings.percdamp)"
        if settings.allocation != .uniform { fields["allocation"] = "\(settings.allocation.rawValue) \(settings.owl)" }
        if settings.method == .krp { fields["KRP rectification"] = "\(settings.krpRectification)" }
        if !settings.linearRules.isEmpty {
            fields["ignore, overrides"] = "\(settings.linearRules.ignore) \(settings.linearRules.overrides.map { "\($0.target)=\($0.pattern)" })"
        }
        fields["output dtype"] = settings.outputDType?.rawValue ?? "as input"
        return RunFingerprint(fields: fields)
    }

    /// The fields that differ, as "name: was A, now B", sorted; empty when equal.
    func differences(from earlier: RunFingerprint) -> [String] {
        Set(fields.keys).union(earlier.fields.keys).sorted().compactMap { key in
            let was = earlier.fields[key], now = fields[key]
            return was == now ? nil : "\(key): was \(was ?? "absent"), now \(now ?? "absent")"
        }
    }

    /// FNV-1a (64-bit) of a safetensors file's length prefix and JSON header.
    private static func headerHash(_ url: URL) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: url.path) else {
            throw PruneDistError(.io, "\(url.path): cannot open to fingerprint")
        }
        defer { try? handle.close() }
        let prefix = try handle.read(upToCount: 8) ?? Data()
        guard prefix.count == 8 else { throw PruneDistError(.format, "\(url.path): shorter than a safetensors header") }
        let length = prefix.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        let header = try handle.read(upToCount: Int(min(length, 100_000_000))) ?? Data()
        return hashHex(prefix + header)
    }
}

/// The journal of a resumable prune run, kept in its unfinished output folder (`.OUT.partial`):
/// `journal.jsonl` (the fingerprint, then one line per finished block) and `resume/block-NNNNN.safetensors`
/// (that block's pruned linears in Float32, which later blocks' inputs were computed with: the output may
/// be rounded to bf16, and replaying with rounded weights would not reproduce the run bit for bit).
///
/// A block is finished when its line is in the journal. The line is written only after the block's output
/// tensors and its resume file are on disk (fsync), so a crash at any moment leaves a journal whose last
/// line describes durable data; a torn last line is ignored.
final class RunJournal {
    struct Record: Codable {
        var block: Int
        /// Output tensors written (in OutputCheckpoint.tensorOrder) once this block was.
        var tensorsWritten: Int
    }

    private struct Header: Codable {
        var fingerprint: RunFingerprint
    }

    let directory: URL
    private var journalURL: URL { directory.appendingPathComponent(RunJournal.fileName) }
    private var resumeDirectory: URL { directory.appendingPathComponent("resume") }
    static let fileName = "journal.jsonl"

    /// Finished blocks of an earlier run, read by `open`.
    private(set) var records: [Record] = []

    private init(directory: URL) { self.directory = directory }

    /// Starts a new journal for a run (the folder is the output's fresh temporary folder).
    static func create(in directory: URL, fingerprint: RunFingerprint) throws -> RunJournal {
        let journal = RunJournal(directory: directory)
        try FileManager.default.createDirectory(at: journal.resumeDirectory, withIntermediateDirectories: true)
        let line = try JSONEncoder.sorted.encode(Header(fingerprint: fingerprint)) + Data("\n".utf8)
        try writeFileAtomically(line, to: journal.journalURL)
        return journal
    }

    /// The journal an interrupted run left in `directory`, or nil when there is none (nothing to resume).
    /// Throws, naming every difference, when it belongs to a run with another fingerprint.
    static func open(in directory: URL, expecting fingerprint: RunFingerprint) throws -> RunJournal? {
        let journal = RunJournal(directory: directory)
        guard let data = try? Data(contentsOf: journal.journalURL) else { return nil }
        let lines = data.split(separator: UInt8(ascii: "\n"))
        guard let first = lines.first, let header = try? JSONDecoder().decode(Header.self, from: Data(first)) else {
            throw PruneDistError(.format, "\(journal.journalURL.path): no run fingerprint on its first line; remove \(directory.path) to start afresh")
        }
        let differences = fingerprint.differences(from: header.fingerprint)
        guard differences.isEmpty else {
            throw PruneDistError(.argument, "cannot resume \(directory.path): it belongs to a different run (\(differences.joined(separator: "; "))); remove it or rerun without --resume to start afresh")
        }
        for line in lines.dropFirst() {
            guard let record = try? JSONDecoder().decode(Record.self, from: Data(line)) else { break }  // torn last line
            guard record.block == journal.records.count else { break }
            journal.records.append(record)
        }
        return journal
    }

    /// True when `directory` holds a journal with at least one finished block (worth keeping for --resume).
    static func hasFinishedBlocks(in directory: URL) -> Bool {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent(fileName)) else { return false }
        return data.split(separator: UInt8(ascii: "\n")).count > 1
    }

    private func resumeFile(_ block: Int) -> URL {
        resumeDirectory.appendingPathComponent(String(format: "block-%05d.safetensors", block))
    }

    /// Records block `layer` as finished: its pruned linears (Float32, durable) first, then the line.
    /// The output's tensors must already be durable (OutputCheckpoint.sync()).
    func blockFinished(_ layer: Int, linears: PerLinear<[Float]>, shapes: PerLinear<[Int]>, tensorsWritten: Int) throws {
        let entries = LlamaLinear.allCases.map { SafetensorsWriter.Entry(name: $0.rawValue, dtype: .f32, shape: shapes[$0]) }
        let writer = try SafetensorsWriter(url: resumeFile(layer), tensors: entries)
        for linear in LlamaLinear.allCases { try writer.append(linear.rawValue, floats: linears[linear]) }
        try writer.finish()
        try syncDirectory(resumeDirectory)
        let line = try JSONEncoder.sorted.encode(Record(block: layer, tensorsWritten: tensorsWritten)) + Data("\n".utf8)
        let fd = Glibc.open(journalURL.path, O_WRONLY | O_APPEND)
        guard fd >= 0 else { throw PruneDistError(.io, "\(journalURL.path): cannot append: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let n = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard n == line.count, fsync(fd) == 0 else {
            throw PruneDistError(.io, "\(journalURL.path): cannot record block \(layer): \(String(cString: strerror(errno)))")
        }
        records.append(Record(block: layer, tensorsWritten: tensorsWritten))
    }

    /// The pruned linears of a finished block, as the run computed them.
    func prunedLinears(_ layer: Int) throws -> PerLinear<[Float]> {
        let file = try SafetensorsFile(url: resumeFile(layer))
        return try PerLinear { try file.floats($0.rawValue) }
    }

    /// Runs `body` (rank 0 holds `lock`; other ranks pass nil). When it fails, the partial output is removed
    /// unless a rerun with --resume can use it: it must hold finished blocks, and the failure must be one a
    /// rerun can get past (I/O, communication, a killed rank, an interruption), since bad input (a NaN
    /// weight, a wrong shape) would be met again. Any failure of a --resume run keeps it (a refused
    /// fingerprint must not cost the interrupted run its files). A kept partial is named in the error, with
    /// its size and the command that continues it.
    static func cleaningUpAfterFailure<T>(lock: OutputLock?, resuming: Bool, resumeCommand: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            guard let lock else { throw error }
            guard keepsForResume(error, partial: lock.partial, resuming: resuming) else {
                lock.removePartialFolder()
                throw error
            }
            let kept = "the partial output is kept in \(lock.partial.path) (\(formatBytes(folderBytes(lock.partial)))); continue with: \(resumeCommand)"
            if let error = error as? PruneDistError { throw PruneDistError(error.kind, "\(error.message); \(kept)") }
            throw PruneDistError(.io, "\(error); \(kept)")
        }
    }

    /// Whether a failed run's partial folder is worth keeping for --resume.
    static func keepsForResume(_ error: Error, partial: URL, resuming: Bool) -> Bool {
        guard hasFinishedBlocks(in: partial) else { return false }
        guard let error = error as? PruneDistError, !resuming else { return true }
        return [.io, .communication, .interrupted].contains(error.kind)
    }

    /// Bytes held by the files under `folder` (what a partial output costs on disk).
    static func folderBytes(_ folder: URL) -> Int {
        let files = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.fileSizeKey])
        var total = 0
        while let url = files?.nextObject() as? URL {
            total += (try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
        }
        return total
    }

    /// Removes the journal and resume files (the run is complete; they must not end up in the output).
    func remove() {
        try? FileManager.default.removeItem(at: resumeDirectory)
        try? FileManager.default.removeItem(at: journalURL)
    }
}

private func syncDirectory(_ url: URL) throws {
    let fd = open(url.path, O_RDONLY)
    guard fd >= 0 else { throw PruneDistError(.io, "\(url.path): cannot open to sync") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw PruneDistError(.io, "\(url.path): fsync failed") }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
