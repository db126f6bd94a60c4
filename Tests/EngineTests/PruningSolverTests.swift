import COpenBLAS
import XCTest
@testable import Engine
import TestSupport

/// The pruning solvers against the reference tools' outputs on one layer (the golden sparsegpt-layer.safetensors
/// in the shared fixtures, made by sparsegpt.py and the authors' KRP code), and
/// KRP against independent least-squares solves.
final class PruningSolverTests: XCTestCase {
    // MARK: fixture layer

    struct Layer {
        let file: SafetensorsFile
        let weight: [Float]      // [48, 64]
        let inputs: [Float]      // [256, 64]
        let hessian: [Double]    // [64, 64] = 2 XᵀX as accumulated by sparsegpt
        let rows = 48, columns = 64, tokens = 256
        let summary: [String: Any]

        func mask(_ name: String) throws -> [UInt8] { try file.bytes(name) }
        func reconstructionReference(_ run: String) -> Double {
            (summary["recon_error_sum_sq"] as! [String: Double])[run]!
        }
    }

    func loadLayer() throws -> Layer {
        let file = try SafetensorsFile(url: try Fixtures.path("fixtures/sparsegpt-layer.safetensors"))
        let summaryData = try Data(contentsOf: try Fixtures.path("fixtures/sparsegpt-layer.summary.json"))
        let summary = try JSONSerialization.jsonObject(with: summaryData) as! [String: Any]
        return Layer(file: file, weight: try file.floats("W"), inputs: try file.floats("X"),
                     hessian: try file.floats("H").map(Double.init), summary: summary)
    }

    /// 1 where the weight is exactly zero, as the fixture's `.mask` tensors.
    /// weight: [rows, columns]
    func zeroMask(_ weight: [Float]) -> [UInt8] { weight.map { $0 == 0 ? 1 : 0 } }

    /// ‖X Wᵀ − X Ŵᵀ‖², computed from the inputs themselves (no Hessian involved).
    /// inputs: [tokens, columns]; dense, pruned: [rows, columns]
    func reconstructionError(inputs: [Float], tokens: Int, dense: [Float], pruned: [Float], rows: Int, columns: Int) -> Double {
        let x = inputs.map(Double.init)
        let difference = zip(dense, pruned).map { Double($0) - Double($1) }
        var outputs = [Double](repeating: 0, count: tokens * rows)
        dgemm(.none, .transpose, m: tokens, n: rows, k: columns, x, lda: columns, difference, ldb: columns,
              &outputs, ldc: rows)
        return outputs.reduce(0) { $0 + $1 * $1 }
    }

    func assertMasksEqual(_ found: [UInt8], _ expected: [UInt8], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(found.count, expected.count, label, file: file, line: line)
        let mismatches = zip(found, expected).filter { $0 != $1 }.count
        XCTAssertEqual(mismatches, 0, "\(label): \(mismatches) mask entries differ from the reference", file: file, line: line)
    }

    // MARK: SparseGPT against the reference

    func checkSparseGPT(pattern: SparsityPattern, run: String, zeros: Int) throws {
        let layer = try loadLayer()
        let result = try pruneSparseGPT(weight: layer.weight, shape: [layer.rows, layer.columns], hessian: layer.hessian,
                                        pattern: pattern, blocksize: 32, percdamp: 0.01)
        let expectedWeight = try layer.file.floats("\(run).W")
        assertMasksEqual(zeroMask(result.weight), try layer.mask("\(run).mask"), run)
        XCTAssertEqual(zeroMask(result.weight).reduce(0) { $0 + Int($1) }, zeros, run)
        let maxDifference = zip(result.weight, expectedWeight).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(maxDifference, 1e-5, "\(run): largest weight difference \(maxDifference)")

        let error = reconstructionError(inputs: layer.inputs, tokens: layer.tokens, dense: layer.weight,
                                        pruned: result.weight, rows: layer.rows, columns: layer.columns)
        let reference = layer.reconstructionReference(run)
        XCTAssertEqual(error, reference, accuracy: 0.01 * reference, "\(run): ‖XWᵀ − XŴᵀ‖²")
        // The fixture's H is 2·XᵀX, so the solver's own error is twice the direct one.
        XCTAssertEqual(result.errorAfter!, 2 * error, accuracy: 1e-4 * 2 * error, "\(run): errorAfter")
        let maskedWeight = zip(layer.weight, result.weight).map { $1 == 0 ? 0 : $0 }
        let maskedError = reconstructionError(inputs: layer.inputs, tokens: layer.tokens, dense: layer.weight,
                                              pruned: maskedWeight, rows: layer.rows, columns: layer.columns)
        XCTAssertEqual(result.errorBefore!, 2 * maskedError, accuracy: 1e-4 * 2 * maskedError, "\(run): errorBefore")
        XCTAssertGreaterThan(maskedError, error, "\(run): the OBS update must beat plain masking")
        var diagonalMean = 0.0
        for i in 0..<layer.columns { diagonalMean += layer.hessian[i * layer.columns + i] / Double(layer.columns) }
        XCTAssertEqual(result.damping, 0.01 * diagonalMean, accuracy: 1e-12 * diagonalMean)
        XCTAssertEqual(result.redamped, 0)
        print("SparseGPT \(pattern): ‖XWᵀ − XŴᵀ‖² = \(error) (reference \(reference)), max |ΔW| = \(maxDifference)")
    }

