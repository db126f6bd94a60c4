import CEngineKernels
import COpenBLAS
import Dispatch

/// What a pruning method needs to know about the inputs of one linear group.
public struct StatisticsNeeds: Sendable, Equatable {
    /// Σ x̂x̂ᵀ over tokens (SparseGPT, KRP).
    public var hessian: Bool
    /// Σ x̂xᵀ: pruned-stream input against dense-stream input (KRP's cross term).
    public var cross: Bool
    /// 0: the cross term is Σ x̂xᵀ, [d, d]. n > 0: it is Σ y x̂ᵀ, [n, d], against the dense outputs y = W x of the
    /// input's one linear (n outputs), which is W times the former: KRP needs no more, and for a linear with fewer
    /// outputs than inputs (down_proj) it costs n/d of the GEMM and of the memory.
    public var crossOutputs: Int
    /// Σ x̂_j² per input column (Wanda); the diagonal of the Hessian when that is collected.
    public var columnNorms: Bool

    public init(hessian: Bool = false, cross: Bool = false, crossOutputs: Int = 0, columnNorms: Bool = false) {
        self.hessian = hessian
        self.cross = cross
        self.crossOutputs = cross ? crossOutputs : 0
        self.columnNorms = columnNorms
    }

    public static let none = StatisticsNeeds()
}

/// Sums over calibration tokens of one linear input, kept in Double across batches. Each batch is
/// multiplied in Float32 by OpenBLAS (ssyrk / sgemm, at GEMM speed) and then added into the Double sums,
/// so rounding does not grow with the number of tokens. Sums stay unnormalised until every rank's part
/// has been added; `normalise()` divides once by the global token count.
public struct InputStatistics: Sendable {
    public let dimension: Int
    public let needs: StatisticsNeeds
    /// Σ x̂x̂ᵀ, [d, d] row-major, both triangles filled once `symmetrise()` has run.
    public var hessian: [Double]
    /// Σ x̂xᵀ, [d, d] row-major (row index: pruned-stream feature, column: dense-stream feature), or with
    /// `needs.crossOutputs` = n, Σ y x̂ᵀ, [n, d] (row index: dense output, column: pruned-stream feature).
    public var cross: [Double]
    /// Σ x̂_j², [d].
    public var columnNorms: [Double]
    public var tokens: Int
    /// [d, d] Float32 product of the last batch, reused by `accumulate`; released by `takePacked()`.
    private var product: [Float] = []

    public init(dimension d: Int, needs: StatisticsNeeds) {
        dimension = d
        self.needs = needs
        hessian = needs.hessian ? [Double](repeating: 0, count: d * d) : []
        cross = needs.cross ? [Double](repeating: 0, count: (needs.crossOutputs > 0 ? needs.crossOutputs : d) * d) : []
        columnNorms = needs.columnNorms ? [Double](repeating: 0, count: d) : []
        tokens = 0
    }

    /// One batch's products before they are added into the Double sums. Computing them apart from the sums lets
    /// several batches be multiplied at once on several threads and still be added in batch order, so the sums are
    /// the same bits whatever the number of threads.
    public struct BatchProducts: Sendable {
        /// [d, d] Float32 upper triangle of x̂ᵀx̂ (when the Hessian is needed)
        var hessian: [Float] = []
        /// [d, d] Float32 x̂ᵀx, or [n, d] yᵀx̂ (when the cross term is needed)
        var cross: [Float] = []
        /// [d] Σ x̂_j² of the batch, each in Double (when column norms are needed)
        var columnNorms: [Double] = []
        var tokens = 0
        public init() {}
    }

    /// Adds one batch of inputs.
    /// - pruned: [tokens, d] inputs of the linear in the model being pruned (x̂)
    /// - dense:  [tokens, d] inputs of the same linear in the dense model (x), when `needs.cross`; with
    ///   `needs.crossOutputs` = n, [tokens, n] the dense model's outputs of that linear (y)
    public mutating func accumulate(pruned: [Float], dense: [Float]? = nil, tokens n: Int) {
        var products = BatchProducts()
        swap(&products.hessian, &product)  // kept from batch to batch: a fresh [d, d] per sequence cost a page-faulting allocation and a memset
        multiply(pruned: pruned, dense: dense, tokens: n, into: &products)
        add(products)
        swap(&products.hessian, &product)
    }

    /// Adds batches 0..<count, multiplying up to `threads` of them at once (one batch per thread, OpenBLAS
    /// single-threaded inside: the caller sets it) and adding them in batch order.
    /// - batch: the inputs of batch i: pruned [tokens, d] and, when `needs.cross`, dense [tokens, d] (or outputs [tokens, n])
    public mutating func accumulate(batches count: Int, threads: Int, tokens n: Int,
                                    batch: (Int) -> (pruned: [Float], dense: [Float]?)) {
        if threads <= 1 || count <= 1 {
            for i in 0..<count { let b = batch(i); accumulate(pruned: b.pruned, dense: b.dense, tokens: n) }
            return
        }
        // One products buffer per thread, reused from group to group (no copy: each is written by its thread only).
        var slots = [BatchProducts](repeating: BatchProducts(), count: min(threads, count))
        for first in stride(from: 0, to: count, by: slots.count) {
            let group = min(slots.count, count - first)
            forEachConcurrently(&slots, threads: slots.count) { t, _, products in
                guard t < group else { return }  // the last group can be smaller
                let input = batch(first + t)
                multiply(pruned: input.pruned, dense: input.dense, tokens: n, into: &products)
            }
            for t in 0..<group { add(slots[t]) }
        }
    }

