/// The squared output norm per token of a linear, ‖W x̂‖² = tr(W H Wᵀ) with H the normalised second moment of its
/// input (the statistic the solvers' errors use): the scale its reconstruction errors are judged against, so a
/// report can give error / ‖Y‖² instead of absolute errors spread over eight orders of magnitude.
/// - weight: [rows, columns] row-major
/// - hessian: [columns, columns], symmetric, as InputStatistics holds it (normalised)
/// - band: when several ranks solve the linear together, this rank's rows (`weight` holds those); the energy is the
///   whole linear's, each row's summed on its own and the rows added in order.
public func outputEnergy(weight: [Float], rows: Int, columns: Int, hessian: [Double], band: RowBand? = nil) throws -> Double {
    precondition(weight.count == rows * columns && hessian.count == columns * columns, "outputEnergy: shapes")
    let w = weight.map(Double.init)
    var product = [Double](repeating: 0, count: rows * columns)  // [rows, columns] = W · H
    dgemm(.none, .none, m: rows, n: columns, k: columns, w, lda: columns, hessian, ldb: columns, &product, ldc: columns)
    var rowEnergies = [Double](repeating: 0, count: rows)
    for row in 0..<rows {
        var energy = 0.0
        for i in (row * columns)..<((row + 1) * columns) { energy += w[i] * product[i] }
        rowEnergies[row] = energy
    }
    return try (band ?? .alone(rows: rows)).sumOverRows(rowEnergies)[0]
}
