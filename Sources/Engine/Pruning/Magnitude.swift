/// Magnitude pruning as in wanda's `prune_magnitude`: no calibration data, no update.
/// Unstructured: one threshold over the whole matrix, t = sorted(|W|)[int(numel·p)], and every
/// |w| ≤ t is zeroed, so one weight more than int(numel·p) is pruned (the reference's "≤"; kept so
/// that results match it). Sparsity 0 prunes nothing (the reference would still zero the smallest).
/// N:M: the n smallest |w| of every m consecutive inputs of each row.
/// weight: [rows, columns] row-major; shape = [rows, columns]
public func pruneMagnitude(weight: [Float], shape: [Int], pattern: SparsityPattern) throws -> PruneResult {
    let (rows, columns) = try checkedLinearShape(weight: weight, shape: shape, function: "pruneMagnitude")
    try pattern.validate(columns: columns, function: "pruneMagnitude")
    var pruned = weight
    switch pattern {
    case let .unstructured(fraction):
        guard fraction > 0 else { break }
        var magnitudes = weight.map { abs($0) }
        magnitudes.sort()
        let threshold = magnitudes[Int(Double(weight.count) * fraction)]
        for i in pruned.indices where abs(pruned[i]) <= threshold { pruned[i] = 0 }
    case let .nOfM(n, m):
        let magnitudes = weight.map { Double(abs($0)) }
        zeroSmallestInGroups(&pruned, scores: magnitudes, rows: rows, columns: columns, n: n, m: m)
    }
    return PruneResult(weight: pruned)
}

/// Zeroes, in each row, the n lowest-scoring weights of every m consecutive columns.
/// weight, scores: [rows, columns] row-major
func zeroSmallestInGroups(_ weight: inout [Float], scores: [Double], rows: Int, columns: Int, n: Int, m: Int) {
    var sorted = [Double](), positions = [Int]()
    for row in 0..<rows {
        for group in stride(from: 0, to: columns, by: m) {
            let start = row * columns + group
            lowestPositions(n, of: scores[start..<(start + m)], sorted: &sorted, into: &positions)
            for j in positions { weight[start + j] = 0 }
        }
    }
}
