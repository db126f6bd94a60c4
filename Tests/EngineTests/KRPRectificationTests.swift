@testable import Engine
import XCTest

/// KRP's rectification toward the dense weights, W*ᵀ = Wᵀ + α (Ĥ + λI)⁻¹ (C − Ĥ) Wᵀ, against an independent
/// least-squares solve, and its two limits (SparseGPT's W, and the full refit). An extension of the solver
/// tests for their synthetic inputs and QR oracle.
private let (tokens, columns, rows) = (300, 12, 5)

extension PruningSolverTests {
    private func rectificationProblem(seed: UInt64) -> (weight: [Double], hessian: [Double], cross: [Double], dense: [Double], pruned: [Double]) {
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.2, seed: seed)
        let weight = randomWeight(rows: rows, columns: columns, seed: seed + 1).map(Double.init)
        return (weight, gram(xHat, xHat, tokens: tokens, columns: columns), gram(xHat, x, tokens: tokens, columns: columns), x, xHat)
    }

    /// W* minimises ‖X Wᵀ − X̂ Aᵀ‖²/N + λ‖A − W‖² (α = 1): solved here as the least squares of the stacked
    /// system [X̂; √(Nλ) I] Aᵀ = [X Wᵀ; √(Nλ) Wᵀ] by QR, independently of the normal equations the solver uses.
    func testKRPRidgeTowardDenseIsTheRegularisedLeastSquares() throws {
        let p = rectificationProblem(seed: 41)
        for ratio in [1e-3, 0.1, 2.0] {
            let result = try shrunkRectifiedWeight(p.weight, rows: rows, columns: columns, hessian: p.hessian, cross: .inputs(p.cross),
                                                   ridgeRatio: ratio, correction: 1, function: "test")
            let lambda = result.ridge
            var mean = 0.0
            for i in 0..<columns { mean += p.hessian[i * columns + i] / Double(columns) }
            XCTAssertEqual(lambda, ratio * mean, accuracy: 1e-12 * mean)
            let root = (Double(tokens) * lambda).squareRoot()
            var system = p.pruned + (0..<(columns * columns)).map { $0 / columns == $0 % columns ? root : 0 }
            var targets = [Double](repeating: 0, count: tokens * rows)                 // X Wᵀ [tokens, rows]
            dgemm(.none, .transpose, m: tokens, n: rows, k: columns, p.dense, lda: columns, p.weight, ldb: columns, &targets, ldc: rows)
            var prior = [Double](repeating: 0, count: columns * rows)                  // √(Nλ) Wᵀ [columns, rows]
            for r in 0..<rows { for c in 0..<columns { prior[c * rows + r] = root * p.weight[r * columns + c] } }
            var solution = targets + prior
            XCTAssertEqual(leastSquares(&system, rows: tokens + columns, columns: columns, &solution, rightHandSides: rows), 0)
            for r in 0..<rows {
                for c in 0..<columns {
                    XCTAssertEqual(result.weight[r * columns + c], solution[c * rows + r], accuracy: 1e-9, "ratio \(ratio) [\(r), \(c)]")
                }
            }
        }
    }

    /// α scales the correction linearly: α = 0 is the dense W (SparseGPT's starting point), and a huge ridge
    /// tends to W too; a tiny ridge with α = 1 is the authors' refit (their ridge toward zero, same λ, nearly).
    func testKRPRectificationLimits() throws {
        let p = rectificationProblem(seed: 43)
        func rectified(_ ratio: Double, _ alpha: Double) throws -> [Double] {
            try shrunkRectifiedWeight(p.weight, rows: rows, columns: columns, hessian: p.hessian, cross: .inputs(p.cross),
                                      ridgeRatio: ratio, correction: alpha, function: "test").weight
        }
        XCTAssertEqual(try rectified(0.01, 0), p.weight)
        let full = try rectified(0.01, 1), half = try rectified(0.01, 0.5)
        for i in p.weight.indices { XCTAssertEqual(half[i] - p.weight[i], 0.5 * (full[i] - p.weight[i]), accuracy: 1e-12) }
        let far = try rectified(1e9, 1)
        XCTAssertLessThan(zip(far, p.weight).map { abs($0 - $1) }.max()!, 1e-8)
        let refit = try rectifiedWeight(p.weight, rows: rows, columns: columns, hessian: p.hessian, cross: .inputs(p.cross), function: "test")
        let tiny = try rectified(1e-4, 1)
        // Same λ (the ladder's first step): the two differ by exactly Dᵀ = λ(Ĥ + λI)⁻¹Wᵀ, i.e. (Ĥ + λI)Dᵀ = λWᵀ.
        let lambda = refit.ridge
        var shifted = p.hessian
        for i in 0..<columns { shifted[i * columns + i] += lambda }
        let differenceT = (0..<(columns * rows)).map { i in tiny[(i % rows) * columns + i / rows] - refit.weight[(i % rows) * columns + i / rows] }
        var product = [Double](repeating: 0, count: columns * rows)
        dgemm(.none, .none, m: columns, n: rows, k: columns, shifted, lda: columns, differenceT, ldb: rows, &product, ldc: rows)
        for i in product.indices {
            XCTAssertEqual(product[i], lambda * p.weight[(i % rows) * columns + i / rows], accuracy: 1e-9)
        }
        XCTAssertGreaterThan(zip(full, p.weight).map { abs($0 - $1) }.max()!, 1e-2, "the inputs differ, so the correction is not nil")
    }

    /// A singular Ĥ with no ridge is re-dampened instead of failing.
    func testKRPRectificationRedampensSingularHessian() throws {
        let hessian = [Double](repeating: 0, count: columns * columns)
        let weight = (0..<(rows * columns)).map { Double($0 % 7) - 3 }
        let result = try shrunkRectifiedWeight(weight, rows: rows, columns: columns, hessian: hessian, cross: .inputs(hessian),
                                               ridgeRatio: 0, correction: 1, function: "test")
        XCTAssertEqual(result.redamped, 1)
        XCTAssertEqual(result.weight, weight, "no input error, no correction")
    }
}

