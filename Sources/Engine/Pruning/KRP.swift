/// KRP (Li et al., "Towards Robust Pruning"), at LLaMA scale (the choices made for it: docs/decisions.md): the
/// target is the dense layer's output Y = W X, fed by the pruned model's inputs X̂.
///
/// 1. Rectified dense weight W*ᵀ = (Ĥ + λI)⁻¹ (X̂ᵀX/N) Wᵀ, ridge least squares of Y on X̂.
///    λ = r·mean(diag Ĥ) with r = 1e-4, 1e-3, …, 1: the first r whose W* stays close to W,
///    mean((W − W*)²) < 1, is kept (r = 1 when none does). A failed factorisation moves to the next,
///    10× larger ridge and counts in `redamped`.
///    Unlike the authors' code, each attempt adds its ridge to the undamped Ĥ: their in-place
///    additions pile up (Ĥ + Σλ), and their pruning step then used that piled-up Ĥ. Here the ridge
///    only regularises W*; the pruning below uses Ĥ with SparseGPT's own damping. There is no bias
///    column (LLaMA linears have none), so the authors' bias off-by-one in the quota does not arise.
/// 2. SparseGPT OBS pruning of W* under Ĥ (instead of the paper's exact row-by-row OBC, too slow at
///    LLaMA widths). With λ → 0, ‖Y − ŴX̂‖² = ‖(Ŵ − W*)X̂‖² + const, so this prunes for the dense target.
///
/// weight: [rows, columns] row-major, the dense W; shape = [rows, columns]
/// hessian: [columns, columns] Ĥ = X̂ᵀX̂/N of the pruned model's inputs
/// crossTerm: [columns, columns] X̂ᵀX/N (row index = pruned-input feature, column = dense-input feature), or the
///   same statistic already multiplied by W (`KRPCrossTerm.outputs`)
/// denseHessian: [columns, columns] XᵀX/N of the dense inputs, optional. With it, errorBefore/errorAfter
///   are the per-token errors against the dense target, ‖Y − (W⊙K)X̂‖²/N and ‖Y − ŴX̂‖²/N. Without it
///   they are measured against the rectified output W*X̂ (the same minus the unreachable ‖Y − W*X̂‖²/N).
/// band: when several ranks solve the linear together, this rank's rows: `weight` and `shape` are then the band's
///   [band.rows.count, columns], the result is the band's rows; the ridge choice and the errors are the whole linear's.
public func pruneKRP(weight: [Float], shape: [Int], hessian: [Double], crossTerm: [Double], pattern: SparsityPattern,
                     blocksize: Int = 128, percdamp: Double = 0.01, denseHessian: [Double]? = nil,
                     rectification rule: KRPRectification = .legacy, band: RowBand? = nil) throws -> PruneResult {
    try pruneKRP(weight: weight, shape: shape, hessian: hessian, cross: .inputs(crossTerm), pattern: pattern, blocksize: blocksize,
                 percdamp: percdamp, denseHessian: denseHessian, rectification: rule, band: band)
}

/// How the pruned inputs co-vary with the dense target, as KRP reads it.
public enum KRPCrossTerm: Sendable {
    /// C = X̂ᵀX/N, [columns, columns]: the pruned inputs against the dense inputs.
    case inputs([Double])
    /// W Cᵀ = YᵀX̂/N, [rows, columns] (the band's rows when solving a band): the dense outputs Y = X Wᵀ against the
    /// pruned inputs. The refit only ever needs W Cᵀ, and for a linear with fewer outputs than inputs (down_proj:
    /// 576 against 1 536 in SmolLM2) collecting it costs rows/columns of C's GEMM.
    case outputs([Double])
}

