import CEngineKernels
import COpenBLAS

/// How many damping escalations (×10 each) a failed factorisation gets before the layer is given up.
let maximumRedampings = 8

/// SparseGPT (Frantar & Alistarh): OBS pruning with one inverse Hessian shared by all rows, in
/// blocks of columns eliminated left to right, as the authors' sparsegpt.py does (PruningSolverTests compare
/// its masks with sparsegpt.py's on one layer).
/// weight: [rows, columns] row-major; shape = [rows, columns]
/// hessian: [columns, columns] Double, Σ x xᵀ / N (scale-invariant)
/// errorBefore/errorAfter are measured with `hessian` as given (per token when it is Σ x xᵀ / N).
/// band: when several ranks solve the linear together, this rank's rows: `weight` and `shape` are then the band's
///   [band.rows.count, columns], the result is the band's rows and the errors are the whole linear's.
public func pruneSparseGPT(weight: [Float], shape: [Int], hessian: [Double], pattern: SparsityPattern,
                           blocksize: Int = 128, percdamp: Double = 0.01, band: RowBand? = nil) throws -> PruneResult {
    let function = "pruneSparseGPT"
    let (rows, columns) = try checkedLinearShape(weight: weight, shape: shape, function: function)
    try pattern.validate(columns: columns, function: function)
    try checkSquareStatistic(hessian, columns: columns, name: "hessian", function: function)
    try checkSolverOptions(blocksize: blocksize, percdamp: percdamp, function: function)
    let band = try checkedBand(band, rows: rows, function: function)

    var updated = weight.map(Double.init)
    let solve = try sparseGPTSolve(weight: &updated, rows: rows, columns: columns, hessian: hessian,
                                   pattern: pattern, blocksize: blocksize, percdamp: percdamp, function: function, band: band)
    let errors = try solve.outputErrors(original: weight, updated: updated, target: nil, band: band)
    return PruneResult(weight: updated.map(Float.init), errorBefore: errors.masked, errorAfter: errors.updated,
                       damping: solve.damping, redamped: solve.redamped)
}

/// The band a solver works on: all `rows` when alone; otherwise the band must hold `rows` rows.
func checkedBand(_ band: RowBand?, rows: Int, function: String) throws -> RowBand {
    guard let band else { return .alone(rows: rows) }
    guard band.rows.count == rows else {
        throw PruneDistError(.argument, "\(function): the weight holds \(rows) rows, its row band \(band.rows) of \(band.totalRows) holds \(band.rows.count)")
    }
    return band
}

func checkSolverOptions(blocksize: Int, percdamp: Double, function: String) throws {
    guard blocksize > 0 else { throw PruneDistError(.argument, "\(function): blocksize must be positive, got \(blocksize)") }
    guard percdamp.isFinite, percdamp >= 0 else {
        throw PruneDistError(.argument, "\(function): percdamp must be finite and ≥ 0, got \(percdamp)")
    }
}

/// The SparseGPT solve proper, in place on a Double weight.
/// weight: [rows, columns] row-major (the band's rows), replaced by the pruned and updated weight
/// hessian: [columns, columns] (not modified)
/// Returns mask: [rows, columns], true where the weight was pruned.
func sparseGPTSolve(weight: inout [Double], rows: Int, columns: Int, hessian: [Double], pattern: SparsityPattern,
                    blocksize: Int, percdamp: Double, function: String, band: RowBand? = nil) throws -> OBSSolve {
    // A dead input (never non-zero in the calibration data) gets H_ii = 1 so H stays invertible; its
    // weights can never matter to the output, so they are pruned for free.
    var diagonalSum = 0.0
    for i in 0..<columns {
        if hessian[i * columns + i] == 0 {
            for row in 0..<rows { weight[row * columns + i] = 0 }
        }
        diagonalSum += hessian[i * columns + i] == 0 ? 1 : hessian[i * columns + i]
    }
    let factorisation = try upperCholeskyOfInverse(hessian, n: columns, damping: percdamp * diagonalSum / Double(columns),
                                                   function: function)
    // N:M groups must not straddle two blocks.
    var effectiveBlocksize = blocksize
    if case let .nOfM(_, m) = pattern { effectiveBlocksize = max(m, blocksize / m * m) }
    let elimination = try eliminateColumns(weight: &weight, rows: rows, columns: columns, inverseFactor: factorisation.factor,
                                           pattern: pattern, blocksize: effectiveBlocksize, band: band ?? .alone(rows: rows))
    return OBSSolve(mask: elimination.mask, damping: factorisation.damping, redamped: factorisation.redamped,
                    inverseFactor: factorisation.factor, rowLosses: elimination.rowLosses,
                    liveInputs: (0..<columns).map { hessian[$0 * columns + $0] != 0 }, rows: rows, columns: columns)
}

