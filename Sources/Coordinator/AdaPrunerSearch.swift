import Engine
import Foundation
import Logging
import Worker

/// AdaPruner's search settings (../shared/methods.md §2, "Decisions").
struct AdaPrunerSettings: Sendable {
    var trials: Int
    /// Pool of documents the calibration subsets and the held-out objective text come from
    var pool: URL
    /// Seed of the search (TPE draws, the pool's held-out split, the calibration seeds)
    var searchSeed: Int
    /// Documents shorter than this many tokens are not in the pool (AdaPruner drops BookCorpus samples under 128)
    var minDocumentTokens: Int
    /// Calibration subset: the number of sequences is one of these, its seed one of `seedChoices` seeds
    var sampleChoices: [Int]
    var seedChoices: Int
    /// The importance terms mixed, each with a balance coefficient α ∈ [0, 1] and an alignment factor β
    /// chosen from its set: structure score = Σ_t α_t β_t term_t
    var terms: [TaylorTerm]
    var betaChoices: [TaylorTerm: [Double]]
    /// Held-out windows the objective perplexity is measured on
    var objectiveWindows: Int
    var objectiveSeqlen: Int
    var gamma: Double
    var startupTrials: Int
}

/// Every trial of the search, the chosen one, and how the search was run.
struct AdaPrunerReport: Codable, Sendable {
    struct Trial: Codable, Sendable {
        var index: Int
        var calibrationSeed: Int
        var samples: Int
        var alphas: [String: Double]
        var betas: [String: Double]
        /// α·β per term: the mix the structures were scored with
        var coefficients: [String: Double]
        var objectivePerplexity: Double
        var gradientSeconds: Double
        var objectiveSeconds: Double
        /// Gradients of this calibration subset were already computed by an earlier trial
        var reusedGradients: Bool
        enum CodingKeys: String, CodingKey {
            case index, samples, alphas, betas, coefficients
            case calibrationSeed = "calibration_seed", objectivePerplexity = "objective_perplexity"
            case gradientSeconds = "gradient_seconds", objectiveSeconds = "objective_seconds", reusedGradients = "reused_gradients"
        }
    }

    var trials: [Trial]
    var best: Trial
    var searchSeed: Int
    var pool: String
    var poolDocuments: Int
    var heldOutDocuments: Int
    var objectiveWindows: Int
    var objectiveSeqlen: Int
    var gamma: Double
    var startupTrials: Int
    var sampleChoices: [Int]
    var seedChoices: Int
    var terms: [String]
    var betaChoices: [String: [Double]]
    var parallelism: String
    var seconds: Double

    enum CodingKeys: String, CodingKey {
        case trials, best, pool, gamma, terms, parallelism, seconds
        case searchSeed = "search_seed", poolDocuments = "pool_documents", heldOutDocuments = "held_out_documents"
        case objectiveWindows = "objective_windows", objectiveSeqlen = "objective_seqlen", startupTrials = "startup_trials"
        case sampleChoices = "sample_choices", seedChoices = "seed_choices", betaChoices = "beta_choices"
    }
}

/// The search: TPE over (calibration seed, calibration size, α's, β's). Trials run one after another; inside a
/// trial the gradients and the objective's forward passes are split over every rank. The first trial is
/// LLM-Pruner's own configuration (element-wise first order alone, `--samples` sequences), so the search can
/// only return something at least as good on the objective. The objective is the perplexity, on held-out pool
/// documents, of the model pruned with the trial's configuration (never the evaluation text).
final class AdaPrunerSearch {
    let settings: StructuredPruneSettings
    let search: AdaPrunerSettings
    let checkpoint: Checkpoint
    let blocks: ClosedRange<Int>
    let comm: Communicator
    let logger: Logger

    struct Result {
        var keeps: [Int: StructuredKeep]
        var scores: [StructuredGroupScores]
        var report: AdaPrunerReport
    }

    init(settings: StructuredPruneSettings, search: AdaPrunerSettings, checkpoint: Checkpoint, blocks: ClosedRange<Int>,
         comm: Communicator, logger: Logger) {
        self.settings = settings
        self.search = search
        self.checkpoint = checkpoint
        self.blocks = blocks
        self.comm = comm
        self.logger = logger
    }

