/// Wanda (Sun et al.): score S_ij = |W_ij|·‖X_j‖, compared within each output row; no update.
/// Unstructured: each row loses its int(columns·p) lowest scores (stable ascending order, as the
/// reference's `torch.sort(stable=True)`). N:M: the n lowest of every m consecutive inputs per row.
/// weight: [rows, columns] row-major; shape = [rows, columns]
/// columnNormsSquared: [columns], Σ_t X[t,j]² (any positive scale gives the same mask)
public func pruneWanda(weight: [Float], shape: [Int], columnNormsSquared: [Double],
                       pattern: SparsityPattern) throws -> PruneResult {
    let (rows, columns) = try checkedLinearShape(weight: weight, shape: shape, function: "pruneWanda")
    try pattern.validate(columns: columns, function: "pruneWanda")
    guard columnNormsSquared.count == columns else {
        throw PruneDistError(.shape,
            "pruneWanda: columnNormsSquared must have one value per input column (\(columns)), got \(columnNormsSquared.count)")
    }
    if let bad = columnNormsSquared.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
        throw PruneDistError(columnNormsSquared[bad].isFinite ? .data : .nonFinite,
            "pruneWanda: columnNormsSquared[\(bad)] is \(columnNormsSquared[bad]); a sum of squares must be finite and ≥ 0")
    }
    let columnNorms = columnNormsSquared.map { $0.squareRoot() }
    var scores = [Double](repeating: 0, count: weight.count)
    for row in 0..<rows {
        for column in 0..<columns {
            scores[row * columns + column] = Double(abs(weight[row * columns + column])) * columnNorms[column]
        }
    }
    var pruned = weight
    switch pattern {
    case let .unstructured(fraction):
        let perRow = Int(Double(columns) * fraction)
        guard perRow > 0 else { break }
        var sorted = [Double](), positions = [Int]()
        for row in 0..<rows {
            let start = row * columns
            lowestPositions(perRow, of: scores[start..<(start + columns)], sorted: &sorted, into: &positions)
            for j in positions { pruned[start + j] = 0 }
        }
    case let .nOfM(n, m):
        zeroSmallestInGroups(&pruned, scores: scores, rows: rows, columns: columns, n: n, m: m)
    }
    return PruneResult(weight: pruned)
}