    func testSparseGPTUnstructuredMatchesReference() throws {
        try checkSparseGPT(pattern: .unstructured(fraction: 0.5), run: "sparsegpt_unstructured50", zeros: 1538)
    }

    func testSparseGPT2of4MatchesReference() throws {
        try checkSparseGPT(pattern: .nOfM(n: 2, m: 4), run: "sparsegpt_2of4", zeros: 1536)
    }

    // MARK: Wanda and magnitude against the reference

    func testWandaMatchesReference() throws {
        let layer = try loadLayer()
        let scalerRow = try layer.file.floats("wanda.scaler_row").map(Double.init)
        // The same statistic recomputed from X at another scale must give the same masks.
        var normsFromInputs = [Double](repeating: 0, count: layer.columns)
        for t in 0..<layer.tokens {
            for j in 0..<layer.columns { normsFromInputs[j] += Double(layer.inputs[t * layer.columns + j]).squared / 1000 }
        }
        for (pattern, run) in [(SparsityPattern.unstructured(fraction: 0.5), "wanda_unstructured50"),
                               (.nOfM(n: 2, m: 4), "wanda_2of4")] {
            for norms in [scalerRow, normsFromInputs] {
                let result = try pruneWanda(weight: layer.weight, shape: [layer.rows, layer.columns],
                                            columnNormsSquared: norms, pattern: pattern)
                assertMasksEqual(zeroMask(result.weight), try layer.mask("\(run).mask"), run)
                for (pruned, dense) in zip(result.weight, layer.weight) where pruned != 0 {
                    XCTAssertEqual(pruned, dense, "\(run): Wanda must not update kept weights")
                }
                let error = reconstructionError(inputs: layer.inputs, tokens: layer.tokens, dense: layer.weight,
                                                pruned: result.weight, rows: layer.rows, columns: layer.columns)
                let reference = layer.reconstructionReference(run)
                XCTAssertEqual(error, reference, accuracy: 0.01 * reference, run)
            }
        }
    }

    func testMagnitudeMatchesReference() throws {
        let layer = try loadLayer()
        for (pattern, run, zeros) in [(SparsityPattern.unstructured(fraction: 0.5), "magnitude_unstructured50", 1537),
                                      (.nOfM(n: 2, m: 4), "magnitude_2of4", 1536)] {
            let result = try pruneMagnitude(weight: layer.weight, shape: [layer.rows, layer.columns], pattern: pattern)
            assertMasksEqual(zeroMask(result.weight), try layer.mask("\(run).mask"), run)
            XCTAssertEqual(zeroMask(result.weight).reduce(0) { $0 + Int($1) }, zeros, run)
            let error = reconstructionError(inputs: layer.inputs, tokens: layer.tokens, dense: layer.weight,
                                            pruned: result.weight, rows: layer.rows, columns: layer.columns)
            let reference = layer.reconstructionReference(run)
            XCTAssertEqual(error, reference, accuracy: 0.01 * reference, run)
        }
    }

    func testZeroSparsityPrunesNothing() throws {
        let layer = try loadLayer()
        let shape = [layer.rows, layer.columns]
        let pattern = SparsityPattern.unstructured(fraction: 0)
        XCTAssertEqual(try pruneMagnitude(weight: layer.weight, shape: shape, pattern: pattern).weight, layer.weight)
        XCTAssertEqual(try pruneWanda(weight: layer.weight, shape: shape, columnNormsSquared: Array(repeating: 1, count: 64),
                                      pattern: pattern).weight, layer.weight)
        let sparseGPT = try pruneSparseGPT(weight: layer.weight, shape: shape, hessian: layer.hessian, pattern: pattern)
        XCTAssertEqual(sparseGPT.weight, layer.weight)
        XCTAssertEqual(sparseGPT.errorAfter!, 0)
    }

    // MARK: KRP

    /// Correlated, anisotropic inputs X [tokens, columns] and a perturbed copy X̂ = X + noise·N(0,1).
    func syntheticInputs(tokens: Int, columns: Int, noise: Double, seed: UInt64) -> (dense: [Double], pruned: [Double]) {
        var random = SeededNormal(seed: seed)
        let mixing = (0..<(columns * columns)).map { i in (i / columns == i % columns ? 1.0 : 0) + 0.3 * random.next() }
        let scales = (0..<columns).map { _ in exp(0.5 * random.next()) }
        let base = (0..<(tokens * columns)).map { _ in random.next() }
        var dense = [Double](repeating: 0, count: tokens * columns)
        dgemm(.none, .none, m: tokens, n: columns, k: columns, base, lda: columns, mixing, ldb: columns, &dense, ldc: columns)
        for i in dense.indices { dense[i] *= scales[i % columns] }
        let pruned = dense.enumerated().map { $0.element + noise * scales[$0.offset % columns] * random.next() }
        return (dense, pruned)
    }

    /// AᵀB / tokens. a, b: [tokens, columns] → [columns, columns]
    func gram(_ a: [Double], _ b: [Double], tokens: Int, columns: Int) -> [Double] {
        var result = [Double](repeating: 0, count: columns * columns)
        dgemm(.transpose, .none, m: columns, n: columns, k: tokens, alpha: 1 / Double(tokens), a, lda: columns,
              b, ldb: columns, &result, ldc: columns)
        return result
    }