/// What an OBS solve leaves besides the weight: its mask, the factorisation it used and the losses of its eliminations,
/// from which the output errors cost rows·n² flops (one triangular solve) instead of 4·rows·n².
struct OBSSolve {
    /// [rows, columns], true where pruned.
    let mask: [Bool]
    let damping: Double
    let redamped: Int
    /// [columns, columns] upper U with (H′ + δI)⁻¹ = UᵀU, H′ being H with a dead input's zero diagonal set to 1.
    let inverseFactor: [Double]
    /// [rows] Σ over the row's eliminated columns of ((w − q)/U_ii)².
    let rowLosses: [Double]
    /// [columns] false for a dead input (H_ii = 0), whose diagonal the factorisation took as 1.
    let liveInputs: [Bool]
    let rows: Int, columns: Int

    /// The errors `outputErrors` gives, from the factorisation. For any D, tr(D (H′ + δI) Dᵀ) = ‖D U⁻¹‖², and
    /// tr(D H Dᵀ) = that − δ‖D‖² − Σ over dead inputs of ‖D[:, i]‖² (a dead input's row and column of H are zero).
    /// The eliminations give the updated candidate's ‖D U⁻¹‖² for free: the solve's Ŵ = W₀ − E U with E the
    /// matrix of (w − q)/U_ii, so (W₀ − Ŵ) U⁻¹ = E, and W₀ (the solver's start) equals the target on every live
    /// input. The masked candidate takes one TRSM.
    /// original: [rows, columns] W; updated: [rows, columns] Ŵ; target: [rows, columns] T, or nil for T = W (the
    /// solver must have started from T, with dead inputs zeroed). Each row's error is a PSD form, so rounding below
    /// zero after the subtraction is clamped to 0.
    func outputErrors(original: [Float], updated: [Double], target: [Double]?, band: RowBand?,
                      chunkRows requestedChunkRows: Int? = nil) throws -> (masked: Double, updated: Double) {
        let chunkRows = min(rows, requestedChunkRows ?? errorChunkRows(columns: columns))
        var differences = [Double](repeating: 0, count: chunkRows * columns)          // [chunk, columns] T − W⊙K
        var rowErrors = [Double](repeating: 0, count: rows * 2)                       // [rows, 2] masked, updated
        for firstRow in stride(from: 0, to: rows, by: chunkRows) {
            let count = min(chunkRows, rows - firstRow)
            var penalties = [Double](repeating: 0, count: count)                       // δ‖d‖² + Σ_dead d_i²
            for r in 0..<count {
                var updatedPenalty = 0.0
                for c in 0..<columns {
                    let i = (firstRow + r) * columns + c
                    let targetValue = target?[i] ?? Double(original[i])
                    let d = targetValue - (mask[i] ? 0 : Double(original[i]))
                    differences[r * columns + c] = d
                    penalties[r] += liveInputs[c] ? damping * d * d : (1 + damping) * d * d
                    if liveInputs[c] {
                        let e = targetValue - updated[i]
                        updatedPenalty += damping * e * e
                    }
                }
                rowErrors[2 * (firstRow + r) + 1] = max(0, rowLosses[firstRow + r] - updatedPenalty)
            }
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit,
                        Int32(count), Int32(columns), 1, inverseFactor, Int32(columns), &differences, Int32(columns))
            for r in 0..<count {
                var energy = 0.0
                for c in 0..<columns { energy += differences[r * columns + c] * differences[r * columns + c] }
                rowErrors[2 * (firstRow + r)] = max(0, energy - penalties[r])
            }
        }
        let sums = try (band ?? .alone(rows: rows)).sumOverRows(rowErrors, width: 2)
        return (sums[0], sums[1])
    }
}

