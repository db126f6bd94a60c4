import XCTest
@testable import Engine
import TestSupport

/// The exact row-by-row OBC solver: optimality of its updates, exactness of its first choice, and its use as
/// the oracle SparseGPT is measured against.
final class OBCTests: XCTestCase {
    /// A random SPD Hessian from correlated inputs, and a weight.
    private func problem(rows: Int, columns: Int, tokens: Int, seed: UInt64) -> (weight: [Float], hessian: [Double]) {
        var random = SplitMix64(seed: seed)
        let x = (0..<(tokens * columns)).map { _ in random.nextGaussian() }
        var hessian = [Double](repeating: 0, count: columns * columns)
        for t in 0..<tokens {
            for i in 0..<columns {
                for j in 0..<columns {
                    let product: Double = x[t * columns + i] * x[t * columns + j]
                    let emphasis: Double = i == j ? 2 : 1
                    hessian[i * columns + j] += product * emphasis / Double(tokens)
                }
            }
        }
        let weight = (0..<(rows * columns)).map { _ in Float(random.nextGaussian()) }
        return (weight, hessian)
    }

    /// (H + δI) as OBC forms it.
    private func damped(_ hessian: [Double], columns: Int, damping: Double) -> [Double] {
        var h = hessian
        for i in 0..<columns { h[i * columns + i] += damping }
        return h
    }

    /// The best weights with zeros at `pruned`: w_S = w0_S + H_SS⁻¹ H_{S,P} w0_P (kept S, pruned P), and their cost.
    private func bestRefit(_ w0: [Double], pruned: Set<Int>, hessian h: [Double], columns: Int) -> (weights: [Double], cost: Double) {
        let kept = (0..<columns).filter { !pruned.contains($0) }
        var hSS = [Double](repeating: 0, count: kept.count * kept.count)
        var rhs = [Double](repeating: 0, count: kept.count)
        for (a, i) in kept.enumerated() {
            for (b, j) in kept.enumerated() { hSS[a * kept.count + b] = h[i * columns + j] }
            for p in pruned { rhs[a] += h[i * columns + p] * w0[p] }
        }
        XCTAssertTrue(choleskyUpper(&hSS, n: kept.count))
        solveRowsWithCholeskyUpper(hSS, n: kept.count, &rhs, rows: 1)
        var w = [Double](repeating: 0, count: columns)
        for (a, i) in kept.enumerated() { w[i] = w0[i] + rhs[a] }
        var cost = 0.0
        for i in 0..<columns { for j in 0..<columns { cost += (w0[i] - w[i]) * h[i * columns + j] * (w0[j] - w[j]) } }
        return (w, cost)
    }

    func testRemainingWeightsAreTheExactRefitForTheChosenMask() throws {
        let (weight, hessian) = problem(rows: 5, columns: 12, tokens: 40, seed: 3)
        let result = try pruneOBC(weight: weight, shape: [5, 12], hessian: hessian, pattern: .unstructured(fraction: 0.5))
        let h = damped(hessian, columns: 12, damping: result.damping)
        for row in 0..<5 {
            let pruned = Set((0..<12).filter { result.weight[row * 12 + $0] == 0 })
            XCTAssertEqual(pruned.count, 6, "row \(row) gets int(12 · 0.5) zeros")
            let best = bestRefit((0..<12).map { Double(weight[row * 12 + $0]) }, pruned: pruned, hessian: h, columns: 12)
            for j in 0..<12 { XCTAssertEqual(Double(result.weight[row * 12 + j]), best.weights[j], accuracy: 1e-5, "row \(row) column \(j)") }
        }
    }

