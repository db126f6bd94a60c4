import Engine
import Foundation

/// The JSON report of a prune run: what was done to every linear, how long each block took, and what
/// each rank used. Written by rank 0 (entries from other ranks are gathered to it).
public struct RunReport: Codable, Sendable {
    public struct Linear: Codable, Sendable {
        public var linear: LlamaLinear
        public var layer: Int
        /// The weight's tensor name, `model.layers.{layer}.{linear}.weight`: written for readers of the JSON.
        public let name: String
        public var owner: Int
        public var sparsity: Double
        public var zeros: Int
        public var total: Int
        /// Per-token squared output error of the masked weight before any update, ‖(W − W⊙M)x̂‖².
        public var errorBefore: Double?
        /// Per-token squared output error after the solver, ‖(W − Ŵ)x̂‖² (KRP: against its target).
        public var errorAfter: Double?
        /// Per-token squared output of the dense weight on the same inputs, ‖W x̂‖² = tr(W H Wᵀ): what the errors are
        /// relative to (absent for methods without a Hessian, and in older reports).
        public var outputEnergy: Double? = nil
        /// errorBefore / outputEnergy and errorAfter / outputEnergy: the fraction of the output lost.
        public var relativeErrorBefore: Double? = nil
        public var relativeErrorAfter: Double? = nil
        /// Dampening added to the Hessian diagonal (SparseGPT/KRP), after any re-dampening.
        public var damping: Double?
        /// KRP's ridge λ (adaptive rectification).
        public var ridge: Double?
        /// How many times a failed Cholesky factorisation was re-dampened.
        public var redamped: Int
        public var seconds: Double

        enum CodingKeys: String, CodingKey {
            case linear, name, layer, owner, sparsity, zeros, total, damping, ridge, redamped, seconds
            case errorBefore = "error_before", errorAfter = "error_after", outputEnergy = "output_energy"
            case relativeErrorBefore = "relative_error_before", relativeErrorAfter = "relative_error_after"
        }

        public init(linear: LlamaLinear, layer: Int, owner: Int, sparsity: Double, zeros: Int, total: Int, errorBefore: Double?,
                    errorAfter: Double?, outputEnergy: Double? = nil, damping: Double?, ridge: Double?, redamped: Int, seconds: Double) {
            self.linear = linear
            self.layer = layer
            self.name = linear.weightName(layer: layer)
            self.owner = owner
            self.sparsity = sparsity
            self.zeros = zeros
            self.total = total
            self.errorBefore = errorBefore
            self.errorAfter = errorAfter
            self.outputEnergy = outputEnergy
            if let outputEnergy, outputEnergy > 0 {
                (relativeErrorBefore, relativeErrorAfter) = (errorBefore.map { $0 / outputEnergy }, errorAfter.map { $0 / outputEnergy })
            }
            self.damping = damping
            self.ridge = ridge
            self.redamped = redamped
            self.seconds = seconds
        }