/// U with (H + δI)⁻¹ = UᵀU, U upper triangular, where a zero diagonal entry of H (a dead input)
/// counts as 1. When a factorisation fails δ is multiplied by 10 (δ = 0 restarts from
/// 1e-8·mean|diag H|) up to `maximumRedampings` times.
/// hessian: [n, n] row-major symmetric (not copied more than once at a time: it can be ~1 GB)
/// Returns factor: [n, n] row-major upper triangular, the damping used and how many failures preceded it.
func upperCholeskyOfInverse(_ hessian: [Double], n: Int, damping initialDamping: Double, function: String) throws
    -> (factor: [Double], damping: Double, redamped: Int) {
    var damping = initialDamping
    var failures = 0
    while true {
        var matrix = hessian
        for i in 0..<n { matrix[i * n + i] = (hessian[i * n + i] == 0 ? 1 : hessian[i * n + i]) + damping }
        if upperCholeskyFactorOfInverse(&matrix, n: n),
           (0..<n).allSatisfy({ matrix[$0 * n + $0] > 0 && matrix[$0 * n + $0].isFinite }) {
            return (matrix, damping, failures)
        }
        failures += 1
        guard failures <= maximumRedampings else {
            throw PruneDistError(.numerics,
                "\(function): Cholesky factorisation of the [\(n), \(n)] Hessian failed \(failures) times, last with damping \(damping) added to its diagonal (initial \(initialDamping)); the calibration statistics are unusable")
        }
        damping = damping > 0 ? damping * 10 : fallbackDamping(hessian, n: n)
    }
}

/// A damping to start from when none was asked for: small against the Hessian's diagonal.
/// hessian: [n, n]
func fallbackDamping(_ hessian: [Double], n: Int) -> Double {
    var sum = 0.0
    for i in 0..<n { sum += abs(hessian[i * n + i]) }
    return sum > 0 ? 1e-8 * sum / Double(n) : 1e-8
}

/// Left-to-right OBS elimination, block by block. After a column is decided, its error (w − q)/U_ii
/// is spread over the rest of its block at once (dger) and over later blocks lazily (one dgemm per block).
/// A block is worked on transposed, [width, rows], so each column's reads and updates run along contiguous rows.
/// weight: [rows, columns] row-major (the band's rows), replaced by the pruned and updated weight
/// inverseFactor: [columns, columns] upper U, (H + δI)⁻¹ = UᵀU
/// Returns mask: [rows, columns], true where pruned; rowLosses: [rows] Σ ((w − q)/U_ii)² over the row's columns.
func eliminateColumns(weight: inout [Double], rows: Int, columns: Int, inverseFactor u: [Double],
                      pattern: SparsityPattern, blocksize: Int, band: RowBand) throws -> (mask: [Bool], rowLosses: [Double]) {
    var mask = [Bool](repeating: false, count: rows * columns)
    var rowLosses = [Double](repeating: 0, count: rows)
    var groupWidth = 0
    if case let .nOfM(_, m) = pattern { groupWidth = m }
    var groupScores = [Double](repeating: 0, count: groupWidth)
    var sortedScratch = [Double](), positions = [Int]()
    var block = [Double](repeating: 0, count: rows * min(blocksize, columns))         // [width, rows] W[:, block]ᵀ
    var blockMask = [Bool](repeating: false, count: block.count)                      // [width, rows]
    var blockErrors = [Double](repeating: 0, count: block.count)                      // [width, rows] Errᵀ
    for blockStart in stride(from: 0, to: columns, by: blocksize) {
        let blockEnd = min(blockStart + blocksize, columns)
        let width = blockEnd - blockStart
        for row in 0..<rows {
            for c in 0..<width { block[c * rows + row] = weight[row * columns + blockStart + c] }
        }
        for k in 0..<(width * rows) { blockMask[k] = false; blockErrors[k] = 0 }

        if case let .unstructured(fraction) = pattern, fraction > 0 {
            // One threshold over the whole block (all rows, every band's), on scores before any update inside it;
            // "≤" prunes int(numel·p)+1 weights, as the reference does.
            var scores = [Double](repeating: 0, count: width * rows)                  // [width, rows]
            for c in 0..<width {
                let d = u[(blockStart + c) * columns + blockStart + c]
                for row in 0..<rows { scores[c * rows + row] = block[c * rows + row] * block[c * rows + row] / (d * d) }
            }
            // The k-th smallest score, found by selection on a copy (the scores are read again below); the order of
            // the gathered scores does not matter to it.
            var selection = try band.gather(scores, width: width)
            let count = band.totalRows * width
            let threshold = cengine_select(&selection, count, Int(Double(count) * fraction))
            for k in 0..<(width * rows) where scores[k] <= threshold { blockMask[k] = true }
        }

        for i in blockStart..<blockEnd {
            let c = i - blockStart
            if case let .nOfM(n, m) = pattern, c % m == 0 {
                // Scores of this group use the weights as already updated by the columns before it.
                for row in 0..<rows {
                    for k in 0..<m {
                        let w = block[(c + k) * rows + row], d = u[(i + k) * columns + i + k]
                        groupScores[k] = w * w / (d * d)
                    }
                    lowestPositions(n, of: groupScores[...], sorted: &sortedScratch, into: &positions)
                    for k in positions { blockMask[(c + k) * rows + row] = true }
                }
            }
            let diagonal = u[i * columns + i]
            var anyPruned = false
            for row in 0..<rows where blockMask[c * rows + row] {
                blockErrors[c * rows + row] = block[c * rows + row] / diagonal
                anyPruned = true
            }
            guard anyPruned else { continue }
            // Wᵀ[i..<blockEnd, :] −= U[i, i..<blockEnd] ⊗ err
            blockErrors.withUnsafeBufferPointer { errors in
                u.withUnsafeBufferPointer { factor in
                    block.withUnsafeMutableBufferPointer { w in
                        cblas_dger(CblasRowMajor, Int32(blockEnd - i), Int32(rows), -1,
                                   factor.baseAddress! + i * columns + i, 1,
                                   errors.baseAddress! + c * rows, 1,
                                   w.baseAddress! + c * rows, Int32(rows))
                    }
                }
            }
            // The update leaves rounding residue where the weight should be exactly zero.
            for row in 0..<rows where blockMask[c * rows + row] { block[c * rows + row] = 0 }
        }

        for row in 0..<rows {
            for c in 0..<width {
                weight[row * columns + blockStart + c] = block[c * rows + row]
                mask[row * columns + blockStart + c] = blockMask[c * rows + row]
                rowLosses[row] += blockErrors[c * rows + row] * blockErrors[c * rows + row]
            }
        }
        if blockEnd < columns {
            // W[:, blockEnd...] −= Err[rows, width] · U[blockStart..<blockEnd, blockEnd...]
            blockErrors.withUnsafeBufferPointer { errors in
                u.withUnsafeBufferPointer { factor in
                    weight.withUnsafeMutableBufferPointer { w in
                        dgemm(.transpose, .none, m: rows, n: columns - blockEnd, k: width, alpha: -1,
                              errors.baseAddress!, lda: rows,
                              factor.baseAddress! + blockStart * columns + blockEnd, ldb: columns,
                              beta: 1, w.baseAddress! + blockEnd, ldc: columns)
                    }
                }
            }
        }
    }
    return (mask, rowLosses)
}

