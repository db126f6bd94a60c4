/// OWL, outlier-weighed layerwise sparsity (Yin et al., ICML 2024): blocks whose weights carry more
/// activation outliers keep more of them. A block's outlier ratio D is the share of its Wanda scores
/// |W_ij|·‖X_j‖ above M times their mean (over all linears of the block together); the ratios are
/// spread linearly over [S − λ, S + λ] of kept fraction and shifted so that the mean sparsity stays S.
public struct OWLSettings: Sendable, Equatable, Codable {
    /// Outlier threshold M: a score counts as an outlier above M × the block's mean score (paper: 5).
    public var threshold: Double
    /// Half-width λ of the sparsity range around the target (paper: 0.08).
    public var spread: Double

    public init(threshold: Double = 5, spread: Double = 0.08) {
        self.threshold = threshold
        self.spread = spread
    }
}

/// The share of a block's Wanda scores above `threshold` × their mean.
/// linears: each linear's weight [rows, columns] row-major with its input's Σx_j² [columns]
public func owlOutlierRatio(linears: [(weight: [Float], columns: Int, columnNormsSquared: [Double])], threshold: Double) -> Double {
    var norms: [[Double]] = []
    var sum = 0.0, count = 0
    for linear in linears {
        precondition(linear.columnNormsSquared.count == linear.columns && linear.weight.count % linear.columns == 0,
                     "owlOutlierRatio: \(linear.weight.count) weights do not fill rows of \(linear.columns) columns")
        let norm = linear.columnNormsSquared.map { $0.squareRoot() }
        norms.append(norm)
        for (i, w) in linear.weight.enumerated() { sum += Double(abs(w)) * norm[i % linear.columns] }
        count += linear.weight.count
    }
    guard count > 0 else { return 0 }
    let cut = sum / Double(count) * threshold
    var outliers = 0
    for (linear, norm) in zip(linears, norms) {
        for (i, w) in linear.weight.enumerated() where Double(abs(w)) * norm[i % linear.columns] > cut { outliers += 1 }
    }
    return Double(outliers) / Double(count)
}

/// Per-block sparsities from the blocks' outlier ratios: mean `target`, within target ± spread, the block
/// with most outliers pruned least. Equal ratios (or one block) give the uniform allocation.
/// Rounded to 1e-6 so that Double sums in another order (another rank count) cannot move a block's quota.
public func owlSparsities(outlierRatios: [Double], target: Double, spread: Double) -> [Double] {
    guard let low = outlierRatios.min(), let high = outlierRatios.max(), high > low else {
        return outlierRatios.map { _ in target }
    }
    let kept = outlierRatios.map { ($0 - low) / (high - low) * 2 * spread }
    let mean = kept.reduce(0, +) / Double(kept.count)
    return kept.map { k in
        let sparsity = 1 - (k - mean + (1 - target))
        return (min(max(sparsity, 0), 1) * 1e6).rounded() / 1e6
    }
}
