import COpenBLAS

/// Optimal Brain Compression, row by row (Frantar & Alistarh 2022; the solver of KRP's authors): each
/// output row keeps its own inverse Hessian and removes, one at a time, the weight whose removal costs least,
/// w_j²/[H⁻¹]_jj, updating the remaining weights and the inverse exactly. O(rows · zeros · columns²): meant for
/// small layers and as the oracle the SparseGPT solver is tested against.
/// weight: [rows, columns] row-major; shape = [rows, columns]
/// hessian: [columns, columns] Double, Σ x xᵀ / N (scale-invariant)
/// Unstructured: every row gets int(columns · fraction) zeros (the authors' code prunes one fewer and counts a
/// bias column; both are fixed here). N:M: a weight is a candidate while its group of m has fewer than n zeros.
public func pruneOBC(weight: [Float], shape: [Int], hessian: [Double], pattern: SparsityPattern,
                     percdamp: Double = 0.01) throws -> PruneResult {
    let function = "pruneOBC"
    let (rows, columns) = try checkedLinearShape(weight: weight, shape: shape, function: function)
    try pattern.validate(columns: columns, function: function)
    try checkSquareStatistic(hessian, columns: columns, name: "hessian", function: function)
    try checkSolverOptions(blocksize: 1, percdamp: percdamp, function: function)

    // (H + δI)⁻¹ once; every row starts from a copy. Dead inputs count as H_ii = 1 and their weights are zeroed.
    var updated = weight.map(Double.init)
    var damped = hessian
    var diagonalSum = 0.0
    for i in 0..<columns {
        if hessian[i * columns + i] == 0 {
            damped[i * columns + i] = 1
            for row in 0..<rows { updated[row * columns + i] = 0 }
        }
        diagonalSum += damped[i * columns + i]
    }
    var damping = percdamp * diagonalSum / Double(columns)
    var redamped = 0
    var inverse: [Double]
    while true {
        inverse = damped
        for i in 0..<columns { inverse[i * columns + i] += damping }
        if choleskyUpper(&inverse, n: columns), inverseFromCholeskyUpper(&inverse, n: columns) { break }
        redamped += 1
        guard redamped <= maximumRedampings else {
            throw PruneDistError(.numerics, "\(function): the [\(columns), \(columns)] Hessian stayed singular after \(redamped) re-dampings (last \(damping))")
        }
        damping = damping > 0 ? damping * 10 : fallbackDamping(hessian, n: columns)
    }

    var quota = 0, groupWidth = columns, groupQuota = columns
    switch pattern {
    case let .unstructured(fraction): quota = Int(Double(columns) * fraction)
    case let .nOfM(n, m): quota = columns / m * n; groupWidth = m; groupQuota = n
    }
    var mask = [Bool](repeating: false, count: rows * columns)
    var rowInverse = [Double](repeating: 0, count: columns * columns)
    var pivotRow = [Double](repeating: 0, count: columns)
    var groupZeros = [Int](repeating: 0, count: columns / groupWidth)
    for row in 0..<rows where quota > 0 {
        rowInverse.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: inverse, count: columns * columns) }
        for g in groupZeros.indices { groupZeros[g] = 0 }
        let base = row * columns
        for _ in 0..<quota {
            var best = -1, bestCost = Double.infinity
            for j in 0..<columns where !mask[base + j] && groupZeros[j / groupWidth] < groupQuota {
                let w = updated[base + j]
                let cost = w * w / rowInverse[j * columns + j]
                if cost < bestCost { bestCost = cost; best = j }
            }
            let pivot = rowInverse[best * columns + best]
            for k in 0..<columns { pivotRow[k] = rowInverse[best * columns + k] }
            // w ← w − (w_j / [H⁻¹]_jj)·[H⁻¹]_j,: ; then drop j from the inverse (rank-one downdate).
            let step = updated[base + best] / pivot
            updated.withUnsafeMutableBufferPointer { w in
                cblas_daxpy(Int32(columns), -step, pivotRow, 1, w.baseAddress! + base, 1)
            }
            cblas_dger(CblasRowMajor, Int32(columns), Int32(columns), -1 / pivot, pivotRow, 1, pivotRow, 1,
                       &rowInverse, Int32(columns))
            updated[base + best] = 0
            mask[base + best] = true
            groupZeros[best / groupWidth] += 1
            // A removed coordinate keeps a unit diagonal so it is never picked (masked) nor divides by zero.
            rowInverse[best * columns + best] = 1
        }
        for j in 0..<columns where mask[base + j] { updated[base + j] = 0 }
    }
    let errors = try outputErrors(original: weight, mask: mask, updated: updated, target: nil,
                              rows: rows, columns: columns, hessian: hessian)
    return PruneResult(weight: updated.map(Float.init), errorBefore: errors.masked, errorAfter: errors.updated,
                       damping: damping, redamped: redamped)
}
