import Engine
import XCTest

/// outputEnergy(W, H) = tr(W H Wᵀ) is the mean over tokens of ‖W x_t‖² when H = Σ x_t x_tᵀ / T: checked against
/// that sum computed directly, token by token.
final class OutputEnergyTests: XCTestCase {
    func testOutputEnergyIsTheMeanSquaredOutputNormPerToken() throws {
        var random = SplitMix64(seed: 11)
        let (rows, columns, tokens) = (5, 7, 40)
        let weight = (0..<(rows * columns)).map { _ in Float(random.nextGaussian()) }
        let inputs = (0..<(tokens * columns)).map { _ in Float(random.nextGaussian() * 3) }  // [tokens, columns]
        var hessian = [Double](repeating: 0, count: columns * columns)
        var direct = 0.0
        for t in 0..<tokens {
            let x = inputs[(t * columns)..<((t + 1) * columns)].map(Double.init)
            for j in 0..<columns { for k in 0..<columns { hessian[j * columns + k] += x[j] * x[k] / Double(tokens) } }
            for i in 0..<rows {
                let y = (0..<columns).reduce(0.0) { $0 + Double(weight[i * columns + $1]) * x[$1] }
                direct += y * y / Double(tokens)
            }
        }
        XCTAssertEqual(try outputEnergy(weight: weight, rows: rows, columns: columns, hessian: hessian), direct, accuracy: 1e-9 * direct)
        XCTAssertEqual(try outputEnergy(weight: [Float](repeating: 0, count: rows * columns), rows: rows, columns: columns, hessian: hessian), 0)
    }
}