/// Rows per chunk of the error products, so their scratch stays near 16 MB whatever the layer size.
func errorChunkRows(columns: Int) -> Int { max(1, (1 << 20) / columns) }

/// Output errors under one Hessian of two candidates against a target weight T:
/// tr((T − W⊙K) H (T − W⊙K)ᵀ) for the original W with the final mask applied (K = kept entries) and
/// tr((T − Ŵ) H (T − Ŵ)ᵀ) for the solver's Ŵ. Rows go in chunks, both candidates stacked in one dgemm; each row's
/// error is summed on its own and the rows added in order (over every band's rows when `band` has several members).
/// original: [rows, columns]; mask: [rows, columns], true = pruned; updated: [rows, columns] Ŵ
/// target: [rows, columns] T, or nil for T = original; hessian: [columns, columns]
func outputErrors(original: [Float], mask: [Bool], updated: [Double], target: [Double]?, rows: Int, columns: Int,
                  hessian: [Double], chunkRows requestedChunkRows: Int? = nil, band: RowBand? = nil) throws -> (masked: Double, updated: Double) {
    let chunkRows = min(rows, requestedChunkRows ?? errorChunkRows(columns: columns))
    var differences = [Double](repeating: 0, count: 2 * chunkRows * columns)   // [2·chunk, columns]
    var projected = differences                                                // [2·chunk, columns] D H
    var rowErrors = [Double](repeating: 0, count: rows * 2)                    // [rows, 2] masked, updated
    for firstRow in stride(from: 0, to: rows, by: chunkRows) {
        let chunk = min(chunkRows, rows - firstRow) * columns
        for k in 0..<chunk {
            let i = firstRow * columns + k
            let targetValue = target?[i] ?? Double(original[i])
            differences[k] = targetValue - (mask[i] ? 0 : Double(original[i]))
            differences[chunk + k] = targetValue - updated[i]
        }
        dgemm(.none, .none, m: 2 * chunk / columns, n: columns, k: columns, differences, lda: columns,
              hessian, ldb: columns, &projected, ldc: columns)
        for k in 0..<chunk {
            let row = firstRow + k / columns
            rowErrors[2 * row] += differences[k] * projected[k]
            rowErrors[2 * row + 1] += differences[chunk + k] * projected[chunk + k]
        }
    }
    let sums = try (band ?? .alone(rows: rows)).sumOverRows(rowErrors, width: 2)
    return (sums[0], sums[1])
}