/// OWL's allocation (Yin et al. 2024).
final class OWLTests: XCTestCase {
    /// The sparsities have the target mean, span target ± λ, and the block with most outliers is pruned least.
    func testSparsitiesKeepTheMeanAndOrder() {
        let ratios = [0.010, 0.030, 0.020, 0.050, 0.012]
        let sparsities = owlSparsities(outlierRatios: ratios, target: 0.7, spread: 0.08)
        XCTAssertEqual(sparsities.reduce(0, +) / Double(sparsities.count), 0.7, accuracy: 1e-6)
        XCTAssertEqual(sparsities.max()! - sparsities.min()!, 0.16, accuracy: 1e-6)
        XCTAssertEqual(sparsities.firstIndex(of: sparsities.min()!), 3, "most outliers, least pruned")
        XCTAssertEqual(sparsities.firstIndex(of: sparsities.max()!), 0, "fewest outliers, most pruned")
        // Linear in the ratio: the middle ratio 0.03 sits at the same relative place as its sparsity.
        XCTAssertEqual((sparsities[0] - sparsities[1]) / (sparsities[0] - sparsities[3]), 0.5, accuracy: 1e-4)
        XCTAssertEqual(owlSparsities(outlierRatios: [0.2, 0.2], target: 0.5, spread: 0.08), [0.5, 0.5])
    }

    /// Scores |w|·‖x‖ of [1, 1, 1, 10]·[1, 1, 1, 1] with mean 3.25: one above 2 × the mean, none above 4 ×.
    func testOutlierRatioCountsScoresAboveMTimesTheMean() {
        let linear = (weight: [Float]([1, -1, 1, -10]), columns: 2, columnNormsSquared: [1.0, 1.0])
        XCTAssertEqual(owlOutlierRatio(linears: [linear], threshold: 2), 0.25)
        XCTAssertEqual(owlOutlierRatio(linears: [linear], threshold: 4), 0)
        // The norms weigh the columns: column 0's inputs 100× larger make its two weights the outliers.
        let weighted = (weight: [Float]([1, 1, 1, 1]), columns: 2, columnNormsSquared: [10_000.0, 1.0])
        XCTAssertEqual(owlOutlierRatio(linears: [weighted], threshold: 1.5), 0.5)
        // The mean is taken over all linears of the block together.
        XCTAssertEqual(owlOutlierRatio(linears: [linear, (weight: [Float](repeating: 1, count: 4), columns: 2, columnNormsSquared: [1, 1])],
                                       threshold: 4), 0.125)
    }
}