/// `pruneKRP` with the cross term in either form.
public func pruneKRP(weight: [Float], shape: [Int], hessian: [Double], cross: KRPCrossTerm, pattern: SparsityPattern,
                     blocksize: Int = 128, percdamp: Double = 0.01, denseHessian: [Double]? = nil,
                     rectification rule: KRPRectification = .legacy, band: RowBand? = nil) throws -> PruneResult {
    let function = "pruneKRP"
    let (rows, columns) = try checkedLinearShape(weight: weight, shape: shape, function: function)
    try pattern.validate(columns: columns, function: function)
    try checkSquareStatistic(hessian, columns: columns, name: "hessian (pruned inputs)", function: function)
    switch cross {
    case let .inputs(crossTerm):
        try checkSquareStatistic(crossTerm, columns: columns, name: "crossTerm (pruned × dense inputs)", function: function)
    case let .outputs(projected):
        guard projected.count == rows * columns else {
            throw PruneDistError(.shape, "\(function): cross term against the dense outputs has \(projected.count) values, expected [\(rows), \(columns)] = \(rows * columns)")
        }
    }
    if let denseHessian {
        try checkSquareStatistic(denseHessian, columns: columns, name: "denseHessian", function: function)
    }
    try checkSolverOptions(blocksize: blocksize, percdamp: percdamp, function: function)
    let band = try checkedBand(band, rows: rows, function: function)

    let original = weight.map(Double.init)
    let rectification: (weight: [Double], ridge: Double, redamped: Int)
    switch rule {
    case .legacy:
        rectification = try rectifiedWeight(original, rows: rows, columns: columns, hessian: hessian,
                                            cross: cross, function: function, band: band)
    case let .towardDense(ratio, correction, perInput):
        rectification = try shrunkRectifiedWeight(original, rows: rows, columns: columns, hessian: hessian,
                                                  cross: cross, ridgeRatio: ratio, correction: correction,
                                                  perInputRidge: perInput, function: function)
    }
    var updated = rectification.weight
    let solve = try sparseGPTSolve(weight: &updated, rows: rows, columns: columns, hessian: hessian,
                                   pattern: pattern, blocksize: blocksize, percdamp: percdamp, function: function, band: band)
    let errorBefore: Double, errorAfter: Double
    if let denseHessian {
        (errorBefore, errorAfter) = try denseTargetErrors(original: weight, mask: solve.mask, updated: updated,
                                                          rows: rows, columns: columns, hessian: hessian,
                                                          cross: cross, denseHessian: denseHessian, band: band)
    } else {
        (errorBefore, errorAfter) = try solve.outputErrors(original: weight, updated: updated, target: rectification.weight,
                                                           band: band)
    }
    return PruneResult(weight: updated.map(Float.init), errorBefore: errorBefore, errorAfter: errorAfter,
                       damping: solve.damping, ridge: rectification.ridge,
                       redamped: rectification.redamped + solve.redamped)
}

/// W* with W*ᵀ = (Ĥ + λI)⁻¹ C Wᵀ and the adaptive λ of `pruneKRP`, computed row by row as W* = W Cᵀ (Ĥ + λI)⁻¹.
/// weight: [rows, columns] dense W (the band's rows); hessian: [columns, columns]; cross: C or W Cᵀ
/// Returns weight: [rows, columns] W*.
func rectifiedWeight(_ weight: [Double], rows: Int, columns: Int, hessian: [Double], cross: KRPCrossTerm,
                     function: String, band: RowBand? = nil) throws -> (weight: [Double], ridge: Double, redamped: Int) {
    let band = band ?? .alone(rows: rows)
    var diagonalSum = 0.0
    for i in 0..<columns { diagonalSum += hessian[i * columns + i] }
    // All inputs dead: any ridge gives W* = 0; scale it by 1 rather than by a zero diagonal.
    let scale = diagonalSum > 0 ? diagonalSum / Double(columns) : 1
    var rightHandSides: [Double]                                          // [rows, columns] W Cᵀ = (C Wᵀ)ᵀ
    switch cross {
    case let .inputs(crossTerm):
        rightHandSides = [Double](repeating: 0, count: rows * columns)
        dgemm(.none, .transpose, m: rows, n: columns, k: columns, weight, lda: columns, crossTerm, ldb: columns,
              &rightHandSides, ldc: columns)
    case let .outputs(projected):
        rightHandSides = projected
    }

    let acceptedRatios = 5                       // r = 1e-4 … 1
    var failures = 0
    var ridge = 0.0
    for attempt in 0..<(acceptedRatios + maximumRedampings) {
        ridge = scale * 1e-4 * pow10(attempt)
        var factor = hessian
        for i in 0..<columns { factor[i * columns + i] += ridge }
        if choleskyUpper(&factor, n: columns) {
            var rectified = rightHandSides                                 // [rows, columns] W*
            solveRowsWithCholeskyUpper(factor, n: columns, &rectified, rows: rows)
            var rowChanges = [Double](repeating: 0, count: rows)
            for row in 0..<rows {
                var squaredChange = 0.0
                for column in 0..<columns {
                    let change = rectified[row * columns + column] - weight[row * columns + column]
                    squaredChange += change * change
                }
                rowChanges[row] = squaredChange
            }
            let meanSquaredChange = try band.sumOverRows(rowChanges)[0] / Double(band.totalRows * columns)
            if meanSquaredChange < 1 || (attempt >= acceptedRatios - 1 && meanSquaredChange.isFinite) {
                return (rectified, ridge, failures)
            }
        } else {
            failures += 1
        }
        if failures > maximumRedampings { break }
    }
    throw PruneDistError(.numerics,
        "\(function): no usable ridge for Ĥ + λI [\(columns), \(columns)]: \(failures) Cholesky failures, the last with λ = \(ridge); the pruned-input statistics are unusable")
}