    /// Pool documents split (deterministically from the search seed) into held-out objective windows and the
    /// documents calibration subsets are drawn from.
    private func splitPool() throws -> (calibration: [[Int]], objective: [[Int]], heldOutDocuments: Int) {
        let documents = try poolDocuments().filter { $0.count >= search.minDocumentTokens }
        var order = Array(documents.indices)
        var random = SplitMix64(seed: UInt64(bitPattern: Int64(search.searchSeed)) ^ 0x504F_4F4C)
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, Int(random.next() % UInt64(i + 1)))
        }
        var objective: [[Int]] = []
        var used = 0
        let L = search.objectiveSeqlen
        while objective.count < search.objectiveWindows, used < order.count {
            let doc = documents[order[used]]
            used += 1
            for w in 0..<(doc.count / L) where objective.count < search.objectiveWindows {
                objective.append(Array(doc[(w * L)..<((w + 1) * L)]))
            }
        }
        guard objective.count == search.objectiveWindows, used < order.count else {
            throw PruneDistError(.data, "\(search.pool.path): \(documents.count) documents of ≥ \(search.minDocumentTokens) tokens are too few for \(search.objectiveWindows) held-out windows of \(L) tokens and a calibration pool")
        }
        return (order[used...].map { documents[$0] }, objective, used)
    }

    /// The pool's documents as token ids: a JSON array of arrays of ids is taken as the documents themselves
    /// (models without a tokenizer, tests); text and JSONL are split into documents and tokenized one by one.
    private func poolDocuments() throws -> [[Int]] {
        let url = search.pool
        if url.pathExtension == "json" {
            guard let object = try? JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [[NSNumber]] else {
                throw PruneDistError(.data, "\(url.path): a .json pool must be an array of documents, each an array of token ids")
            }
            let vocab = checkpoint.config.vocabSize
            return try object.enumerated().map { index, ids in
                guard ids.allSatisfy({ $0.intValue >= 0 && $0.intValue < vocab }) else {
                    throw PruneDistError(.data, "\(url.path): document \(index) holds a token id outside 0..<\(vocab)")
                }
                return ids.map(\.intValue)
            }
        }
        let tokenizer = try Tokenizer.load(modelDirectory: settings.model)
        return tokenizer.encode(try CalibrationData.documents(url))
    }

    func run() throws -> Result {
        let start = Date()
        let pool = try splitPool()
        let terms = search.terms
        // Point layout: [seed choice, samples choice, α per term, β choice per term]
        var dimensions: [TreeParzenEstimator.Dimension] = [.choice(count: search.seedChoices), .choice(count: search.sampleChoices.count)]
        dimensions += terms.map { _ in .uniform(lower: 0, upper: 1) }
        dimensions += terms.map { .choice(count: search.betaChoices[$0]!.count) }
        var tpe = TreeParzenEstimator(dimensions: dimensions, seed: UInt64(bitPattern: Int64(search.searchSeed)),
                                      gamma: search.gamma, startupTrials: search.startupTrials)
        if comm.rank == 0 {
            logger.info("adapruner: \(search.trials) trials over \(terms.map(\.rawValue).joined(separator: ", ")), calibration pool of \(pool.calibration.count) documents, objective on \(pool.objective.count) held-out windows of \(search.objectiveSeqlen) tokens (\(pool.heldOutDocuments) documents); trials sequential, each over \(comm.size) rank(s)")
        }

        var cache: [String: TaylorTermsOverRanks.Terms] = [:]
        var trials: [AdaPrunerReport.Trial] = []
        var trialKeeps: [[Int: StructuredKeep]] = []
        var mixes: [ImportanceMix] = []
        for index in 0..<search.trials {
            var point: [Double]
            if index == 0 {
                // LLM-Pruner's own configuration: el1 alone (α = 1, its first β), the requested number of samples.
                point = [0, Double(search.sampleChoices.firstIndex(of: settings.samples) ?? 0)]
                point += terms.map { $0 == .el1 ? 1 : 0 }
                point += terms.map { _ in 0 }
            } else {
                point = comm.rank == 0 ? tpe.suggest() : [Double](repeating: 0, count: dimensions.count)
            }
            try comm.broadcast(&point, root: 0)
            let seed = search.searchSeed &* 1_000_003 &+ Int(point[0])
            let samples = search.sampleChoices[Int(point[1])]
            var alphas: [String: Double] = [:], betas: [String: Double] = [:], coefficients: [TaylorTerm: Double] = [:]
            for (t, term) in terms.enumerated() {
                let alpha = point[2 + t], beta = search.betaChoices[term]![Int(point[2 + terms.count + t])]
                alphas[term.rawValue] = alpha
                betas[term.rawValue] = beta
                coefficients[term] = alpha * beta
            }
            if coefficients.values.allSatisfy({ $0 == 0 }) { coefficients[terms[0]] = 1e-12 }  // all α zero: any order is as good
            let mix = ImportanceMix(coefficients)

            let t0 = Date()
            let key = "\(seed):\(samples)"
            let reused = cache[key] != nil
            if !reused {
                let windows = try CalibrationData.drawWindows(from: pool.calibration, samples: samples, seqlen: settings.seqlen,
                                                              seed: UInt64(bitPattern: Int64(seed)), source: search.pool.path,
                                                              what: "pool tokens")
                cache[key] = try TaylorTermsOverRanks.compute(checkpoint: checkpoint, windows: windows, seqlen: settings.seqlen,
                                                              blocks: blocks, fisher: terms.contains(.el2), comm: comm)
            }
            let gradientSeconds = Date().timeIntervalSince(t0)
            let chosen = try TaylorTermsOverRanks.choose(terms: cache[key]!, mix: mix, aggregation: settings.aggregation,
                                                         ratio: settings.ratio, comm: comm)
            let t1 = Date()
            let ppl = try objective(keeps: chosen.keeps, windows: pool.objective)
            let trial = AdaPrunerReport.Trial(index: index, calibrationSeed: seed, samples: samples, alphas: alphas, betas: betas,
                                              coefficients: Dictionary(uniqueKeysWithValues: coefficients.map { ($0.key.rawValue, $0.value) }),
                                              objectivePerplexity: ppl, gradientSeconds: gradientSeconds,
                                              objectiveSeconds: Date().timeIntervalSince(t1), reusedGradients: reused)
            trials.append(trial)
            trialKeeps.append(chosen.keeps)
            mixes.append(mix)
            tpe.observe(point, loss: ppl)
            if comm.rank == 0 {
                let best = trials.map(\.objectivePerplexity).min()!
                logger.info("trial \(index + 1)/\(search.trials): seed \(seed), \(samples) samples, mix \(trial.coefficients.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%.3g", $0.value))" }.joined(separator: " ")): objective ppl \(String(format: "%.3f", ppl)) (best \(String(format: "%.3f", best))), \(String(format: "%.0f", Date().timeIntervalSince(t0))) s")
            }
        }
        // Rank 0's choice for all, so ranks cannot disagree over the last bits of a reduced perplexity.
        var chosenIndex = [Double(trials.indices.min { (trials[$0].objectivePerplexity, $0) < (trials[$1].objectivePerplexity, $1) }!)]
        try comm.broadcast(&chosenIndex, root: 0)
        let bestIndex = Int(chosenIndex[0])
        let best = trials[bestIndex]
        let bestTerms = cache["\(best.calibrationSeed):\(best.samples)"]!
        let scores = try TaylorTermsOverRanks.choose(terms: bestTerms, mix: mixes[bestIndex], aggregation: settings.aggregation,
                                                     ratio: settings.ratio, comm: comm).scores
        let report = AdaPrunerReport(trials: trials, best: best, searchSeed: search.searchSeed, pool: search.pool.path,
                                     poolDocuments: pool.calibration.count, heldOutDocuments: pool.heldOutDocuments,
                                     objectiveWindows: pool.objective.count, objectiveSeqlen: search.objectiveSeqlen,
                                     gamma: search.gamma, startupTrials: search.startupTrials, sampleChoices: search.sampleChoices,
                                     seedChoices: search.seedChoices, terms: terms.map(\.rawValue),
                                     betaChoices: Dictionary(uniqueKeysWithValues: search.betaChoices.map { ($0.key.rawValue, $0.value) }),
                                     parallelism: "trials run one after another; each trial's gradients and objective forward passes are split over all \(comm.size) rank(s)",
                                     seconds: Date().timeIntervalSince(start))
        return Result(keeps: trialKeeps[bestIndex], scores: scores, report: report)
    }

    /// Perplexity of the pruned model on the held-out windows, the windows split over ranks.
    private func objective(keeps: [Int: StructuredKeep], windows: [[Int]]) throws -> Double {
        let mine = windows.indices.filter { $0 % comm.size == comm.rank }.map { windows[$0] }
        let local = try structuredPrunedNLL(checkpoint: checkpoint, keeps: keeps, windows: mine, seqlen: search.objectiveSeqlen)
        var sums = [local.nllSum, Double(local.predictions)]
        try comm.allreduceSum(&sums)
        return Foundation.exp(sums[0] / sums[1])
    }
}
