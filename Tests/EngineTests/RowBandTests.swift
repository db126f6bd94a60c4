import Foundation
import XCTest
@testable import Engine

/// A linear solved by several members, each on a band of rows, must give the bits of one member solving it alone
/// (the pruned weight and the ridge; the reported errors to rounding). The members run on threads here and meet in a
/// `RowBandExchange`, as `prune --threads N` does (the MPI path: the end-to-end tests at -n 2 and -n 4).
final class RowBandTests: XCTestCase {

    func testBandsSplitRowsEvenlyInOrder() {
        XCTAssertEqual(RowBand.split(rows: 10, members: 3), [0..<4, 4..<7, 7..<10])
        XCTAssertEqual(RowBand.split(rows: 2, members: 3), [0..<1, 1..<2, 2..<2])
        XCTAssertEqual(RowBand.split(rows: 576, members: 2), [0..<288, 288..<576])
    }

    func testSparseGPTInBandsMatchesAlone() throws {
        let (tokens, columns, rows) = (300, 64, 37)
        let x = syntheticInputs(tokens: tokens, columns: columns, noise: 0, seed: 81).dense
        let hessian = gram(x, x, tokens: tokens, columns: columns)
        let weight = randomWeight(rows: rows, columns: columns, seed: 82)
        for pattern in [SparsityPattern.unstructured(fraction: 0.5), .unstructured(fraction: 0.7), .nOfM(n: 2, m: 4)] {
            let alone = try pruneSparseGPT(weight: weight, shape: [rows, columns], hessian: hessian, pattern: pattern, blocksize: 16)
            for members in [2, 3, 5] {
                let bands = try solveInBands(rows: rows, columns: columns, members: members) { band, part in
                    try pruneSparseGPT(weight: part, shape: [band.rows.count, columns], hessian: hessian, pattern: pattern,
                                       blocksize: 16, band: band)
                } weight: { weight }
                assertSame(bands, alone, "SparseGPT \(pattern), \(members) members")
            }
        }
    }