private func pow10(_ exponent: Int) -> Double {
    var result = 1.0
    for _ in 0..<exponent { result *= 10 }
    return result
}

/// ‖Y − A X̂‖²/N = tr(W H Wᵀ) − 2 tr(A C Wᵀ) + tr(A Ĥ Aᵀ) for the candidates A = W⊙K (the original
/// with the final mask applied) and A = Ŵ, from the three statistics. Rows go in chunks, the two
/// candidates stacked so each product is one dgemm.
/// original: [rows, columns] W; mask: [rows, columns], true = pruned; updated: [rows, columns] Ŵ
/// hessian (Ĥ), denseHessian (H): [columns, columns]; cross: C = X̂ᵀX/N, or W Cᵀ (then tr(A C Wᵀ) = Σ A ⊙ W Cᵀ)
func denseTargetErrors(original: [Float], mask: [Bool], updated: [Double], rows: Int, columns: Int,
                       hessian: [Double], cross: KRPCrossTerm, denseHessian: [Double],
                       chunkRows requestedChunkRows: Int? = nil, band: RowBand? = nil) throws -> (masked: Double, updated: Double) {
    let chunkRows = min(rows, requestedChunkRows ?? errorChunkRows(columns: columns))
    var dense = [Double](repeating: 0, count: chunkRows * columns)              // [chunk, columns] W
    var denseProjected = dense                                                  // [chunk, columns] W H
    var candidates = [Double](repeating: 0, count: 2 * chunkRows * columns)     // [2·chunk, columns] A
    var crossProjected = candidates                                             // [2·chunk, columns] A C
    var candidateProjected = candidates                                         // [2·chunk, columns] A Ĥ
    var rowErrors = [Double](repeating: 0, count: rows * 2)                     // [rows, 2] masked, updated
    for firstRow in stride(from: 0, to: rows, by: chunkRows) {
        let count = min(chunkRows, rows - firstRow)
        let chunk = count * columns
        for k in 0..<chunk {
            let i = firstRow * columns + k
            dense[k] = Double(original[i])
            candidates[k] = mask[i] ? 0 : dense[k]
            candidates[chunk + k] = updated[i]
        }
        dgemm(.none, .none, m: count, n: columns, k: columns, dense, lda: columns, denseHessian, ldb: columns,
              &denseProjected, ldc: columns)
        dgemm(.none, .none, m: 2 * count, n: columns, k: columns, candidates, lda: columns, hessian, ldb: columns,
              &candidateProjected, ldc: columns)
        if case let .inputs(crossTerm) = cross {
            dgemm(.none, .none, m: 2 * count, n: columns, k: columns, candidates, lda: columns, crossTerm, ldb: columns,
                  &crossProjected, ldc: columns)
        }
        for k in 0..<chunk {
            let row = firstRow + k / columns
            let targetEnergy = denseProjected[k] * dense[k]
            // tr(A C Wᵀ), entry by entry: (A C) ⊙ W from C, or A ⊙ (W Cᵀ) when that is what was collected.
            let crossed: (masked: Double, updated: Double)
            switch cross {
            case .inputs: crossed = (crossProjected[k] * dense[k], crossProjected[chunk + k] * dense[k])
            case let .outputs(projected):
                let target = projected[firstRow * columns + k]
                crossed = (candidates[k] * target, candidates[chunk + k] * target)
            }
            rowErrors[2 * row] += targetEnergy + candidateProjected[k] * candidates[k] - 2 * crossed.masked
            rowErrors[2 * row + 1] += targetEnergy + candidateProjected[chunk + k] * candidates[chunk + k] - 2 * crossed.updated
        }
    }
    let sums = try (band ?? .alone(rows: rows)).sumOverRows(rowErrors, width: 2)
    return (sums[0], sums[1])
}

