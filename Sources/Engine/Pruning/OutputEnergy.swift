/// The squared output norm per token of a linear, ‖W x̂‖² = tr(W H Wᵀ) with H the normalised second moment of its
/// input (the statistic the solvers' errors use): the scale its reconstruction errors are judged against, so a
/// report can give error / ‖Y‖² instead of absolute errors spread over eight orders of magnitude.
/// - weight: [rows, columns] row-major
/// - hessian: [columns, columns], symmetric, as InputStatistics holds it (normalised)
public func outputEnergy(weight: [Float], rows: Int, columns: Int, hessian: [Double]) -> Double {
    precondition(weight.count == rows * columns && hessian.count == columns * columns, "outputEnergy: shapes")
    let w = weight.map(Double.init)
    var product = [Double](repeating: 0, count: rows * columns)  // [rows, columns] = W · H
    dgemm(.none, .none, m: rows, n: columns, k: columns, w, lda: columns, hessian, ldb: columns, &product, ldc: columns)
    var total = 0.0
    for i in 0..<product.count { total += w[i] * product[i] }
    return total
}