        /// Reports of versions before the `linear` key name only the tensor; its linear is read from that name.
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let name = try c.decode(String.self, forKey: .name)
            let layer = try c.decode(Int.self, forKey: .layer)
            guard let linear = try c.decodeIfPresent(LlamaLinear.self, forKey: .linear) ?? LlamaLinear.parse(weightName: name)?.linear,
                  linear.weightName(layer: layer) == name else {
                throw DecodingError.dataCorruptedError(forKey: .name, in: c,
                                                       debugDescription: "\(name) is not the weight of a linear of block \(layer)")
            }
            self.init(linear: linear, layer: layer, owner: try c.decode(Int.self, forKey: .owner),
                      sparsity: try c.decode(Double.self, forKey: .sparsity), zeros: try c.decode(Int.self, forKey: .zeros),
                      total: try c.decode(Int.self, forKey: .total), errorBefore: try c.decodeIfPresent(Double.self, forKey: .errorBefore),
                      errorAfter: try c.decodeIfPresent(Double.self, forKey: .errorAfter),
                      outputEnergy: try c.decodeIfPresent(Double.self, forKey: .outputEnergy),
                      damping: try c.decodeIfPresent(Double.self, forKey: .damping), ridge: try c.decodeIfPresent(Double.self, forKey: .ridge),
                      redamped: try c.decode(Int.self, forKey: .redamped), seconds: try c.decode(Double.self, forKey: .seconds))
        }
    }

    public struct Block: Codable, Sendable {
        public var layer: Int
        public var seconds: Double
        public var statisticsSeconds: Double
        public var solveSeconds: Double
        public var forwardSeconds: Double
        /// CPU seconds of the same phases (user + system, the whole process); absent in reports of older versions.
        public var statisticsCPUSeconds: Double? = nil
        public var solveCPUSeconds: Double? = nil
        public var forwardCPUSeconds: Double? = nil
        enum CodingKeys: String, CodingKey {
            case layer, seconds
            case statisticsSeconds = "statistics_seconds", solveSeconds = "solve_seconds", forwardSeconds = "forward_seconds"
            case statisticsCPUSeconds = "statistics_cpu_seconds", solveCPUSeconds = "solve_cpu_seconds"
            case forwardCPUSeconds = "forward_cpu_seconds"
        }
    }

    public struct Rank: Codable, Sendable {
        public var rank: Int
        public var host: String
        public var peakRSSBytes: Int
        /// User plus system CPU time of the process: unlike wall time, barely moved by other jobs on the machine.
        public var cpuSeconds: Double
        public var sequences: Int
        /// Payload bytes this rank contributed to collectives over the run (Worker's SentBytes), and `plan`'s
        /// estimate of the bytes it sends for the same run (absent in older reports and structured runs).
        public var bytesSent: Int? = nil
        public var plannedBytesSent: Int? = nil
        enum CodingKeys: String, CodingKey {
            case rank, host, sequences
            case peakRSSBytes = "peak_rss_bytes"
            case cpuSeconds = "cpu_seconds"
            case bytesSent = "bytes_sent", plannedBytesSent = "planned_bytes_sent"
        }
    }

    public var tool: String
    public var version: String
    public var model: String
    public var output: String
    public var method: String
    public var pattern: String
    public var sparsityTarget: Double
    public var trueSequential: Bool
    public var samples: Int
    public var seqlen: Int
    public var seed: Int
    public var ranks: Int
    public var linears: [Linear]
    public var blocks: [Block]
    public var rankUsage: [Rank]
    public var totalSeconds: Double
    public var overallSparsity: Double
    public var evaluation: [String: Double]?
    /// How the target sparsity was spread over blocks (uniform or owl), and each block's target when not uniform.
    public var allocation: String? = nil
    public var blockSparsityTargets: [Double]? = nil
    /// KRP's rectification (legacy, or the ridge toward the dense weights and the correction fraction).
    public var krpRectification: String? = nil
    /// Command line, version and commit, date, hosts, calibration file, dtypes and every option (absent in older reports).
    public var provenance: RunProvenance? = nil
    /// The same evaluation on the dense input model (`prune --eval-*` without --no-dense-eval), for dense → pruned.
    public var denseEvaluation: [String: Double]? = nil
    /// The run as a `prune --recipe` YAML file: running it again (with --model and --out) repeats the run.
    public var recipe: String? = nil
    /// `--ignore` targets and `--sparsity-override TARGET=VALUE` of the run (absent when none).
    public var ignore: [String]? = nil
    public var sparsityOverrides: [String]? = nil

    enum CodingKeys: String, CodingKey {
        case tool, version, model, output, method, pattern, samples, seqlen, seed, ranks, linears, blocks, evaluation, allocation, provenance, recipe, ignore
        case sparsityOverrides = "sparsity_overrides"
        case denseEvaluation = "dense_evaluation"
        case blockSparsityTargets = "block_sparsity_targets", krpRectification = "krp_rectification"
        case sparsityTarget = "sparsity_target", trueSequential = "true_sequential", rankUsage = "rank_usage"
        case totalSeconds = "total_seconds", overallSparsity = "overall_sparsity"
    }

    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}

/// Peak resident set size of this process (VmHWM), in bytes.
public func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
    }
    return 0
}

/// User plus system CPU seconds this process has used so far.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return 0 }
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
