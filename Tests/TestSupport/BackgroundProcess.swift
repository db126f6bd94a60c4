import Foundation

/// A child process the test keeps running while it does something else (kills a rank, cuts a link),
/// with its output in files and a bounded wait.
public final class BackgroundProcess {
    public let process = Process()
    private let outURL: URL
    private let errURL: URL
    public private(set) var started = Date()

    public init(_ program: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = program
        process.arguments = arguments
        process.environment = PruneDistBinary.childEnvironment(environment)
        outURL = FileManager.default.temporaryDirectory.appendingPathComponent("pd-bg-out-\(UUID().uuidString)")
        errURL = FileManager.default.temporaryDirectory.appendingPathComponent("pd-bg-err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        started = Date()
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }

    public var stdout: String { String(decoding: (try? Data(contentsOf: outURL)) ?? Data(), as: UTF8.self) }
    public var stderr: String { String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self) }

    /// Waits up to `seconds` for the process to end; on timeout sends SIGTERM (mpirun cleans its job up on
    /// it), waits 10 s more, and returns nil.
    public func wait(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { usleep(100_000) }
        if process.isRunning {
            process.terminate()
            let grace = Date().addingTimeInterval(10)
            while process.isRunning, Date() < grace { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Polls `condition` every 0.1 s for up to `seconds`; true when it held.
    public static func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }
}
