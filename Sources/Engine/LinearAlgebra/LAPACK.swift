import COpenBLAS

// Double-precision LAPACK wrappers for symmetric positive definite matrices stored row-major.
//
// LAPACKE's ROW_MAJOR entry points transpose (copy) their input, 1.7x slower on this machine
// (measured on the project's Xeon; docs/decisions.md, Speed). A symmetric row-major matrix is its own transpose, so the
// routines below call COL_MAJOR with the lower triangle, which is the row-major upper triangle of the same buffer
// (upperCholeskyFactorOfInverse works on the reversed buffer and says how).

private let lowerInColumnMajor = Int8(UInt8(ascii: "L"))

/// Cholesky factorisation A = UᵀU, in place.
/// - a: [n, n] row-major; only the upper triangle is read. On success it holds U (upper triangular,
///   strictly lower part zeroed).
/// - Returns: false when A is not positive definite (the buffer then holds a partial factor).
public func choleskyUpper(_ a: inout [Double], n: Int) -> Bool {
    precondition(a.count == n * n, "choleskyUpper: expected \(n)×\(n) values, got \(a.count)")
    if n == 0 { return true }
    let info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, lowerInColumnMajor, Int32(n), &a, Int32(n))
    guard info == 0 else { return false }
    zeroStrictlyLower(&a, n: n)
    return true
}

/// Inverse of A from its Cholesky factor U (A = UᵀU), in place.
/// - u: [n, n] row-major upper factor from `choleskyUpper`; on success it holds A⁻¹ with both
///   triangles filled.
/// - Returns: false when U has a zero on its diagonal.
public func inverseFromCholeskyUpper(_ u: inout [Double], n: Int) -> Bool {
    precondition(u.count == n * n, "inverseFromCholeskyUpper: expected \(n)×\(n) values, got \(u.count)")
    if n == 0 { return true }
    let info = LAPACKE_dpotri(LAPACK_COL_MAJOR, lowerInColumnMajor, Int32(n), &u, Int32(n))
    guard info == 0 else { return false }
    for i in 0..<n {
        for j in (i + 1)..<n { u[j * n + i] = u[i * n + j] }
    }
    return true
}

/// The upper Cholesky factor of A⁻¹ (A⁻¹ = UᵀU), in place, in 2/3 n³ flops instead of the 4/3 n³ of factorising A,
/// inverting it and factorising the inverse. With J the order reversal, J A J = RᵀR (R upper) gives A = MMᵀ with
/// M = J Rᵀ J upper, so A⁻¹ = M⁻ᵀM⁻¹ and U = M⁻¹ = J R⁻ᵀ J. J A J is the flat reverse of the buffer, and the
/// row-major J R⁻ᵀ J is the flat reverse of the column-major R⁻¹: one dpotrf and one dtrtri between two reversals.
/// - a: [n, n] row-major symmetric, both triangles filled. On success it holds U (upper triangular, strictly lower
///   part zeroed).
/// - Returns: false when A is not positive definite (the buffer then holds a partial factor).
public func upperCholeskyFactorOfInverse(_ a: inout [Double], n: Int) -> Bool {
    precondition(a.count == n * n, "upperCholeskyFactorOfInverse: expected \(n)×\(n) values, got \(a.count)")
    if n == 0 { return true }
    let upperInColumnMajor = Int8(UInt8(ascii: "U")), nonUnit = Int8(UInt8(ascii: "N"))
    a.reverse()
    guard LAPACKE_dpotrf(LAPACK_COL_MAJOR, upperInColumnMajor, Int32(n), &a, Int32(n)) == 0,
          LAPACKE_dtrtri(LAPACK_COL_MAJOR, upperInColumnMajor, nonUnit, Int32(n), &a, Int32(n)) == 0 else { return false }
    a.reverse()
    zeroStrictlyLower(&a, n: n)
    return true
}

/// Solves X A = B for X, with A = UᵀU symmetric, in place: X = B U⁻¹ U⁻ᵀ, each row of B on its own (a single row b
/// is the solution of A x = b). The rows are TRSM's M, so a band of rows solved alone gets the bits it gets among
/// all rows (RowBand).
/// - u: [n, n] row-major upper factor from `choleskyUpper`
/// - b: [rows, n] row-major right-hand sides, replaced by X
public func solveRowsWithCholeskyUpper(_ u: [Double], n: Int, _ b: inout [Double], rows: Int) {
    precondition(u.count == n * n && b.count == rows * n, "solveRowsWithCholeskyUpper: shape mismatch")
    if n == 0 || rows == 0 { return }
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit,
                Int32(rows), Int32(n), 1, u, Int32(n), &b, Int32(n))
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit,
                Int32(rows), Int32(n), 1, u, Int32(n), &b, Int32(n))
}

/// Clears what LAPACK left of the input below the diagonal, so the buffer is exactly U.
private func zeroStrictlyLower(_ a: inout [Double], n: Int) {
    for i in 1..<max(n, 1) {
        for j in 0..<i { a[i * n + j] = 0 }
    }
}
