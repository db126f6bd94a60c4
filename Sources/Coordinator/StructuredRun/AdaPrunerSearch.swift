import Engine
import Foundation
import Logging
import Worker

/// AdaPruner's search settings (Kong et al. 2025; our choices where the paper is silent: docs/decisions.md).
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
    /// K: trials the TPE proposes per round (constant liar), evaluated side by side on min(K, ranks) rank groups.
    /// The search depends on the seed and K, not on the number of ranks.
    var parallelTrials: Int = 1
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
        /// Gradients of this calibration subset were already computed by an earlier trial of the same group
        var reusedGradients: Bool
        /// The round (K trials proposed together) and the rank group that evaluated it
        var round: Int
        var group: Int
        enum CodingKeys: String, CodingKey {
            case index, samples, alphas, betas, coefficients, round, group
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
    /// K, and the world ranks of each group (G = groups.count)
    var parallelTrials: Int
    var groups: [[Int]]
    var seconds: Double

    enum CodingKeys: String, CodingKey {
        case trials, best, pool, gamma, terms, parallelism, seconds, groups
        case parallelTrials = "parallel_trials"
        case searchSeed = "search_seed", poolDocuments = "pool_documents", heldOutDocuments = "held_out_documents"
        case objectiveWindows = "objective_windows", objectiveSeqlen = "objective_seqlen", startupTrials = "startup_trials"
        case sampleChoices = "sample_choices", seedChoices = "seed_choices", betaChoices = "beta_choices"
    }
}

