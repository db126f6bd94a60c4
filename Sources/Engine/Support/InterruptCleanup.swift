import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What SIGINT and SIGTERM do while a command writes output: run `cleanup` (remove a folder that cannot be
/// resumed, or leave a resumable one), print `message` once on standard error, and exit 128 + signal (130 for
/// SIGINT, 143 for SIGTERM, the shell's convention). Without it the default action kills the process with
/// nothing said and, for `convert`, a hidden partial folder left behind.
///
/// The signal handler only writes the signal number to a pipe (all a handler may safely do); a thread
/// waiting on the pipe does the work. SA_RESTART keeps the interrupted work's system calls from failing
/// with EINTR in the moment before the process exits.
public final class InterruptCleanup: @unchecked Sendable {  // `installed` is only touched under `lock`
    private let lock = NSLock()
    private var installed = true

    private init() {}

    /// Handles SIGINT and SIGTERM until `uninstall()`. `message` and `cleanup` run on a helper thread.
    public static func install(message: @escaping @Sendable () -> String, cleanup: @escaping @Sendable () -> Void) -> InterruptCleanup {
        let handler = InterruptCleanup()
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return handler }  // no pipe: the default actions stay
        interruptPipeWriteEnd = fds[1]
        let readEnd = fds[0]
        Thread.detachNewThread {
            var signalNumber: Int32 = 0
            while read(readEnd, &signalNumber, MemoryLayout<Int32>.size) != MemoryLayout<Int32>.size {
                if errno != EINTR { return }
            }
            guard handler.isInstalled else { return }
            cleanup()
            let name = signalNumber == SIGINT ? "SIGINT" : "SIGTERM"
            FileHandle.standardError.write(Data("prune-dist: \(name): \(message())\n".utf8))
            _exit(128 + signalNumber)
        }
        for signalNumber in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = forwardSignalToPipe
            action.sa_flags = SA_RESTART
            sigemptyset(&action.sa_mask)
            sigaction(signalNumber, &action, nil)
        }
        return handler
    }

    /// Convenience for a fixed message.
    public static func install(message: String, cleanup: @escaping @Sendable () -> Void) -> InterruptCleanup {
        install(message: { message }, cleanup: cleanup)
    }

    private var isInstalled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return installed
    }

    /// Restores the default actions (the output is complete, or the command failed and cleaned up itself).
    public func uninstall() {
        lock.lock()
        defer { lock.unlock() }
        guard installed else { return }
        installed = false
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// The write end of the pipe the signal handler reports to (set before the handler is installed).
nonisolated(unsafe) private var interruptPipeWriteEnd: Int32 = -1

/// The signal handler: async-signal-safe, it only writes the signal number to the pipe.
private func forwardSignalToPipe(_ signalNumber: Int32) {
    var number = signalNumber
    _ = write(interruptPipeWriteEnd, &number, MemoryLayout<Int32>.size)
}
