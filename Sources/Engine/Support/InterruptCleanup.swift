import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What SIGINT and SIGTERM do while a command writes output: run `cleanup` (remove a folder that cannot be
/// resumed, or leave a resumable one), print `message` once on standard error, and exit 128 + signal (130 for
/// SIGINT, 143 for SIGTERM, the shell's convention). Without it the default action kills the process with
/// nothing said and, for `convert`, a hidden partial folder left behind.
public final class InterruptCleanup: @unchecked Sendable {  // the sources are only touched under `lock`
    private var sources: [DispatchSourceSignal] = []
    private let lock = NSLock()

    private init() {}

    /// Handles SIGINT and SIGTERM until `uninstall()`. `cleanup` runs on a dispatch queue, not in a signal handler.
    public static func install(message: @escaping @Sendable () -> String, cleanup: @escaping @Sendable () -> Void) -> InterruptCleanup {
        let handler = InterruptCleanup()
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)  // delivered to the dispatch source instead of killing the process
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                cleanup()
                let name = signalNumber == SIGINT ? "SIGINT" : "SIGTERM"
                FileHandle.standardError.write(Data("prune-dist: \(name): \(message())\n".utf8))
                _exit(128 + signalNumber)
            }
            source.resume()
            handler.sources.append(source)
        }
        return handler
    }

    /// Convenience for a fixed message.
    public static func install(message: String, cleanup: @escaping @Sendable () -> Void) -> InterruptCleanup {
        install(message: { message }, cleanup: cleanup)
    }

    /// Restores the default actions (the output is complete, or the command failed and cleaned up itself).
    public func uninstall() {
        lock.lock()
        defer { lock.unlock() }
        guard !sources.isEmpty else { return }
        sources.forEach { $0.cancel() }
        sources = []
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