/// The search: TPE over (calibration seed, calibration size, α's, β's), in rounds of K = `parallelTrials` trials.
/// Each round the TPE proposes K points by the constant liar; the ranks, split into min(K, ranks) groups of
/// consecutive ranks, evaluate them side by side (a trial's gradients and objective forward passes split over its
/// group's ranks), and the results are shared with every rank and observed in trial order. So the search follows
/// from (seed, K) alone. The first trial is LLM-Pruner's own configuration (element-wise first order alone,
/// `--samples` sequences), so the search can only return something at least as good on the objective. The
/// objective is the perplexity, on held-out pool documents, of the model pruned with the trial's configuration
/// (never the evaluation text). The chosen trial's kept groups go from its group to every rank.
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
        let groups = try AdaPrunerTrialGroups(batch: search.parallelTrials, world: comm)
        if comm.rank == 0 {
            logger.info("adapruner: \(search.trials) trials over \(terms.map(\.rawValue).joined(separator: ", ")), calibration pool of \(pool.calibration.count) documents, objective on \(pool.objective.count) held-out windows of \(search.objectiveSeqlen) tokens (\(pool.heldOutDocuments) documents); rounds of \(groups.batch) trial(s) on \(groups.count) group(s) of ranks \(groups.members)")
        }

        // LLM-Pruner's own configuration: el1 alone (α = 1, its first β), the requested number of samples.
        guard let firstSamples = search.sampleChoices.firstIndex(of: settings.samples) else {
            throw PruneDistError(.argument, "adapruner: \(settings.samples) samples is not one of the sample choices \(search.sampleChoices)")
        }
        var first = [0, Double(firstSamples)]
        first += terms.map { $0 == .el1 ? 1 : 0 }
        first += terms.map { _ in 0 }

        var cache: [String: TaylorTermsOverRanks.Terms] = [:]
        var trials: [AdaPrunerReport.Trial] = []
        for (round, roundStart) in stride(from: 0, to: search.trials, by: groups.batch).enumerated() {
            let indices = roundStart..<min(roundStart + groups.batch, search.trials)
            // Rank 0 proposes, so every rank evaluates exactly the same points.
            var flat = [Double](repeating: 0, count: indices.count * dimensions.count)
            if comm.rank == 0 {
                let points = roundStart == 0 ? [first] + tpe.suggestBatch(count: indices.count - 1, pending: [first])
                                             : tpe.suggestBatch(count: indices.count)
                flat = points.flatMap { $0 }
            }
            try comm.broadcast(&flat, root: 0)
            let points = (0..<indices.count).map { Array(flat[($0 * dimensions.count)..<(($0 + 1) * dimensions.count)]) }

            var mine: [AdaPrunerReport.Trial] = []
            for index in groups.mine(of: indices) {
                mine.append(try evaluate(index: index, point: points[index - roundStart], round: round, group: groups.group,
                                         pool: pool, cache: &cache, comm: groups.comm))
            }
            let results = try groups.share(mine, world: comm)
            guard results.map(\.index) == Array(indices) else {
                throw PruneDistError(.communication, "adapruner round \(round): trials \(results.map(\.index)) came back from the groups, expected \(Array(indices))")
            }
            for trial in results {
                trials.append(trial)
                tpe.observe(points[trial.index - roundStart], loss: trial.objectivePerplexity)
            }
            if comm.rank == 0 {
                let best = trials.map(\.objectivePerplexity).min()!
                for trial in results {
                    logger.info("trial \(trial.index + 1)/\(search.trials) (round \(round + 1), group \(trial.group)): seed \(trial.calibrationSeed), \(trial.samples) samples, mix \(trial.coefficients.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%.3g", $0.value))" }.joined(separator: " ")): objective ppl \(String(format: "%.3f", trial.objectivePerplexity)) (best \(String(format: "%.3f", best))), \(String(format: "%.0f", trial.gradientSeconds + trial.objectiveSeconds)) s")
                }
            }
        }
        // Rank 0's choice for all, so ranks cannot disagree over the last bits of a reduced perplexity.
        var chosenIndex = [Double(trials.indices.min { (trials[$0].objectivePerplexity, $0) < (trials[$1].objectivePerplexity, $1) }!)]
        try comm.broadcast(&chosenIndex, root: 0)
        let bestIndex = Int(chosenIndex[0])
        let best = trials[bestIndex]

        // The chosen trial's terms are cached on its group's rank 0: that group chooses again from them (cheaper
        // than new gradients over every rank, and the same kept groups) and its rank 0 sends the kept groups and
        // scores to every rank.
        let source = groups.members[best.group][0]
        var chosenHere: ChosenGroups?
        if groups.group == best.group {
            let chosen = try TaylorTermsOverRanks.choose(terms: cache["\(best.calibrationSeed):\(best.samples)"]!, mix: mix(best),
                                                         aggregation: settings.aggregation, ratio: settings.ratio, comm: groups.comm)
            chosenHere = ChosenGroups(keeps: Array(chosen.keeps.values), scores: chosen.scores)
        }
        cache = [:]
        let chosen = try comm.broadcast(chosenHere, root: source)
        let report = AdaPrunerReport(trials: trials, best: best, searchSeed: search.searchSeed, pool: search.pool.path,
                                     poolDocuments: pool.calibration.count, heldOutDocuments: pool.heldOutDocuments,
                                     objectiveWindows: pool.objective.count, objectiveSeqlen: search.objectiveSeqlen,
                                     gamma: search.gamma, startupTrials: search.startupTrials, sampleChoices: search.sampleChoices,
                                     seedChoices: search.seedChoices, terms: terms.map(\.rawValue),
                                     betaChoices: Dictionary(uniqueKeysWithValues: search.betaChoices.map { ($0.key.rawValue, $0.value) }),
                                     parallelism: "rounds of \(groups.batch) trial(s) proposed by TPE with the constant liar; the round's trials run side by side on \(groups.count) group(s) of consecutive ranks, each trial's gradients and objective forward passes split over its group's ranks; the chosen trial's kept groups come from its group to all \(comm.size) rank(s)",
                                     parallelTrials: groups.batch, groups: groups.members,
                                     seconds: Date().timeIntervalSince(start))
        return Result(keeps: Dictionary(uniqueKeysWithValues: chosen.keeps.map { ($0.layer, $0) }), scores: chosen.scores, report: report)
    }

    /// The chosen trial's kept groups (every pruned block) and scores, as its group's rank 0 sends them.
    private struct ChosenGroups: Codable {
        var keeps: [StructuredKeep]
        var scores: [StructuredGroupScores]
    }

    /// One trial on this rank's group: the point's calibration subset (gradients cached per subset), its mix,
    /// the pruned model's objective perplexity. The record is complete on the group's rank 0.
    private func evaluate(index: Int, point: [Double], round: Int, group: Int,
                          pool: (calibration: [[Int]], objective: [[Int]], heldOutDocuments: Int),
                          cache: inout [String: TaylorTermsOverRanks.Terms], comm: Communicator) throws -> AdaPrunerReport.Trial {
        let terms = search.terms
        let seed = search.searchSeed &* 1_000_003 &+ Int(point[0])
        let samples = search.sampleChoices[Int(point[1])]
        var alphas: [String: Double] = [:], betas: [String: Double] = [:], coefficients: [String: Double] = [:]
        for (t, term) in terms.enumerated() {
            let alpha = point[2 + t], beta = search.betaChoices[term]![Int(point[2 + terms.count + t])]
            alphas[term.rawValue] = alpha
            betas[term.rawValue] = beta
            coefficients[term.rawValue] = alpha * beta
        }
        var trial = AdaPrunerReport.Trial(index: index, calibrationSeed: seed, samples: samples, alphas: alphas, betas: betas,
                                          coefficients: coefficients, objectivePerplexity: 0, gradientSeconds: 0,
                                          objectiveSeconds: 0, reusedGradients: false, round: round, group: group)
        let t0 = Date()
        let key = "\(seed):\(samples)"
        trial.reusedGradients = cache[key] != nil
        if !trial.reusedGradients {
            cache[key] = try gradientTerms(seed: seed, samples: samples, pool: pool, comm: comm)
        }
        trial.gradientSeconds = Date().timeIntervalSince(t0)
        let chosen = try TaylorTermsOverRanks.choose(terms: cache[key]!, mix: mix(trial), aggregation: settings.aggregation,
                                                     ratio: settings.ratio, comm: comm)
        let t1 = Date()
        trial.objectivePerplexity = try objective(keeps: chosen.keeps, windows: pool.objective, comm: comm)
        trial.objectiveSeconds = Date().timeIntervalSince(t1)
        return trial
    }

    /// The structure scores' mix of a trial: Σ_t α_t β_t term_t.
    private func mix(_ trial: AdaPrunerReport.Trial) -> ImportanceMix {
        var coefficients: [TaylorTerm: Double] = [:]
        for term in search.terms { coefficients[term] = trial.coefficients[term.rawValue]! }
        if coefficients.values.allSatisfy({ $0 == 0 }) { coefficients[search.terms[0]] = 1e-12 }  // all α zero: any order is as good
        return ImportanceMix(coefficients)
    }

    /// Taylor terms of a calibration subset of the pool, gradients over `comm`'s ranks (terms on its rank 0).
    private func gradientTerms(seed: Int, samples: Int, pool: (calibration: [[Int]], objective: [[Int]], heldOutDocuments: Int),
                               comm: Communicator) throws -> TaylorTermsOverRanks.Terms {
        let windows = try CalibrationData.drawWindows(from: pool.calibration, samples: samples, seqlen: settings.seqlen,
                                                      seed: UInt64(bitPattern: Int64(seed)), source: search.pool.path,
                                                      what: "pool tokens")
        return try TaylorTermsOverRanks.compute(checkpoint: checkpoint, windows: windows, seqlen: settings.seqlen,
                                                blocks: blocks, fisher: search.terms.contains(.el2), comm: comm)
    }

    /// Perplexity of the pruned model on the held-out windows, the windows split over `comm`'s ranks.
    private func objective(keeps: [Int: StructuredKeep], windows: [[Int]], comm: Communicator) throws -> Double {
        let mine = comm.shard(windows)
        let local = try structuredPrunedNLL(checkpoint: checkpoint, keeps: keeps, windows: mine, seqlen: search.objectiveSeqlen)
        var sums = [local.nllSum, Double(local.predictions)]
        try comm.allreduceSum(&sums)
        return Foundation.exp(sums[0] / sums[1])
    }
}