    /// ‖X Wᵀ − X̂ Ŵᵀ‖² / tokens. dense, pruned: [tokens, columns]; weight, candidate: [rows, columns]
    func denseTargetError(dense: [Double], pruned: [Double], weight: [Float], candidate: [Float],
                          tokens: Int, rows: Int, columns: Int) -> Double {
        var outputs = [Double](repeating: 0, count: tokens * rows)
        dgemm(.none, .transpose, m: tokens, n: rows, k: columns, dense, lda: columns, weight.map(Double.init), ldb: columns,
              &outputs, ldc: rows)
        dgemm(.none, .transpose, m: tokens, n: rows, k: columns, alpha: -1, pruned, lda: columns,
              candidate.map(Double.init), ldb: columns, beta: 1, &outputs, ldc: rows)
        return outputs.reduce(0) { $0 + $1 * $1 } / Double(tokens)
    }

    func randomWeight(rows: Int, columns: Int, seed: UInt64) -> [Float] {
        var random = SeededNormal(seed: seed)
        return (0..<(rows * columns)).map { _ in Float(random.next() / Double(columns).squareRoot()) }
    }

    /// Same inputs in both streams and nothing pruned: W* = W up to the tiny ridge.
    func testKRPWithoutPerturbationOrPruningKeepsWeight() throws {
        let (tokens, columns, rows) = (400, 24, 10)
        let x = syntheticInputs(tokens: tokens, columns: columns, noise: 0, seed: 11).dense
        let weight = randomWeight(rows: rows, columns: columns, seed: 12)
        let hessian = gram(x, x, tokens: tokens, columns: columns)
        let result = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: hessian,
                                  pattern: .unstructured(fraction: 0), denseHessian: hessian)
        let energy = denseTargetError(dense: x, pruned: x, weight: weight, candidate: [Float](repeating: 0, count: rows * columns),
                                      tokens: tokens, rows: rows, columns: columns)
        let error = denseTargetError(dense: x, pruned: x, weight: weight, candidate: result.weight,
                                     tokens: tokens, rows: rows, columns: columns)
        // W − W* = λ(H + λI)⁻¹W, so the error Σₑ λ²e/(e + λ)²·|wₑ|² over H's eigenpairs is at most λ/4·‖W‖².
        let ridgeBound = result.ridge! / 4 * weight.reduce(0) { $0 + Double($1) * Double($1) }
        XCTAssertLessThanOrEqual(error, ridgeBound + 1e-10 * energy, "KRP with X̂ = X and sparsity 0 must return W up to the ridge")
        XCTAssertLessThan(error, 1e-5 * energy)
        var diagonalMean = 0.0
        for i in 0..<columns { diagonalMean += hessian[i * columns + i] / Double(columns) }
        XCTAssertEqual(result.ridge!, 1e-4 * diagonalMean, accuracy: 1e-12 * diagonalMean, "the first ridge ratio must be accepted")
        XCTAssertEqual(result.errorAfter!, error, accuracy: 1e-9 * energy)
        print("KRP identity: error \(error) vs output energy \(energy)")
    }

    /// With perturbed inputs KRP aims at the dense output and must beat SparseGPT on X̂ alone.
    func testKRPBeatsSparseGPTAgainstDenseTarget() throws {
        let (tokens, columns, rows) = (512, 32, 16)
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.3, seed: 21)
        let weight = randomWeight(rows: rows, columns: columns, seed: 22)
        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let crossTerm = gram(xHat, x, tokens: tokens, columns: columns)
        let denseHessian = gram(x, x, tokens: tokens, columns: columns)
        for pattern in [SparsityPattern.unstructured(fraction: 0.5), .nOfM(n: 2, m: 4)] {
            let krp = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: crossTerm,
                                   pattern: pattern, blocksize: 8, denseHessian: denseHessian)
            let sparseGPT = try pruneSparseGPT(weight: weight, shape: [rows, columns], hessian: hessian,
                                               pattern: pattern, blocksize: 8)
            let krpError = denseTargetError(dense: x, pruned: xHat, weight: weight, candidate: krp.weight,
                                            tokens: tokens, rows: rows, columns: columns)
            let sparseGPTError = denseTargetError(dense: x, pruned: xHat, weight: weight, candidate: sparseGPT.weight,
                                                  tokens: tokens, rows: rows, columns: columns)
            XCTAssertLessThan(krpError, 0.9 * sparseGPTError, "\(pattern)")
            XCTAssertEqual(krp.errorAfter!, krpError, accuracy: 1e-6 * krpError, "\(pattern): errorAfter vs dense target")
            let maskedError = denseTargetError(dense: x, pruned: xHat, weight: weight,
                                               candidate: zip(weight, krp.weight).map { $1 == 0 ? 0 : $0 },
                                               tokens: tokens, rows: rows, columns: columns)
            XCTAssertEqual(krp.errorBefore!, maskedError, accuracy: 1e-6 * maskedError, "\(pattern): errorBefore")
            XCTAssertEqual(Double(krp.weight.filter { $0 == 0 }.count) / Double(rows * columns), 0.5, accuracy: 0.02)
            // Without the dense Hessian the errors are against W*X̂: the dense-target ones minus ‖Y − W*X̂‖²/N,
            // up to a cross term proportional to the small ridge.
            let rectified = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: crossTerm,
                                         pattern: pattern, blocksize: 8)
            XCTAssertEqual(rectified.weight, krp.weight)
            let unreachableBefore = krp.errorBefore! - rectified.errorBefore!
            let unreachableAfter = krp.errorAfter! - rectified.errorAfter!
            XCTAssertGreaterThan(unreachableAfter, 0)
            XCTAssertEqual(unreachableBefore, unreachableAfter, accuracy: 1e-3 * krpError, "\(pattern)")
            print("KRP \(pattern): dense-target error \(krpError), SparseGPT on X̂ \(sparseGPTError)")
        }
    }

    /// KRP's cross term against the dense outputs (Σ y x̂ᵀ, what runs collect for down_proj) is W times the one
    /// against the dense inputs (Σ x̂ xᵀ): collected by InputStatistics in Float32 batches they agree to Float
    /// rounding, and pruneKRP given W Cᵀ prunes as it does given C (same mask, weights to Double rounding), for
    /// both rectification rules, with and without the dense Hessian.
    func testKRPCrossTermAgainstOutputsMatchesTheOneAgainstInputs() throws {
        let (tokens, columns, rows) = (600, 40, 16)   // fewer outputs than inputs, as down_proj
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.3, seed: 41)
        let weight = randomWeight(rows: rows, columns: columns, seed: 42)
        var y = [Double](repeating: 0, count: tokens * rows)                            // [tokens, rows] Y = X Wᵀ
        dgemm(.none, .transpose, m: tokens, n: rows, k: columns, x, lda: columns, weight.map(Double.init), ldb: columns,
              &y, ldc: rows)

        // Collected in batches of 100 tokens, as a run does per sequence.
        var againstInputs = InputStatistics(dimension: columns, needs: StatisticsNeeds(hessian: true, cross: true))
        var againstOutputs = InputStatistics(dimension: columns, needs: StatisticsNeeds(hessian: true, cross: true, crossOutputs: rows))
        XCTAssertEqual(againstOutputs.cross.count, rows * columns)
        for first in stride(from: 0, to: tokens, by: 100) {
            let pruned = xHat[(first * columns)..<((first + 100) * columns)].map(Float.init)
            againstInputs.accumulate(pruned: pruned, dense: x[(first * columns)..<((first + 100) * columns)].map(Float.init), tokens: 100)
            againstOutputs.accumulate(pruned: pruned, dense: y[(first * rows)..<((first + 100) * rows)].map(Float.init), tokens: 100)
        }
        againstInputs.normalise()
        againstOutputs.normalise()
        var projected = [Double](repeating: 0, count: rows * columns)                   // W Cᵀ from the input statistic
        dgemm(.none, .transpose, m: rows, n: columns, k: columns, weight.map(Double.init), lda: columns, againstInputs.cross,
              ldb: columns, &projected, ldc: columns)
        let largest = projected.map(abs).max()!
        XCTAssertLessThan(zip(projected, againstOutputs.cross).map { abs($0 - $1) }.max()!, 1e-5 * largest, "Σ y x̂ᵀ = W Σ x̂ xᵀ")
        XCTAssertEqual(againstOutputs.hessian, againstInputs.hessian, "the Hessian does not depend on the cross term's form")

        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let crossTerm = gram(xHat, x, tokens: tokens, columns: columns)
        var exact = [Double](repeating: 0, count: rows * columns)
        dgemm(.none, .transpose, m: rows, n: columns, k: columns, weight.map(Double.init), lda: columns, crossTerm, ldb: columns,
              &exact, ldc: columns)
        let denseHessian = gram(x, x, tokens: tokens, columns: columns)
        for rule in [KRPRectification.legacy, .towardDense(ratio: 3, correction: 0.3, perInput: true), .towardDense(ratio: 0.1, correction: 1)] {
            for dense in [nil, denseHessian] {
                for pattern in [SparsityPattern.unstructured(fraction: 0.5), .nOfM(n: 2, m: 4)] {
                    let fromInputs = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, cross: .inputs(crossTerm),
                                                  pattern: pattern, blocksize: 8, denseHessian: dense, rectification: rule)
                    let fromOutputs = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, cross: .outputs(exact),
                                                   pattern: pattern, blocksize: 8, denseHessian: dense, rectification: rule)
                    let what = "\(rule), \(pattern), dense Hessian \(dense != nil)"
                    XCTAssertEqual(zeroMask(fromOutputs.weight), zeroMask(fromInputs.weight), what)
                    let scale = fromInputs.weight.map { abs(Double($0)) }.max()!
                    XCTAssertLessThan(zip(fromInputs.weight, fromOutputs.weight).map { abs(Double($0) - Double($1)) }.max()!, 1e-5 * scale, what)
                    XCTAssertEqual(fromOutputs.ridge!, fromInputs.ridge!, accuracy: 1e-12 * fromInputs.ridge!, what)
                    XCTAssertEqual(fromOutputs.errorAfter!, fromInputs.errorAfter!, accuracy: 1e-8 * fromInputs.errorAfter!, what)
                    XCTAssertEqual(fromOutputs.errorBefore!, fromInputs.errorBefore!, accuracy: 1e-8 * fromInputs.errorBefore!, what)
                }
            }
        }
        // A cross term of the wrong size for the outputs is refused.
        XCTAssertThrowsError(try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, cross: .outputs(crossTerm),
                                          pattern: .unstructured(fraction: 0.5)))
    }

    /// Tiny problem whose mask prunes the first two columns of every row: left-to-right OBS is then exact,
    /// so KRP must equal (1) the independent ridge least squares W* and its damped projection on the
    /// mask, and (2) nearly the unregularised least-squares optimum for that mask.
    func testKRPIsOptimalForItsMaskOnTinyProblem() throws {
        let (tokens, columns, rows) = (40, 6, 3)
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.05, seed: 31)
        var weight = randomWeight(rows: rows, columns: columns, seed: 32).map { $0 + ($0 < 0 ? -0.5 : 0.5) }
        for row in 0..<rows { weight[row * columns] *= 1e-3; weight[row * columns + 1] *= 1e-3 }
        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let crossTerm = gram(xHat, x, tokens: tokens, columns: columns)
        // int(18·0.3) + 1 = 6 weights pruned, two per row if the mask is the intended one.
        let result = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: crossTerm,
                                  pattern: .unstructured(fraction: 0.3), percdamp: 1e-6)
        let expectedMask: [UInt8] = (0..<(rows * columns)).map { $0 % columns < 2 ? 1 : 0 }
        XCTAssertEqual(zeroMask(result.weight), expectedMask, "test precondition: the mask must be the first two columns")

        // Dense targets Y = X Wᵀ [tokens, rows].
        var targets = [Double](repeating: 0, count: tokens * rows)
        dgemm(.none, .transpose, m: tokens, n: rows, k: columns, x, lda: columns, weight.map(Double.init), ldb: columns,
              &targets, ldc: rows)
        // (1a) W*ᵀ = argmin ‖X̂ w − Y‖² + N·λ‖w‖², by QR of [X̂; √(Nλ) I].
        let ridge = result.ridge!
        var system = xHat + (0..<(columns * columns)).map { $0 / columns == $0 % columns ? (Double(tokens) * ridge).squareRoot() : 0 }
        var rectifiedT = targets + [Double](repeating: 0, count: columns * rows)      // → [columns, rows] W*ᵀ on top
        XCTAssertEqual(leastSquares(&system, rows: tokens + columns, columns: columns, &rectifiedT, rightHandSides: rows), 0)
        // (1b) each row: min over kept w of ‖X̂(w − w*)‖²/N + δ‖w − w*‖², by QR of [X̂_K/√N; √δ I].
        let kept = Array(2..<columns)
        let damping = result.damping
        var projected = [Float](repeating: 0, count: rows * columns)
        for row in 0..<rows {
            let rectifiedRow = (0..<columns).map { rectifiedT[$0 * rows + row] }
            var fitted = [Double](repeating: 0, count: tokens)                     // X̂ w*ᵀ
            for t in 0..<tokens { for j in 0..<columns { fitted[t] += xHat[t * columns + j] * rectifiedRow[j] } }
            var a = [Double](), b = [Double]()
            for t in 0..<tokens {
                a += kept.map { xHat[t * columns + $0] / Double(tokens).squareRoot() }
                b.append(fitted[t] / Double(tokens).squareRoot())
            }
            for (k, j) in kept.enumerated() {
                a += kept.indices.map { $0 == k ? damping.squareRoot() : 0 }
                b.append(damping.squareRoot() * rectifiedRow[j])
            }
            XCTAssertEqual(leastSquares(&a, rows: tokens + kept.count, columns: kept.count, &b, rightHandSides: 1), 0)
            for (k, j) in kept.enumerated() { projected[row * columns + j] = Float(b[k]) }
        }
        for i in 0..<(rows * columns) {
            XCTAssertEqual(result.weight[i], projected[i], accuracy: 1e-5 * max(1, abs(projected[i])), "weight \(i)")
        }

        // (2) The unregularised optimum for this mask: min ‖X̂_K w_K − Y‖², rows independent.
        var optimum = [Float](repeating: 0, count: rows * columns)
        var a = [Double](), b = targets
        for t in 0..<tokens { a += kept.map { xHat[t * columns + $0] } }
        XCTAssertEqual(leastSquares(&a, rows: tokens, columns: kept.count, &b, rightHandSides: rows), 0)
        for row in 0..<rows { for (k, j) in kept.enumerated() { optimum[row * columns + j] = Float(b[k * rows + row]) } }
        let krpError = denseTargetError(dense: x, pruned: xHat, weight: weight, candidate: result.weight,
                                        tokens: tokens, rows: rows, columns: columns)
        let optimumError = denseTargetError(dense: x, pruned: xHat, weight: weight, candidate: optimum,
                                            tokens: tokens, rows: rows, columns: columns)
        XCTAssertLessThanOrEqual(krpError, optimumError * (1 + 1e-3))
        XCTAssertGreaterThanOrEqual(krpError, optimumError * (1 - 1e-6))
        print("KRP tiny: error \(krpError), least-squares optimum \(optimumError)")
    }

    /// Solves min ‖A x − B‖ by QR (LAPACK dgels, independent of the solvers' Cholesky path).
    /// a: [rows, columns] overwritten; b: [rows, rightHandSides], the first `columns` rows become x.
    func leastSquares(_ a: inout [Double], rows: Int, columns: Int, _ b: inout [Double], rightHandSides: Int) -> Int32 {
        LAPACKE_dgels(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "N")), Int32(rows), Int32(columns), Int32(rightHandSides),
                      &a, Int32(columns), &b, Int32(rightHandSides))
    }

    /// The solvers' errors come from their factorisation (one TRSM and the eliminations' losses); they must be the
    /// direct products tr(D H Dᵀ) of `outputErrors`, with dead inputs, with and without damping, for either target
    /// (SparseGPT's original, KRP's rectified weight), in any row chunks.
    func testErrorsFromTheFactorisationAreTheDirectProducts() throws {
        let (tokens, columns, rows) = (200, 24, 13)
        var x = syntheticInputs(tokens: tokens, columns: columns, noise: 0, seed: 71).dense
        for t in 0..<tokens { x[t * columns + 5] = 0; x[t * columns + 17] = 0 }               // two dead inputs
        let hessian = gram(x, x, tokens: tokens, columns: columns)
        let weight = randomWeight(rows: rows, columns: columns, seed: 72)
        var random = SeededNormal(seed: 73)
        let rectified = weight.enumerated().map { i, w in i % columns == 5 || i % columns == 17 ? 0 : Double(w) + 0.05 * random.next() }
        for pattern in [SparsityPattern.unstructured(fraction: 0.5), .nOfM(n: 2, m: 4)] {
            for percdamp in [0.01, 0] {
                for target in [nil, rectified] {
                    var updated = target ?? weight.map(Double.init)
                    let solve = try sparseGPTSolve(weight: &updated, rows: rows, columns: columns, hessian: hessian, pattern: pattern,
                                                   blocksize: 8, percdamp: percdamp, function: "test")
                    let direct = try outputErrors(original: weight, mask: solve.mask, updated: updated, target: target,
                                                  rows: rows, columns: columns, hessian: hessian)
                    let what = "\(pattern), percdamp \(percdamp), \(target == nil ? "original" : "rectified") target"
                    XCTAssertGreaterThan(direct.updated, 1e-3 * direct.masked, what)
                    for chunkRows in [1, 4, rows] {
                        let factored = try solve.outputErrors(original: weight, updated: updated, target: target,
                                                              band: nil, chunkRows: chunkRows)
                        XCTAssertEqual(factored.masked, direct.masked, accuracy: 1e-10 * direct.masked, "\(what), chunks of \(chunkRows)")
                        XCTAssertEqual(factored.updated, direct.updated, accuracy: 1e-10 * direct.masked, "\(what), chunks of \(chunkRows)")
                    }
                }
            }
        }
    }

    /// The error products go through the rows in chunks; a ragged last chunk must not change them.
    func testErrorChunksAgree() throws {
        let (tokens, columns, rows) = (300, 16, 23)
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.2, seed: 61)
        let weight = randomWeight(rows: rows, columns: columns, seed: 62)
        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let crossTerm = gram(xHat, x, tokens: tokens, columns: columns)
        let denseHessian = gram(x, x, tokens: tokens, columns: columns)
        var random = SeededNormal(seed: 63)
        let mask = (0..<(rows * columns)).map { _ in random.next() > 0 }
        let updated = weight.map { Double($0) + 0.1 * random.next() }
        let target = weight.map { Double($0) + 0.1 * random.next() }
        let whole = try outputErrors(original: weight, mask: mask, updated: updated, target: target, rows: rows,
                                 columns: columns, hessian: hessian, chunkRows: rows)
        let wholeDense = try denseTargetErrors(original: weight, mask: mask, updated: updated, rows: rows, columns: columns,
                                           hessian: hessian, cross: .inputs(crossTerm), denseHessian: denseHessian, chunkRows: rows)
        let maskedCandidate = zip(weight, mask).map { $1 ? 0 : $0 }
        XCTAssertEqual(wholeDense.masked, denseTargetError(dense: x, pruned: xHat, weight: weight, candidate: maskedCandidate,
                                                           tokens: tokens, rows: rows, columns: columns), accuracy: 1e-9 * wholeDense.masked)
        for chunkRows in [1, 5, 22] {
            let chunked = try outputErrors(original: weight, mask: mask, updated: updated, target: target, rows: rows,
                                       columns: columns, hessian: hessian, chunkRows: chunkRows)
            XCTAssertEqual(chunked.masked, whole.masked, accuracy: 1e-12 * whole.masked)
            XCTAssertEqual(chunked.updated, whole.updated, accuracy: 1e-12 * whole.updated)
            let chunkedDense = try denseTargetErrors(original: weight, mask: mask, updated: updated, rows: rows, columns: columns,
                                                 hessian: hessian, cross: .inputs(crossTerm), denseHessian: denseHessian,
                                                 chunkRows: chunkRows)
            XCTAssertEqual(chunkedDense.masked, wholeDense.masked, accuracy: 1e-12 * wholeDense.masked)
            XCTAssertEqual(chunkedDense.updated, wholeDense.updated, accuracy: 1e-12 * wholeDense.updated)
        }
    }

    // MARK: damping and degenerate statistics

    /// Pairs of inputs with H = [[1, 3], [3, 1]] blocks: eigenvalue −2, positive diagonal. Damping
    /// 0.01, 0.1 and 1 fail, 10 succeeds.
    func indefiniteHessian(columns: Int) -> [Double] {
        var h = [Double](repeating: 0, count: columns * columns)
        for i in 0..<columns {
            h[i * columns + i] = 1
            h[i * columns + (i ^ 1)] = 3
        }
        return h
    }

    func testIndefiniteHessianIsRedamped() throws {
        let (rows, columns) = (5, 8)
        let weight = randomWeight(rows: rows, columns: columns, seed: 41)
        let hessian = indefiniteHessian(columns: columns)
        let result = try pruneSparseGPT(weight: weight, shape: [rows, columns], hessian: hessian, pattern: .nOfM(n: 2, m: 4))
        XCTAssertGreaterThanOrEqual(result.redamped, 1)
        XCTAssertGreaterThan(result.damping, 2, "damping must have grown past the negative eigenvalue")
        XCTAssertEqual(result.damping, 0.01 * pow(10, Double(result.redamped)), accuracy: 1e-9)
        XCTAssertTrue(result.weight.allSatisfy { $0.isFinite })
        XCTAssertEqual(result.weight.filter { $0 == 0 }.count, rows * columns / 2)

        let krp = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: hessian,
                               pattern: .unstructured(fraction: 0.5))
        XCTAssertGreaterThanOrEqual(krp.redamped, 1, "the ridge factorisation of Ĥ + λI must have failed at least once")
        XCTAssertGreaterThan(krp.ridge!, 2)
        XCTAssertTrue(krp.weight.allSatisfy { $0.isFinite })
    }

    func testHopelessHessianThrowsNumerics() throws {
        let columns = 4
        var hessian = indefiniteHessian(columns: columns)
        for i in hessian.indices where hessian[i] == 3 { hessian[i] = 1e12 }
        XCTAssertThrowsError(try pruneSparseGPT(weight: [Float](repeating: 1, count: 2 * columns), shape: [2, columns],
                                                hessian: hessian, pattern: .unstructured(fraction: 0.5))) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .numerics, "\(error)")
        }
        XCTAssertThrowsError(try pruneKRP(weight: [Float](repeating: 1, count: 2 * columns), shape: [2, columns],
                                          hessian: hessian, crossTerm: hessian, pattern: .unstructured(fraction: 0.5))) { error in
            XCTAssertEqual((error as? PruneDistError)?.kind, .numerics, "\(error)")
            XCTAssertTrue("\(error)".contains("Cholesky failures"), "\(error)")
        }
    }

    /// Fewer tokens than inputs (rank-deficient H) and a dead input: finite weights, dead column zeroed.
    func testRankDeficientHessianWithDeadInput() throws {
        let (tokens, columns, rows) = (4, 16, 6)
        var x = syntheticInputs(tokens: tokens, columns: columns, noise: 0, seed: 51).dense
        for t in 0..<tokens { x[t * columns + 3] = 0 }
        let hessian = gram(x, x, tokens: tokens, columns: columns)
        let weight = randomWeight(rows: rows, columns: columns, seed: 52)
        for pattern in [SparsityPattern.unstructured(fraction: 0.5), .nOfM(n: 2, m: 4)] {
            let result = try pruneSparseGPT(weight: weight, shape: [rows, columns], hessian: hessian, pattern: pattern)
            XCTAssertTrue(result.weight.allSatisfy { $0.isFinite }, "\(pattern)")
            for row in 0..<rows { XCTAssertEqual(result.weight[row * columns + 3], 0, "dead input must be zeroed") }
            XCTAssertLessThanOrEqual(result.errorAfter!, result.errorBefore!, "\(pattern)")
            let krp = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: hessian, pattern: pattern)
            XCTAssertTrue(krp.weight.allSatisfy { $0.isFinite }, "\(pattern)")
            for row in 0..<rows { XCTAssertEqual(krp.weight[row * columns + 3], 0, "dead input must be zeroed") }
        }
    }

    // MARK: arguments

    func testParseSparsityPattern() throws {
        XCTAssertEqual(try SparsityPattern.parse(sparsity: 0.5, pattern: nil), .unstructured(fraction: 0.5))
        XCTAssertEqual(try SparsityPattern.parse(sparsity: 0, pattern: nil), .unstructured(fraction: 0))
        XCTAssertEqual(try SparsityPattern.parse(sparsity: nil, pattern: "2:4"), .nOfM(n: 2, m: 4))
        XCTAssertEqual(try SparsityPattern.parse(sparsity: nil, pattern: "4:8"), .nOfM(n: 4, m: 8))
        XCTAssertEqual(SparsityPattern.unstructured(fraction: 0.5).description, "unstructured 50%")
        XCTAssertEqual(SparsityPattern.nOfM(n: 2, m: 4).description, "2:4")
        XCTAssertEqual(SparsityPattern.nOfM(n: 4, m: 8).sparsity, 0.5)
        let impossible: [(Double?, String?)] = [(nil, nil), (0.5, "2:4"), (1, nil), (-0.1, nil), (.nan, nil), (.infinity, nil),
                                                 (nil, "4:4"), (nil, "5:4"), (nil, "0:4"), (nil, "2-4"), (nil, "a:b"),
                                                 (nil, "2:4:8"), (nil, ""), (nil, "-2:4")]
        for (sparsity, pattern) in impossible {
            XCTAssertThrowsError(try SparsityPattern.parse(sparsity: sparsity, pattern: pattern)) { error in
                XCTAssertEqual((error as? PruneDistError)?.kind, .argument, "\(String(describing: sparsity)) \(String(describing: pattern))")
            }
        }
    }

    func testBadInputsAreRejected() throws {
        let weight = [Float](repeating: 1, count: 12)
        func expect(_ kind: PruneDistError.Kind, _ fragment: String, _ body: () throws -> PruneResult,
                    file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try body(), file: file, line: line) { error in
                let pruneError = error as? PruneDistError
                XCTAssertEqual(pruneError?.kind, kind, "\(error)", file: file, line: line)
                XCTAssertTrue(pruneError?.message.contains(fragment) ?? false, "\(error)", file: file, line: line)
            }
        }
        let half = SparsityPattern.unstructured(fraction: 0.5)
        let identity6 = (0..<36).map { $0 / 6 == $0 % 6 ? 1.0 : 0 }
        expect(.shape, "needs 12 values, got 11") { try pruneMagnitude(weight: Array(weight.dropLast()), shape: [2, 6], pattern: half) }
        expect(.shape, "[rows, columns]") { try pruneMagnitude(weight: weight, shape: [12], pattern: half) }
        expect(.nonFinite, "weight [1, 2]") {
            var bad = weight; bad[8] = .nan
            return try pruneSparseGPT(weight: bad, shape: [2, 6], hessian: identity6, pattern: half)
        }
        expect(.argument, "multiple of 4, but the weight has 6 columns") { try pruneSparseGPT(weight: weight, shape: [2, 6], hessian: identity6, pattern: .nOfM(n: 2, m: 4)) }
        expect(.argument, "multiple of 4") { try pruneWanda(weight: weight, shape: [2, 6], columnNormsSquared: Array(repeating: 1, count: 6), pattern: .nOfM(n: 2, m: 4)) }
        expect(.argument, "multiple of 4") { try pruneMagnitude(weight: weight, shape: [2, 6], pattern: .nOfM(n: 2, m: 4)) }
        expect(.argument, "sparsity must be in [0, 1)") { try pruneMagnitude(weight: weight, shape: [2, 6], pattern: .unstructured(fraction: 1)) }
        expect(.shape, "hessian must be [6, 6] (36 values)") { try pruneSparseGPT(weight: weight, shape: [2, 6], hessian: Array(identity6.dropLast()), pattern: half) }
        expect(.nonFinite, "hessian [0, 1] is nan") {
            var bad = identity6; bad[1] = .nan
            return try pruneSparseGPT(weight: weight, shape: [2, 6], hessian: bad, pattern: half)
        }
        expect(.shape, "crossTerm") { try pruneKRP(weight: weight, shape: [2, 6], hessian: identity6, crossTerm: [1], pattern: half) }
        expect(.shape, "one value per input column (6), got 5") { try pruneWanda(weight: weight, shape: [2, 6], columnNormsSquared: Array(repeating: 1, count: 5), pattern: half) }
        expect(.nonFinite, "columnNormsSquared[2]") { try pruneWanda(weight: weight, shape: [2, 6], columnNormsSquared: [1, 1, .nan, 1, 1, 1], pattern: half) }
        expect(.argument, "blocksize") { try pruneSparseGPT(weight: weight, shape: [2, 6], hessian: identity6, pattern: half, blocksize: 0) }
    }
}