    func testFirstRemovalIsTheBestSingleRemoval() throws {
        let (weight, hessian) = problem(rows: 4, columns: 8, tokens: 30, seed: 9)
        let result = try pruneOBC(weight: weight, shape: [4, 8], hessian: hessian, pattern: .unstructured(fraction: 0.125))
        let h = damped(hessian, columns: 8, damping: result.damping)
        for row in 0..<4 {
            let w0 = (0..<8).map { Double(weight[row * 8 + $0]) }
            let costs = (0..<8).map { bestRefit(w0, pruned: [$0], hessian: h, columns: 8).cost }
            let chosen = (0..<8).filter { result.weight[row * 8 + $0] == 0 }
            XCTAssertEqual(chosen, [costs.indices.min { costs[$0] < costs[$1] }!], "row \(row): brute force over every single removal")
        }
    }

    func testNOfMKeepsTheGroupQuota() throws {
        let (weight, hessian) = problem(rows: 3, columns: 16, tokens: 50, seed: 4)
        let result = try pruneOBC(weight: weight, shape: [3, 16], hessian: hessian, pattern: .nOfM(n: 2, m: 4))
        for row in 0..<3 {
            for group in 0..<4 {
                XCTAssertEqual((0..<4).filter { result.weight[row * 16 + group * 4 + $0] == 0 }.count, 2)
            }
        }
    }

    /// On the reference layer the exact solver is the oracle: its error is no larger than SparseGPT's where both
    /// obey the same per-row structure (2:4), and SparseGPT's error stays within a small factor of it.
    func testOracleErrorBoundsSparseGPTOnTheReferenceLayer() throws {
        let file = try SafetensorsFile(url: try Fixtures.path("fixtures/sparsegpt-layer.safetensors"))
        let weight = try file.floats("W"), hessian = try file.floats("H").map(Double.init)
        let oracle = try pruneOBC(weight: weight, shape: [48, 64], hessian: hessian, pattern: .nOfM(n: 2, m: 4))
        let sparsegpt = try pruneSparseGPT(weight: weight, shape: [48, 64], hessian: hessian, pattern: .nOfM(n: 2, m: 4), blocksize: 32)
        let oracleError = try XCTUnwrap(oracle.errorAfter), sparsegptError = try XCTUnwrap(sparsegpt.errorAfter)
        XCTAssertLessThanOrEqual(oracleError, sparsegptError, "2:4: OBC \(oracleError) vs SparseGPT \(sparsegptError)")
        let unstructured = try pruneOBC(weight: weight, shape: [48, 64], hessian: hessian, pattern: .unstructured(fraction: 0.5))
        let sparsegptUnstructured = try pruneSparseGPT(weight: weight, shape: [48, 64], hessian: hessian, pattern: .unstructured(fraction: 0.5), blocksize: 32)
        XCTAssertLessThan(try XCTUnwrap(sparsegptUnstructured.errorAfter), 1.5 * (try XCTUnwrap(unstructured.errorAfter)))
    }

    /// With the same inputs in both streams, KRP is SparseGPT applied to its rectified weight W*.
    func testKRPWithIdenticalStreamsIsSparseGPTOnTheRectifiedWeight() throws {
        let file = try SafetensorsFile(url: try Fixtures.path("fixtures/sparsegpt-layer.safetensors"))
        let weight = try file.floats("W"), hessian = try file.floats("H").map(Double.init)
        let krp = try pruneKRP(weight: weight, shape: [48, 64], hessian: hessian, crossTerm: hessian, pattern: .unstructured(fraction: 0.5), blocksize: 32)
        let rectified = try rectifiedWeight(weight.map(Double.init), rows: 48, columns: 64, hessian: hessian, cross: .inputs(hessian), function: "test")
        XCTAssertEqual(krp.ridge, rectified.ridge)
        let sparsegpt = try pruneSparseGPT(weight: rectified.weight.map(Float.init), shape: [48, 64], hessian: hessian,
                                           pattern: .unstructured(fraction: 0.5), blocksize: 32)
        XCTAssertEqual(krp.weight.map { $0 == 0 }, sparsegpt.weight.map { $0 == 0 }, "same mask")
        let worst = zip(krp.weight, sparsegpt.weight).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 1e-5)
    }
}
