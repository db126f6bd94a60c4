import Foundation

/// Which weights of a linear layer a solver zeroes.
public enum SparsityPattern: Equatable, Sendable, CustomStringConvertible {
    /// `fraction` of the weights, chosen freely (per row or per block, depending on the method).
    case unstructured(fraction: Double)
    /// `n` zeros in every `m` consecutive input columns of each row (2:4, 4:8).
    case nOfM(n: Int, m: Int)

    /// The fraction of weights zeroed.
    public var sparsity: Double {
        switch self {
        case let .unstructured(fraction): return fraction
        case let .nOfM(n, m): return Double(n) / Double(m)
        }
    }

    public var description: String {
        switch self {
        case let .unstructured(fraction): return String(format: "unstructured %g%%", fraction * 100)
        case let .nOfM(n, m): return "\(n):\(m)"
        }
    }

    /// The pattern named by the command line: exactly one of `--sparsity S` (unstructured) or
    /// `--pattern N:M`. Whether M divides a layer's input width is checked by the solvers.
    public static func parse(sparsity: Double?, pattern: String?) throws -> SparsityPattern {
        try resolve(sparsity: sparsity, pattern: pattern.map(parse(nOfM:)))
    }

    /// `--pattern N:M` as given on the command line, checked (0 < N < M).
    public static func parse(nOfM text: String) throws -> SparsityPattern {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let n = Int(parts[0]), let m = Int(parts[1]) else {
            throw PruneDistError(.argument, "--pattern must be N:M with integers 0 < N < M (e.g. 2:4), got \"\(text)\"")
        }
        let result = SparsityPattern.nOfM(n: n, m: m)
        try result.validate()
        return result
    }

    /// Exactly one of `--sparsity S` and an already parsed `--pattern N:M`.
    public static func resolve(sparsity: Double?, pattern: SparsityPattern?) throws -> SparsityPattern {
        switch (sparsity, pattern) {
        case (nil, nil):
            throw PruneDistError(.argument, "no sparsity given: pass --sparsity S (0 ≤ S < 1) or --pattern N:M")
        case let (.some(s), .some(p)):
            throw PruneDistError(.argument, "both --sparsity \(s) and --pattern \(p) given; pass only one")
        case let (.some(s), nil):
            let result = SparsityPattern.unstructured(fraction: s)
            try result.validate()
            return result
        case let (nil, .some(p)):
            return p
        }
    }

    /// Throws `.argument` for a pattern no layer could satisfy.
    func validate() throws {
        switch self {
        case let .unstructured(fraction):
            guard fraction.isFinite, fraction >= 0, fraction < 1 else {
                throw PruneDistError(.argument, "sparsity must be in [0, 1), got \(fraction)")
            }
        case let .nOfM(n, m):
            guard n > 0, m > n else {
                throw PruneDistError(.argument, "N:M pattern needs 0 < N < M, got \(n):\(m)")
            }
        }
    }

    /// Throws `.argument` unless the pattern fits a layer with `columns` inputs.
    func validate(columns: Int, function: String) throws {
        try validate()
        if case let .nOfM(n, m) = self, columns % m != 0 {
            throw PruneDistError(.argument,
                "\(function): pattern \(n):\(m) needs the input width to be a multiple of \(m), but the weight has \(columns) columns")
        }
    }
}

/// What a solver returns for one linear layer.
public struct PruneResult: Sendable {
    /// weight: [rows, columns] row-major, pruned (and updated by the OBS methods)
    public var weight: [Float]
    /// Squared output error per token of the original weight with the final mask applied and no
    /// update, tr((W − W⊙K) H (W − W⊙K)ᵀ) with K the kept weights; nil when no Hessian is known.
    public var errorBefore: Double?
    /// Squared output error per token after the solver, tr((W − Ŵ) H (W − Ŵ)ᵀ) (KRP: against its
    /// target, see `pruneKRP`); nil when no Hessian is known.
    public var errorAfter: Double?
    /// Absolute damping added to the Hessian diagonal for the OBS solve (0 if none).
    public var damping: Double
    /// KRP's ridge λ.
    public var ridge: Double?
    /// How many times a Cholesky factorisation failed and its damping was multiplied by 10.
    public var redamped: Int

    public init(weight: [Float], errorBefore: Double? = nil, errorAfter: Double? = nil, damping: Double = 0,
                ridge: Double? = nil, redamped: Int = 0) {
        self.weight = weight
        self.errorBefore = errorBefore
        self.errorAfter = errorAfter
        self.damping = damping
        self.ridge = ridge
        self.redamped = redamped
    }
}

/// Checks a weight against its shape and returns (rows, columns).
/// weight: [rows, columns] row-major
func checkedLinearShape(weight: [Float], shape: [Int], function: String) throws -> (rows: Int, columns: Int) {
    guard shape.count == 2, shape[0] > 0, shape[1] > 0 else {
        throw PruneDistError(.shape, "\(function): weight shape must be [rows, columns] with both positive, got \(shape)")
    }
    guard weight.count == shape[0] * shape[1] else {
        throw PruneDistError(.shape, "\(function): weight of shape \(shape) needs \(shape[0] * shape[1]) values, got \(weight.count)")
    }
    if let bad = weight.firstIndex(where: { !$0.isFinite }) {
        throw PruneDistError(.nonFinite,
            "\(function): weight [\(bad / shape[1]), \(bad % shape[1])] is \(weight[bad]); the solvers need finite weights")
    }
    return (shape[0], shape[1])
}

/// Checks a square input statistic (Hessian or cross term).
/// matrix: [columns, columns] row-major
func checkSquareStatistic(_ matrix: [Double], columns: Int, name: String, function: String) throws {
    guard matrix.count == columns * columns else {
        throw PruneDistError(.shape,
            "\(function): \(name) must be [\(columns), \(columns)] (\(columns * columns) values) for a weight with \(columns) columns, got \(matrix.count) values")
    }
    if let bad = matrix.firstIndex(where: { !$0.isFinite }) {
        throw PruneDistError(.nonFinite, "\(function): \(name) [\(bad / columns), \(bad % columns)] is \(matrix[bad])")
    }
}

/// Positions (0..<scores.count) of the `count` lowest scores, ties going to the lower position: the
/// first `count` of a stable ascending sort, as the references' `torch.sort(stable=True)`.
/// `sorted` and `positions` are scratch buffers reused between calls (no allocation per row or group).
/// scores: [k] → positions: [count], ascending
func lowestPositions(_ count: Int, of scores: ArraySlice<Double>, sorted: inout [Double], into positions: inout [Int]) {
    positions.removeAll(keepingCapacity: true)
    guard count > 0 else { return }
    sorted.removeAll(keepingCapacity: true)
    sorted.append(contentsOf: scores)
    sorted.sort()
    let threshold = sorted[count - 1]
    var tiesToTake = 0
    for score in sorted[..<count] where score == threshold { tiesToTake += 1 }
    for (position, score) in zip(0..., scores) {
        if score < threshold {
            positions.append(position)
        } else if score == threshold, tiesToTake > 0 {
            tiesToTake -= 1
            positions.append(position)
        }
    }
}