/// Deterministic N(0, 1) samples (SplitMix64 and Box–Muller), so the synthetic tests never change.
struct SeededNormal {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func nextUniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return (Double(z >> 11) + 0.5) / Double(1 << 53)
    }
    mutating func next() -> Double {
        (-2 * log(nextUniform())).squareRoot() * cos(2 * .pi * nextUniform())
    }
}

private extension Double {
    var squared: Double { self * self }
}

final class LowestPositionsTests: XCTestCase {
    /// Ties go to the lower position, as a stable ascending sort would order them.
    func testTiesGoToLowerPositions() {
        var sorted = [Double](), positions = [Int]()
        let scores: [Double] = [3, 1, 2, 1, 2, 0, 2]
        lowestPositions(3, of: scores[...], sorted: &sorted, into: &positions)
        XCTAssertEqual(positions, [1, 3, 5])
        lowestPositions(4, of: scores[...], sorted: &sorted, into: &positions)
        XCTAssertEqual(positions, [1, 2, 3, 5])
        lowestPositions(5, of: scores[...], sorted: &sorted, into: &positions)
        XCTAssertEqual(positions, [1, 2, 3, 4, 5])
        lowestPositions(0, of: scores[...], sorted: &sorted, into: &positions)
        XCTAssertEqual(positions, [])
        lowestPositions(2, of: scores[2..<6], sorted: &sorted, into: &positions)
        XCTAssertEqual(positions, [1, 3], "positions are relative to the slice")
    }

    /// Wanda on equal scores prunes the leftmost columns of each row and group.
    func testWandaTiesPruneLeftmost() throws {
        let weight: [Float] = [1, -1, 1, -1, 2, 2, 2, 2]
        let half = try pruneWanda(weight: weight, shape: [1, 8], columnNormsSquared: Array(repeating: 1, count: 8),
                                  pattern: .unstructured(fraction: 0.5))
        XCTAssertEqual(half.weight, [0, 0, 0, 0, 2, 2, 2, 2])
        let twoOfFour = try pruneWanda(weight: weight, shape: [1, 8], columnNormsSquared: Array(repeating: 4, count: 8),
                                       pattern: .nOfM(n: 2, m: 4))
        XCTAssertEqual(twoOfFour.weight, [0, 0, 1, -1, 0, 0, 2, 2])
    }
}