/// How KRP's rectified weight W* is formed from the statistics.
public enum KRPRectification: Sendable, Equatable, Codable {
    /// The authors' ladder: W*ᵀ = (Ĥ + λI)⁻¹ C Wᵀ, ridge toward zero, first λ whose mean squared change is < 1.
    case legacy
    /// Ridge toward the dense weights, W*ᵀ = Wᵀ + α (Ĥ + λD)⁻¹ (C − Ĥ) Wᵀ with λ = ratio · mean(diag Ĥ) and
    /// D = I (`perInput` false), or λ = ratio and D = diag Ĥ (`perInput` true: each input's own scale, so
    /// outlier inputs are regularised as much as the others).
    /// ratio → ∞ or α = 0 is SparseGPT on W; ratio → 0 with α = 1 is the full least-squares refit.
    case towardDense(ratio: Double, correction: Double, perInput: Bool = false)
}

/// W* = W + α ((Ĥ + λI)⁻¹ (C − Ĥ) Wᵀ)ᵀ: the correction of the cumulative input error, shrunk toward the
/// dense weights. (C − Ĥ) = X̂ᵀ(X − X̂)/N is how the input error co-varies with the pruned inputs.
/// Computed row by row: Δ = W (C − Ĥ)ᵀ (Ĥ + λD)⁻¹.
/// weight: [rows, columns] dense W (a band's rows or all); hessian: [columns, columns]; cross: C or W Cᵀ
/// Returns weight: [rows, columns] W*.
func shrunkRectifiedWeight(_ weight: [Double], rows: Int, columns: Int, hessian: [Double], cross: KRPCrossTerm,
                           ridgeRatio: Double, correction: Double, perInputRidge: Bool = false, function: String) throws
    -> (weight: [Double], ridge: Double, redamped: Int)
{
    var diagonalSum = 0.0
    for i in 0..<columns { diagonalSum += hessian[i * columns + i] }
    let scale = diagonalSum > 0 ? diagonalSum / Double(columns) : 1
    var rightHandSides: [Double]                                            // [rows, columns] W (C − Ĥ)ᵀ
    switch cross {
    case let .inputs(crossTerm):
        var errorCovariance = crossTerm                                     // [columns, columns] C − Ĥ
        for i in errorCovariance.indices { errorCovariance[i] -= hessian[i] }
        rightHandSides = [Double](repeating: 0, count: rows * columns)
        dgemm(.none, .transpose, m: rows, n: columns, k: columns, weight, lda: columns, errorCovariance, ldb: columns,
              &rightHandSides, ldc: columns)
    case let .outputs(projected):
        rightHandSides = projected                                          // W Cᵀ − W Ĥ (Ĥ is symmetric)
        dgemm(.none, .none, m: rows, n: columns, k: columns, alpha: -1, weight, lda: columns, hessian, ldb: columns,
              beta: 1, &rightHandSides, ldc: columns)
    }
    // Dead inputs (zero diagonal) get the mean scale, so the per-input ridge still makes Ĥ + λD definite.
    let ridgeShape = (0..<columns).map { i in perInputRidge && hessian[i * columns + i] > 0 ? hessian[i * columns + i] : (perInputRidge ? scale : 1) }
    var ridge = perInputRidge ? ridgeRatio : scale * ridgeRatio
    for failures in 0...maximumRedampings {
        var factor = hessian
        for i in 0..<columns { factor[i * columns + i] += ridge * ridgeShape[i] }
        if choleskyUpper(&factor, n: columns) {
            solveRowsWithCholeskyUpper(factor, n: columns, &rightHandSides, rows: rows)   // → [rows, columns] Δ
            var rectified = weight
            for i in rectified.indices { rectified[i] += correction * rightHandSides[i] }
            return (rectified, ridge, failures)
        }
        ridge = ridge > 0 ? ridge * 10 : (perInputRidge ? 1e-8 : scale * 1e-8)
    }
    throw PruneDistError(.numerics,
        "\(function): Ĥ + λI [\(columns), \(columns)] stayed singular after \(maximumRedampings) re-dampings (last λ = \(ridge)); the pruned-input statistics are unusable")
}
