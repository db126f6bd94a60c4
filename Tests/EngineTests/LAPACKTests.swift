import XCTest
@testable import Engine
import TestSupport

/// The LAPACK wrappers the OBS solvers stand on, checked against their defining identities.
final class LAPACKTests: XCTestCase {
    /// A random SPD matrix XᵀX/T + δI with correlated columns (what a Hessian looks like).
    /// Returns: [n, n] row-major, both triangles filled.
    private func spd(n: Int, tokens: Int, seed: UInt64) -> [Double] {
        var random = SplitMix64(seed: seed)
        var x = (0..<(tokens * n)).map { _ in random.nextGaussian() }                     // [tokens, n]
        for t in 0..<tokens { for i in 1..<n { x[t * n + i] += 0.7 * x[t * n + i - 1] } }
        var a = [Double](repeating: 0, count: n * n)
        dgemm(.transpose, .none, m: n, n: n, k: tokens, alpha: 1 / Double(tokens), x, lda: n, x, ldb: n,
              beta: 0, &a, ldc: n)
        for i in 0..<n { a[i * n + i] += 0.01 }
        return a
    }

    /// U from the reversed-order factorisation is upper triangular with a positive diagonal, UᵀU·A = I, and it is
    /// the factor the three-step chain (factorise, invert, factorise the inverse) gives.
    func testUpperCholeskyFactorOfInverseIsTheFactorOfTheInverse() {
        for n in [1, 2, 7, 64, 131] {
            let a = spd(n: n, tokens: 3 * n + 5, seed: UInt64(n))
            var u = a
            XCTAssertTrue(upperCholeskyFactorOfInverse(&u, n: n), "n = \(n)")
            for i in 0..<n {
                XCTAssertGreaterThan(u[i * n + i], 0, "n = \(n), diagonal \(i)")
                for j in 0..<i { XCTAssertEqual(u[i * n + j], 0, "n = \(n): U[\(i), \(j)] below the diagonal") }
            }
            var inverse = [Double](repeating: 0, count: n * n)                              // UᵀU
            dgemm(.transpose, .none, m: n, n: n, k: n, alpha: 1, u, lda: n, u, ldb: n, beta: 0, &inverse, ldc: n)
            var identity = [Double](repeating: 0, count: n * n)
            dgemm(.none, .none, m: n, n: n, k: n, alpha: 1, inverse, lda: n, a, ldb: n, beta: 0, &identity, ldc: n)
            for i in 0..<n {
                for j in 0..<n {
                    XCTAssertEqual(identity[i * n + j], i == j ? 1 : 0, accuracy: 1e-9, "n = \(n): (UᵀU A)[\(i), \(j)]")
                }
            }
            var chain = a
            XCTAssertTrue(choleskyUpper(&chain, n: n) && inverseFromCholeskyUpper(&chain, n: n) && choleskyUpper(&chain, n: n))
            let largest = chain.map(abs).max()!
            for i in 0..<(n * n) {
                XCTAssertEqual(u[i], chain[i], accuracy: 1e-10 * largest, "n = \(n): entry \(i) against the chain")
            }
        }
    }

    /// An indefinite matrix is refused (the OBS solvers re-dampen on false).
    func testUpperCholeskyFactorOfInverseRefusesAnIndefiniteMatrix() {
        let n = 5
        var a = spd(n: n, tokens: 20, seed: 3)
        a[2 * n + 2] = -1
        XCTAssertFalse(upperCholeskyFactorOfInverse(&a, n: n))
        var singular = [Double](repeating: 1, count: n * n)                                 // rank one
        XCTAssertFalse(upperCholeskyFactorOfInverse(&singular, n: n))
    }
}