    func testKRPInBandsMatchesAlone() throws {
        let (tokens, columns, rows) = (300, 48, 29)
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.3, seed: 91)
        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let cross = gram(xHat, x, tokens: tokens, columns: columns)
        let dense = gram(x, x, tokens: tokens, columns: columns)
        // Large weights make the ladder climb past its first ridges (mean squared change ≥ 1), so the members must
        // agree on the whole band's change to stop at the same ridge.
        let small = randomWeight(rows: rows, columns: columns, seed: 92)
        let large = small.map { $0 * 40 }
        for (weight, name) in [(small, "small"), (large, "large")] {
            for rule in [KRPRectification.legacy, .towardDense(ratio: 0.3, correction: 0.5, perInput: true)] {
                for denseHessian in [nil, dense] {
                    let alone = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, crossTerm: cross,
                                             pattern: .unstructured(fraction: 0.5), blocksize: 16, denseHessian: denseHessian,
                                             rectification: rule)
                    for members in [2, 4] {
                        let bands = try solveInBands(rows: rows, columns: columns, members: members) { band, part in
                            try pruneKRP(weight: part, shape: [band.rows.count, columns], hessian: hessian, crossTerm: cross,
                                         pattern: .unstructured(fraction: 0.5), blocksize: 16, denseHessian: denseHessian,
                                         rectification: rule, band: band)
                        } weight: { weight }
                        assertSame(bands, alone, "KRP \(name) weights, \(rule), dense Hessian \(denseHessian != nil), \(members) members")
                    }
                    if name == "large", rule == .legacy {
                        XCTAssertGreaterThan(try XCTUnwrap(alone.ridge), 1e-4 * 10 * hessianScale(hessian, columns),
                                             "the ladder went past its first two ridges")
                    }
                }
            }
        }
    }

    /// KRP with its cross term against the dense outputs (W Cᵀ, [rows, columns], as runs collect it for down_proj):
    /// each member reads its rows of it.
    func testKRPWithTheCrossTermAgainstOutputsInBandsMatchesAlone() throws {
        let (tokens, columns, rows) = (300, 48, 29)
        let (x, xHat) = syntheticInputs(tokens: tokens, columns: columns, noise: 0.3, seed: 93)
        let hessian = gram(xHat, xHat, tokens: tokens, columns: columns)
        let cross = gram(xHat, x, tokens: tokens, columns: columns)
        let weight = randomWeight(rows: rows, columns: columns, seed: 94)
        var product = [Double](repeating: 0, count: rows * columns)
        dgemm(.none, .transpose, m: rows, n: columns, k: columns, weight.map(Double.init), lda: columns, cross, ldb: columns,
              &product, ldc: columns)
        let projected = product
        for rule in [KRPRectification.legacy, .towardDense(ratio: 3, correction: 0.3, perInput: true)] {
            let alone = try pruneKRP(weight: weight, shape: [rows, columns], hessian: hessian, cross: .outputs(projected),
                                     pattern: .unstructured(fraction: 0.5), blocksize: 16, rectification: rule)
            for members in [2, 3] {
                let bands = try solveInBands(rows: rows, columns: columns, members: members) { band, part in
                    try pruneKRP(weight: part, shape: [band.rows.count, columns], hessian: hessian,
                                 cross: .outputs(band.slice(projected, columns: columns)),
                                 pattern: .unstructured(fraction: 0.5), blocksize: 16, rectification: rule, band: band)
                } weight: { weight }
                assertSame(bands, alone, "KRP against outputs, \(rule), \(members) members")
            }
        }
    }

    func testOutputEnergyInBandsMatchesAlone() throws {
        let (columns, rows) = (32, 21)
        let x = syntheticInputs(tokens: 200, columns: columns, noise: 0, seed: 71).dense
        let hessian = gram(x, x, tokens: 200, columns: columns)
        let weight = randomWeight(rows: rows, columns: columns, seed: 72)
        let alone = try outputEnergy(weight: weight, rows: rows, columns: columns, hessian: hessian)
        let energies = try solveInBands(rows: rows, columns: columns, members: 3) { band, part in
            PruneResult(weight: [], errorBefore: try outputEnergy(weight: part, rows: band.rows.count, columns: columns,
                                                                  hessian: hessian, band: band))
        } weight: { weight }
        XCTAssertEqual(try XCTUnwrap(energies.errorBefore), alone, accuracy: 1e-12 * alone)
    }

    /// A band whose weight does not hold its rows is refused.
    func testBandOfTheWrongSizeIsRefused() {
        let band = RowBand(rows: 0..<2, totalRows: 4) { $0 }
        XCTAssertThrowsError(try pruneSparseGPT(weight: [Float](repeating: 1, count: 12), shape: [3, 4],
                                                hessian: identity(4), pattern: .unstructured(fraction: 0.5), band: band)) { error in
            XCTAssertTrue("\(error)".contains("row band 0..<2 of 4 holds 2"), "\(error)")
        }
    }

    // MARK: helpers

    /// Runs `solve` for every member's band on its own thread; returns the bands' weights concatenated and member 0's
    /// other figures (every member must report the same ones, checked here).
    private func solveInBands(rows: Int, columns: Int, members: Int,
                              _ solve: @escaping @Sendable (RowBand, [Float]) throws -> PruneResult,
                              weight: () -> [Float]) throws -> PruneResult {
        let whole = weight()
        let exchange = RowBandExchange(members: members)
        let results = Results(count: members)
        // One thread per member, as `prune --threads` runs them: they wait for each other in the exchange.
        onThreadsOfTheirOwn(members) { member in
            let band = RowBand(member: member, of: members, totalRows: rows) { try exchange.gather($0, member: member) }
            results.set(member, Result { try solve(band, band.slice(whole, columns: columns)) })
        }
        let solved = try results.all.map { try $0!.get() }
        for (member, result) in solved.enumerated().dropFirst() {
            XCTAssertEqual(result.errorBefore, solved[0].errorBefore, "member \(member)")
            XCTAssertEqual(result.errorAfter, solved[0].errorAfter, "member \(member)")
            XCTAssertEqual(result.ridge, solved[0].ridge, "member \(member)")
            XCTAssertEqual(result.damping, solved[0].damping, "member \(member)")
        }
        var combined = solved[0]
        combined.weight = solved.flatMap(\.weight)
        return combined
    }

    private func assertSame(_ bands: PruneResult, _ alone: PruneResult, _ message: String) {
        XCTAssertEqual(bands.weight.count, alone.weight.count, message)
        XCTAssertTrue(bands.weight.map(\.bitPattern) == alone.weight.map(\.bitPattern), "\(message): weights differ in bits")
        // The errors' products are small GEMMs whose M changes with the band; OpenBLAS keeps the bits of each row at
        // the layer sizes of a real model but not always at these tiny ones, so the report's figures agree to rounding.
        let before = alone.errorBefore ?? .nan, after = alone.errorAfter ?? .nan
        XCTAssertEqual(bands.errorBefore ?? .infinity, before, accuracy: 1e-12 * before, message)
        XCTAssertEqual(bands.errorAfter ?? .infinity, after, accuracy: 1e-12 * after, message)
        XCTAssertEqual(bands.ridge, alone.ridge, message)
        XCTAssertEqual(bands.redamped, alone.redamped, message)
    }

    /// Correlated inputs with per-column scales (x) and a noisy copy (x̂). → [tokens, columns] each
    private func syntheticInputs(tokens: Int, columns: Int, noise: Double, seed: UInt64) -> (dense: [Double], pruned: [Double]) {
        var random = SeededNormal(seed: seed)
        let base = (0..<(tokens * columns)).map { _ in random.next() }
        let mixing = (0..<(columns * columns)).map { _ in random.next() / Double(columns).squareRoot() }
        let scales = (0..<columns).map { 0.2 + 3 * Double($0 % 7) / 7 }
        var dense = [Double](repeating: 0, count: tokens * columns)
        dgemm(.none, .none, m: tokens, n: columns, k: columns, base, lda: columns, mixing, ldb: columns, &dense, ldc: columns)
        for i in dense.indices { dense[i] *= scales[i % columns] }
        let pruned = dense.enumerated().map { $0.element + noise * scales[$0.offset % columns] * random.next() }
        return (dense, pruned)
    }

    /// AᵀB / tokens. a, b: [tokens, columns] → [columns, columns]
    private func gram(_ a: [Double], _ b: [Double], tokens: Int, columns: Int) -> [Double] {
        var result = [Double](repeating: 0, count: columns * columns)
        dgemm(.transpose, .none, m: columns, n: columns, k: tokens, alpha: 1 / Double(tokens), a, lda: columns,
              b, ldb: columns, &result, ldc: columns)
        return result
    }

    private func randomWeight(rows: Int, columns: Int, seed: UInt64) -> [Float] {
        var random = SeededNormal(seed: seed)
        return (0..<(rows * columns)).map { _ in Float(random.next() / Double(columns).squareRoot()) }
    }

    private func identity(_ n: Int) -> [Double] { (0..<(n * n)).map { $0 / n == $0 % n ? 1 : 0 } }

    private func hessianScale(_ hessian: [Double], _ columns: Int) -> Double {
        (0..<columns).reduce(0) { $0 + hessian[$1 * columns + $1] } / Double(columns)
    }
}

private final class Results: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Result<PruneResult, Error>?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: Result<PruneResult, Error>) { lock.withLock { values[index] = value } }
    var all: [Result<PruneResult, Error>?] { lock.withLock { values } }
}
