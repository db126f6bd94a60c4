import Engine
import Foundation
import Worker

/// How `prune` holds its output while it runs: rank 0 takes the output's lock before any work (a second run
/// on the same --out stops at once), SIGINT/SIGTERM say where the partial output is and how to continue it,
/// and a failure removes the partial output unless --resume can use it (RunJournal.cleaningUpAfterFailure).
extension PruneCommand {
    /// Rank 0's lock on the output's partial folder; nil on other ranks.
    func lockOutput(rank: Int) throws -> OutputLock? {
        guard rank == 0 else { return nil }
        let outURL = URL(fileURLWithPath: out)
        return try OutputLock.acquire(partial: OutputFolder.partialFolder(for: outURL), out: outURL)
    }

    /// The exact command that continues this run after an interruption (under mpirun with the same rank count).
    func resumeCommand(ranks: Int) -> String {
        let arguments = CommandLine.arguments + (resume ? [] : ["--resume"])
        return (ranks > 1 ? "mpirun -n \(ranks) " : "") + arguments.map(shellQuoted).joined(separator: " ")
    }

    /// On rank 0, SIGINT/SIGTERM print what is left and exit 130/143. A resumable run keeps its partial folder
    /// (its finished blocks are durable); one with nothing to resume (structured methods, no block finished
    /// yet) removes it.
    func handleInterruptions(lock: OutputLock?, ranks: Int) -> InterruptCleanup? {
        guard let lock else { return nil }
        let command = resumeCommand(ranks: ranks)
        let resumable = !method.isStructured
        return InterruptCleanup.install(message: {
            guard resumable, RunJournal.hasFinishedBlocks(in: lock.partial) else {
                return "interrupted before any block was finished; removed \(lock.partial.path)"
            }
            return "interrupted; the partial output is in \(lock.partial.path) (\(formatBytes(RunJournal.folderBytes(lock.partial)))); continue with: \(command)"
        }, cleanup: {
            if !resumable || !RunJournal.hasFinishedBlocks(in: lock.partial) { lock.removePartialFolder() }
        })
    }
}

/// `text` as one shell word (single-quoted unless it is plainly safe).
func shellQuoted(_ text: String) -> String {
    let safe = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%")
    if !text.isEmpty, text.unicodeScalars.allSatisfy(safe.contains) { return text }
    return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
