import ArgumentParser
import Engine
import Foundation
import Logging

/// Options every subcommand shares.
public struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: String = "info"

    @Option(name: .long, help: "Threads per rank (default: OPENBLAS_NUM_THREADS, else OpenBLAS's own choice, all cores). prune: N threads take whole calibration sequences (forward and statistics as one thread computes them) and the solve (a linear each, or bands of one linear's rows), so the checkpoint is the bits of one thread; elsewhere OpenBLAS threads, the same bits for a given rank count and thread count.")
    public var threads: Int?

    public init() {}

    /// Applies `--threads` to OpenBLAS. Called by `makeLogger`, which every command calls before any work.
    public func applyThreads() throws {
        guard let threads else { return }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        setBLASThreads(threads)
    }

    /// Bootstraps swift-log once per process, writing to standard error.
    public func makeLogger(_ label: String = "prune-dist") throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), got \(logLevel)")
        }
        try applyThreads()
        LoggingSetup.bootstrapOnce()
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }

    /// The logger of one rank in a job: only rank 0 reports progress, so a line is printed once, not once per rank;
    /// the other ranks still print warnings and errors.
    public func makeLogger(rank: Int) throws -> Logger {
        var logger = try makeLogger()
        if rank != 0 { logger.logLevel = max(logger.logLevel, .warning) }
        return logger
    }
}

enum LoggingSetup {
    private static let once: Void = { LoggingSystem.bootstrap(StreamLogHandler.standardError) }()
    static func bootstrapOnce() { _ = once }
}

/// Prints one line to standard output and flushes, so progress is visible through pipes and mpirun.
func printLine(_ text: String) {
    print(text)
    fflush(nil)  // all output streams; naming `stdout` is not concurrency-safe in Swift 6
}

/// A JSON object as one line with sorted keys (machine-readable output: the last line printed).
func jsonLine(_ object: [String: Any]) throws -> String {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

/// "1h02m", "3m05s", "12s": ETAs in progress lines and `plan`'s time estimates ("?" when unknown).
func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
