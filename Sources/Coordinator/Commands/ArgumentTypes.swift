import ArgumentParser
import Engine

/// Option values parsed once, by ArgumentParser, into the types the runs take; a bad value is a usage error
/// (exit 64) naming the option.
extension DType {
    /// `--dtype`: a weight type, bf16, f16 or f32 (torch's names are accepted too).
    static func commandLineWeightType(_ text: String) throws -> DType {
        guard let dtype = DType(torchName: text), dtype.isWeightType else {
            throw ValidationError("--dtype must be bf16, f16 or f32, got \(text)")
        }
        return dtype
    }
}

extension SparsityPattern {
    /// `--pattern N:M`.
    static func commandLinePattern(_ text: String) throws -> SparsityPattern {
        do {
            return try SparsityPattern.parse(nOfM: text)
        } catch let error as PruneDistError {
            throw ValidationError(error.message)
        }
    }
}
