import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Hidden hooks the fault-tolerance tests use to make one rank fail at a chosen block, the way a crashed
/// or killed node would (no MPI_Finalize, no cleanup). Read from the environment so the command line
/// users see stays clean; inert unless the variables are set.
///
/// - PRUNE_DIST_FAULT_RANK=r and PRUNE_DIST_FAULT_BLOCK=k: rank r exits with status 75 when block k starts.
/// - PRUNE_DIST_FAULT_PAUSE=1 (with the two above): instead of exiting, rank r writes its process id to
///   PRUNE_DIST_FAULT_PIDFILE and sleeps, so a test can `kill -9` it from outside.
enum FaultInjection {
    static func atBlockStart(rank: Int, host: String, layer: Int) {
        let env = ProcessInfo.processInfo.environment
        guard let r = env["PRUNE_DIST_FAULT_RANK"].flatMap(Int.init), r == rank,
              let k = env["PRUNE_DIST_FAULT_BLOCK"].flatMap(Int.init), k == layer else { return }
        if env["PRUNE_DIST_FAULT_PAUSE"] == "1" {
            if let pidFile = env["PRUNE_DIST_FAULT_PIDFILE"] {
                try? "\(getpid())\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
            }
            // A handled signal (SIGINT: InterruptCleanup) ends sleep() early; keep waiting as a busy rank would.
            let deadline = Date().addingTimeInterval(600)
            while Date() < deadline { sleep(1) }
        }
        FileHandle.standardError.write(Data("prune-dist: rank \(rank) on \(host): injected fault, exiting at block \(layer)\n".utf8))
        _exit(75)
    }
}
