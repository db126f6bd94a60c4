import ArgumentParser
import Engine
import Foundation

/// Bounds on numbers given on the command line, checked when the command line is parsed: every size a run
/// allocates is a product of these and of config.json's sizes (LlamaConfig.Limits), and with both bounded no
/// product overflows an Int, so a hostile value is refused by name instead of trapping later.
enum CommandLineLimits {
    /// Calibration sequences (--samples): far more than any published recipe (128 to 1024).
    static let samples = 1...1_048_576
    /// Tokens per sequence (--seqlen, --eval-seqlen, --objective-seqlen): the longest LLaMA contexts (128 Ki).
    static let seqlen = 2...131_072
    /// MPI ranks (plan --ranks): MPI counts ranks in an Int32; a million is beyond any cluster we plan for.
    static let ranks = 1...1_048_576
    /// comm-check --megabytes: the buffer is allocated on every rank.
    static let megabytes = 0...65_536
    /// Small counts (trials, windows, block sizes, …).
    static let count = 1...1_048_576

    /// Calibration tokens in all (--samples × --seqlen): 2^32, so activation sizes (tokens × widths × 4 bytes)
    /// stay far below Int.max even at the largest widths config.json may declare.
    static let calibrationTokens = 1 << 32

    /// Refuses a calibration set whose token count is beyond `calibrationTokens` (each factor checked first).
    static func checkCalibration(samples: Int, seqlen: Int) throws {
        try check(samples, "--samples", in: CommandLineLimits.samples)
        try check(seqlen, "--seqlen", in: CommandLineLimits.seqlen)
        guard samples * seqlen <= calibrationTokens else {
            throw ValidationError("--samples × --seqlen is \(samples) × \(seqlen) = \(samples * seqlen) tokens, beyond the limit of \(calibrationTokens)")
        }
    }

    /// Refuses `value` outside `range`, naming the option, the value and the limit.
    static func check(_ value: Int, _ option: String, in range: ClosedRange<Int>) throws {
        guard range.contains(value) else {
            let kind = range.lowerBound == 1 ? "a positive integer" : range.lowerBound == 0 ? "a non-negative integer" : "an integer of at least \(range.lowerBound)"
            throw ValidationError("\(option) must be \(kind) no larger than \(range.upperBound), got \(value)")
        }
    }

    /// Refuses a real number that is not finite or lies outside (lower, upper], naming the option.
    static func check(_ value: Double, _ option: String, above lower: Double, atMost upper: Double) throws {
        guard value.isFinite, value > lower, value <= upper else {
            throw ValidationError("\(option) must be a finite number above \(lower) and at most \(upper), got \(value)")
        }
    }
}

/// A PruneDistError raised while checking the command line, as the usage error ArgumentParser reports
/// (exit code 64, the message as is).
func asValidationError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PruneDistError {
        throw ValidationError(error.message)
    }
}
