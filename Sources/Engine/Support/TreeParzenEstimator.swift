import Foundation

/// Tree-structured Parzen estimator (Bergstra et al. 2011), the Bayesian optimisation AdaPruner searches with.
/// Past trials are split at the γ quantile of their loss into good and bad; per dimension, a Parzen density
/// l(x) is fitted to the good trials and g(x) to the bad ones (each mixed with the prior: the uniform density
/// for a range, add-one counts for a choice); candidates are drawn from l and the one with the largest
/// Π_d l_d(x)/g_d(x) is proposed. Dimensions are independent, as in hyperopt. Deterministic for a seed.
public struct TreeParzenEstimator: Sendable {
    public enum Dimension: Sendable, Equatable {
        /// A real number in [lower, upper]
        case uniform(lower: Double, upper: Double)
        /// One of `count` options, by index
        case choice(count: Int)
    }

    public let dimensions: [Dimension]
    /// Fraction of trials that count as good
    public let gamma: Double
    /// Trials drawn from the prior before the estimator is used
    public let startupTrials: Int
    /// Candidates drawn from l per proposal
    public let candidates: Int
    private var random: SplitMix64
    /// (point, loss) of every observed trial, in order
    public private(set) var observations: [(point: [Double], loss: Double)] = []

    public init(dimensions: [Dimension], seed: UInt64, gamma: Double = 0.25, startupTrials: Int = 10, candidates: Int = 24) {
        self.dimensions = dimensions
        self.gamma = gamma
        self.startupTrials = startupTrials
        self.candidates = candidates
        random = SplitMix64(seed: seed ^ 0x5450_455F_5345_4544)
    }

    /// Records a trial's result (lower is better). A non-finite loss counts as worse than any finite one.
    public mutating func observe(_ point: [Double], loss: Double) {
        precondition(point.count == dimensions.count, "TreeParzenEstimator.observe: \(point.count) values for \(dimensions.count) dimensions")
        observations.append((point, loss.isFinite ? loss : .greatestFiniteMagnitude))
    }

    /// The next point to try: a prior draw during start-up, the best l/g candidate afterwards.
    /// Choices are returned as their index (a whole number).
    public mutating func suggest() -> [Double] {
        if observations.count < startupTrials { return dimensions.map { drawPrior($0) } }
        let sorted = observations.sorted { $0.loss < $1.loss }
        let goodCount = max(1, Int((gamma * Double(sorted.count)).rounded(.up)))
        let good = sorted.prefix(goodCount).map(\.point), bad = sorted.dropFirst(goodCount).map(\.point)
        var best: [Double] = [], bestScore = -Double.infinity
        for _ in 0..<candidates {
            var point: [Double] = []
            var score = 0.0
            for (d, dimension) in dimensions.enumerated() {
                let x = drawParzen(dimension, good.map { $0[d] })
                point.append(x)
                score += Foundation.log(density(dimension, good.map { $0[d] }, at: x))
                    - Foundation.log(density(dimension, bad.map { $0[d] }, at: x))
            }
            if score > bestScore { bestScore = score; best = point }
        }
        return best
    }

    /// `count` points to evaluate at once, by the constant liar (Ginsbourger et al. 2010, "CL-max"): each
    /// proposal, and each of the `pending` points already chosen but not yet evaluated, is observed with the
    /// worst loss seen so far before the next proposal, so a batch spreads out instead of repeating one point.
    /// The lies are dropped afterwards; only the random state moves on. With count 1 and nothing pending
    /// this is `suggest()`. Start-up counts the lies, so trial i of a search draws from the prior exactly
    /// when i < startupTrials, whatever the batch size.
    public mutating func suggestBatch(count: Int, pending: [[Double]] = []) -> [[Double]] {
        let lie = observations.map(\.loss).max() ?? 0
        var liar = self
        for point in pending { liar.observe(point, loss: lie) }
        var batch: [[Double]] = []
        for _ in 0..<count {
            let point = liar.suggest()
            batch.append(point)
            liar.observe(point, loss: lie)
        }
        random = liar.random
        return batch
    }

    private mutating func drawPrior(_ dimension: Dimension) -> Double {
        switch dimension {
        case let .uniform(lower, upper): return lower + (upper - lower) * random.nextUnit()
        case let .choice(count): return Double(Int(random.nextUnit() * Double(count)) % count)
        }
    }

    /// Kernel width for n points over a range: wide with few points, narrowing as n^(−1/5) (Scott's rule shape).
    private func bandwidth(_ lower: Double, _ upper: Double, _ n: Int) -> Double {
        max((upper - lower) * 0.5 * Foundation.pow(Double(max(n, 1)), -0.2), (upper - lower) / 100)
    }

    /// A draw from the Parzen mixture over `points` plus the prior (one extra component).
    private mutating func drawParzen(_ dimension: Dimension, _ points: [Double]) -> Double {
        switch dimension {
        case let .uniform(lower, upper):
            let component = Int(random.nextUnit() * Double(points.count + 1))
            if component >= points.count { return drawPrior(dimension) }
            let sigma = bandwidth(lower, upper, points.count)
            for _ in 0..<32 {  // truncated to the range by rejection
                let x = points[component] + sigma * random.nextGaussian()
                if x >= lower && x <= upper { return x }
            }
            return min(max(points[component], lower), upper)
        case let .choice(count):
            var weights = [Double](repeating: 1, count: count)
            for p in points { weights[Int(p)] += 1 }
            var u = random.nextUnit() * weights.reduce(0, +)
            for (i, w) in weights.enumerated() {
                if u < w { return Double(i) }
                u -= w
            }
            return Double(count - 1)
        }
    }

    /// Density of the Parzen mixture (points plus the prior, equal weights) at x.
    private func density(_ dimension: Dimension, _ points: [Double], at x: Double) -> Double {
        switch dimension {
        case let .uniform(lower, upper):
            let sigma = bandwidth(lower, upper, points.count)
            var sum = 1 / (upper - lower)
            for p in points {
                let z = (x - p) / sigma
                sum += Foundation.exp(-0.5 * z * z) / (sigma * (2 * Double.pi).squareRoot())
            }
            return sum / Double(points.count + 1)
        case let .choice(count):
            let hits = points.filter { Int($0) == Int(x) }.count
            return (Double(hits) + 1) / (Double(points.count) + Double(count))
        }
    }
}
