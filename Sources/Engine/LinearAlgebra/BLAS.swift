import COpenBLAS

/// Thin, row-major wrappers over OpenBLAS. Shapes follow the math: C[m,n] = alpha·op(A)[m,k]·op(B)[k,n] + beta·C.

public enum Transpose: Sendable {
    case none, transpose
    var cblas: CBLAS_TRANSPOSE { self == .none ? CblasNoTrans : CblasTrans }
}

/// C[m,n] = alpha · op(A) · op(B) + beta · C, all row-major Float32.
/// A is [m,k] (or [k,m] when transposed), B is [k,n] (or [n,k] when transposed).
@inline(__always)
public func sgemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                  alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int,
                  _ b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(n), Int32(k),
                alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Double-precision twin of `sgemm`.
@inline(__always)
public func dgemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                  alpha: Double = 1, _ a: UnsafePointer<Double>, lda: Int,
                  _ b: UnsafePointer<Double>, ldb: Int,
                  beta: Double = 0, _ c: UnsafeMutablePointer<Double>, ldc: Int) {
    cblas_dgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(n), Int32(k),
                alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Sets the number of OpenBLAS threads (1 per rank when several ranks share a node).
public func setBLASThreads(_ n: Int) {
    openblas_set_num_threads(Int32(n))
}

/// The number of OpenBLAS threads (OPENBLAS_NUM_THREADS, --threads, or OpenBLAS's default of every core).
public func blasThreads() -> Int {
    Int(openblas_get_num_threads())
}

/// The OpenBLAS kernel family in use (e.g. "Haswell"), for logs and benchmark reports.
public func blasKernelName() -> String {
    guard let name = openblas_get_corename() else { return "unknown" }
    return String(cString: name)
}
