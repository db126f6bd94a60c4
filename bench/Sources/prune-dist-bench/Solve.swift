import COpenBLAS
import Engine
import Foundation

// `prune-dist-bench solve` (issue 15, target 6): the SparseGPT solve of one wide linear (default: the down_proj of a
// 0.5 B-parameter model, [896, 4864], Hessian from 2048 tokens), split into its factorisation (the Cholesky factor of
// H⁻¹ from one dpotrf and one dtrtri: LAPACK) and the rest (column elimination with lazy dgemm updates, output
// errors), in CPU seconds next to this machine's dgemm rate.

func dgemmRate(n: Int, repeats: Int) -> Double {
    var random = SplitMix64(seed: 5)
    let a = (0..<(n * n)).map { _ in random.nextGaussian() }, b = a
    var c = [Double](repeating: 0, count: n * n)
    let seconds = best(repeats) {
        a.withUnsafeBufferPointer { pa in
            c.withUnsafeMutableBufferPointer { pc in
                dgemm(.none, .transpose, m: n, n: n, k: n, alpha: 1, pa.baseAddress!, lda: n, pa.baseAddress!, ldb: n,
                      beta: 0, pc.baseAddress!, ldc: n)
            }
        }
    }
    _ = b
    return 2 * Double(n) * Double(n) * Double(n) / seconds / 1e9
}

func runSolveBench(rows: Int, columns: Int, tokens: Int, repeats: Int) throws {
    var random = SplitMix64(seed: 9)
    // A Hessian with a LLaMA-like spread: Σ x xᵀ / N of tokens whose features have scales over two orders of magnitude.
    let scales = (0..<columns).map { _ in exp(2.3 * random.nextGaussian()) }
    var x = [Double](repeating: 0, count: tokens * columns)
    for t in 0..<tokens { for j in 0..<columns { x[t * columns + j] = random.nextGaussian() * scales[j] } }
    var hessian = [Double](repeating: 0, count: columns * columns)
    x.withUnsafeBufferPointer { px in
        hessian.withUnsafeMutableBufferPointer { ph in
            dgemm(.transpose, .none, m: columns, n: columns, k: tokens, alpha: 1 / Double(tokens), px.baseAddress!, lda: columns,
                  px.baseAddress!, ldb: columns, beta: 0, ph.baseAddress!, ldc: columns)
        }
    }
    let weight = (0..<(rows * columns)).map { _ in Float(random.nextGaussian()) * 0.02 }
    let n = Double(columns)
    let factorFlops = n * n * n / 3 + n * n * n / 3                      // dpotrf, dtrtri
    var damped = hessian
    let mean = (0..<columns).reduce(0.0) { $0 + hessian[$1 * columns + $1] } / n
    for i in 0..<columns { damped[i * columns + i] += 0.01 * mean }
    let factorSeconds = best(repeats) {
        var m = damped
        precondition(upperCholeskyFactorOfInverse(&m, n: columns))
    }
    var result: PruneResult? = nil
    let wholeSeconds = try (0..<repeats).map { _ in
        try cpuSecondsThrowing { result = try pruneSparseGPT(weight: weight, shape: [rows, columns], hessian: hessian, pattern: .unstructured(fraction: 0.5)) }
    }.min()!
    let peak = dgemmRate(n: 2048, repeats: 3)
    print(String(format: "SparseGPT 50 %% solve of one [%d, %d] linear (Hessian of %d tokens), CPU seconds, best of %d; dgemm 2048³ %.1f GFLOP/s",
                 rows, columns, tokens, repeats, peak))
    print(String(format: "  whole solve            %7.3f s", wholeSeconds))
    print(String(format: "  factorisation (LAPACK) %7.3f s  %6.1f GFLOP/s  %5.1f %% of dgemm", factorSeconds, factorFlops / factorSeconds / 1e9,
                 100 * factorFlops / factorSeconds / 1e9 / peak))
    // Lazy updates: Σ over blocks of 2·rows·width·(columns after the block) ≈ rows·n². The run report's output errors:
    // the updated candidate's from the eliminations' losses, the pruned-only one a TRSM with U, rows·n².
    let lazyFlops = Double(rows) * n * n, errorFlops = Double(rows) * n * n
    let rest = wholeSeconds - factorSeconds
    print(String(format: "  elimination + errors   %7.3f s  (%.1f GFLOP of lazy updates + %.1f GFLOP of output errors: %.1f GFLOP/s)", rest,
                 lazyFlops / 1e9, errorFlops / 1e9, (lazyFlops + errorFlops) / rest / 1e9))
    let essential = factorFlops + lazyFlops
    print(String(format: "  floor at the dgemm rate: %.2f s for the factorisation and lazy updates (%.1f GFLOP), %.2f s with the errors",
                 essential / peak / 1e9, essential / 1e9, (essential + errorFlops) / peak / 1e9))
    print(String(format: "  solve at %.1f %% of dgemm counting the factorisation and lazy updates only, %.1f %% counting the errors too (target ≥ 50 %%)",
                 100 * essential / wholeSeconds / 1e9 / peak, 100 * (essential + errorFlops) / wholeSeconds / 1e9 / peak))
    print(String(format: "  output error per token: %.4g masked, %.4g after the solve", result?.errorBefore ?? .nan, result?.errorAfter ?? .nan))
}

func cpuSecondsThrowing(_ body: () throws -> Void) throws -> Double {
    var failure: Error? = nil
    let seconds = cpuSeconds { do { try body() } catch { failure = error } }
    if let failure { throw failure }
    return seconds
}