    /// One batch's products into `products` (its arrays reused when they have the size).
    func multiply(pruned: [Float], dense: [Float]?, tokens n: Int, into products: inout BatchProducts) {
        let d = dimension
        precondition(pruned.count == n * d, "accumulate: expected \(n)×\(d) inputs, got \(pruned.count)")
        products.tokens = n
        if needs.hessian {
            if products.hessian.count != d * d { products.hessian = [Float](repeating: 0, count: d * d) }
            // Upper triangle of x̂ᵀx̂; the lower one is filled by symmetrise().
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1, pruned, Int32(d), 0, &products.hessian, Int32(d))
        }
        if needs.cross {
            guard let dense else { preconditionFailure("accumulate: the cross term needs the dense stream's inputs") }
            let rows = needs.crossOutputs > 0 ? needs.crossOutputs : d
            precondition(dense.count == n * rows, "accumulate: expected \(n)×\(rows) dense values, got \(dense.count)")
            if products.cross.count != rows * d { products.cross = [Float](repeating: 0, count: rows * d) }
            if needs.crossOutputs > 0 {
                sgemm(.transpose, .none, m: rows, n: d, k: n, dense, lda: rows, pruned, ldb: d, &products.cross, ldc: d)
            } else {
                sgemm(.transpose, .none, m: d, n: d, k: n, pruned, lda: d, dense, ldb: d, &products.cross, ldc: d)
            }
        }
        if needs.columnNorms {
            if products.columnNorms.count != d { products.columnNorms = [Double](repeating: 0, count: d) }
            // dsdot accumulates the Float32 products in Double.
            pruned.withUnsafeBufferPointer { x in
                for j in 0..<d { products.columnNorms[j] = cblas_dsdot(Int32(n), x.baseAddress! + j, Int32(d), x.baseAddress! + j, Int32(d)) }
            }
        }
    }

    /// Adds one batch's products into the Double sums.
    mutating func add(_ products: BatchProducts) {
        let d = dimension
        tokens += products.tokens
        if needs.hessian { cengine_add_upper_f32_to_f64(&hessian, products.hessian, d) }
        if needs.cross { cengine_add_f32_to_f64(&cross, products.cross, cross.count) }
        if needs.columnNorms { for j in 0..<d { columnNorms[j] += products.columnNorms[j] } }
    }

    /// Copies the upper triangle of the Hessian into the lower one.
    public mutating func symmetrise() {
        let d = dimension
        guard needs.hessian else { return }
        for i in 0..<d {
            for j in (i + 1)..<d { hessian[j * d + i] = hessian[i * d + j] }
        }
    }

    /// Everything to reduce across ranks as one buffer (Hessian with its upper triangle filled, cross term, column
    /// norms, token count), releasing each sum once it is copied, so packing holds about one extra copy of the
    /// statistics rather than two (a 70B down_proj's KRP sums are 13 GB): afterwards only `unpack` may follow.
    public mutating func takePacked() -> [Double] {
        product = []
        var buffer: [Double] = []
        buffer.reserveCapacity(hessian.count + cross.count + columnNorms.count + 1)
        let (h, c, n) = (hessian.count, cross.count, columnNorms.count)
        buffer.append(contentsOf: hessian)
        hessian = []
        buffer.append(contentsOf: cross)
        cross = []
        buffer.append(contentsOf: columnNorms)
        columnNorms = []
        buffer.append(Double(tokens))
        // unpack() reads the sizes from the (now empty) arrays: keep them as capacity-free placeholders.
        packedSizes = (h, c, n)
        return buffer
    }

    /// Sizes of the sums released by `takePacked()`.
    private var packedSizes: (Int, Int, Int)? = nil

    /// Divides the sums by the token count in place (no copy) and symmetrises the Hessian: the statistics the solvers take.
    public mutating func normalise() {
        symmetrise()
        let scale = 1 / Double(max(tokens, 1))
        for i in hessian.indices { hessian[i] *= scale }
        for i in cross.indices { cross[i] *= scale }
        for i in columnNorms.indices { columnNorms[i] *= scale }
    }

    /// The inverse of `takePacked()`, after the buffer has been summed over ranks.
    public mutating func unpack(_ buffer: [Double]) {
        let (h, c, n) = packedSizes ?? (hessian.count, cross.count, columnNorms.count)
        packedSizes = nil
        precondition(buffer.count == h + c + n + 1, "unpack: buffer of \(buffer.count) for \(h + c + n + 1)")
        hessian = Array(buffer[0..<h])
        cross = Array(buffer[h..<(h + c)])
        columnNorms = Array(buffer[(h + c)..<(h + c + n)])
        tokens = Int(buffer[h + c + n].rounded())
    }

    /// The first statistic holding NaN or Inf ("Hessian", "cross term", "column norms"), or nil when all are finite.
    /// Finite weights can still overflow Float32 activations; solving on such a statistic would write NaN weights.
    public var nonFiniteStatistic: String? {
        if !hessian.allSatisfy(\.isFinite) { return "Hessian" }
        if !cross.allSatisfy(\.isFinite) { return "cross term" }
        if !columnNorms.allSatisfy(\.isFinite) { return "column norms" }
        return nil
    }
}
