import Engine
import Foundation
import Logging
import Worker

/// Everything a prune run needs to know, resolved from the command line.
struct PruneSettings: Sendable {
    var model: URL
    var out: URL
    var method: PruneMethod
    var pattern: SparsityPattern
    var calibration: URL?
    var samples: Int
    var seqlen: Int
    var seed: Int
    var trueSequential: Bool
    var blocksize: Int
    var percdamp: Double
    /// How KRP forms its rectified weight.
    var krpRectification: KRPRectification = .legacy
    /// How the target sparsity is spread over blocks, and OWL's M and λ.
    var allocation: SparsityAllocation = .uniform
    var owl = OWLSettings()
    /// Linears left dense and per-linear sparsities (`--ignore`, `--sparsity-override`).
    var linearRules = LinearRules()
    /// The run as a recipe (`prune --recipe`), embedded in the reports and config.json.
    var recipe: String?
    var outputDType: DType?
    var reportURL: URL?
    /// Continue an interrupted run with the same fingerprint (RunResumption).
    var resume: Bool = false
    /// Where ranks get the block weights (every rank reads, or rank 0 reads and broadcasts).
    var weights: WeightsSource = .shared
    /// Rank 0's lock on the output's partial folder, taken before any work (nil on other ranks).
    var outputLock: OutputLock?
}

/// One prune run on one rank. Every rank runs the same code; the ownership plan decides who solves what.
///
/// For each block: every rank reads the block's weights, runs its calibration sequences through it collecting
/// statistics of each linear's input (phase by phase when true-sequential), the statistics are reduced to their
/// owners, owners solve, the pruned weights are broadcast from their owners, and every rank computes its
/// sequences' block outputs as the next block's inputs. Rank 0 writes the output checkpoint.
///
/// Sequences go through the block one at a time, and each sequence's statistics are formed on their own
/// before being added in Double: a sequence contributes the same bits whichever rank holds it, so the result
/// does not depend on the number of ranks beyond the order of Double additions.
final class PruneRun {
    let settings: PruneSettings
    let comm: Communicator
    let logger: Logger

    /// Each block's target sparsity when the allocation is not uniform (OWL).
    private var blockSparsities: [Double]?

    init(settings: PruneSettings, comm: Communicator, logger: Logger) {
        self.settings = settings
        self.comm = comm
        self.logger = logger
    }

    func run() throws -> RunReport {
        let start = Date()
        let weights = try RunWeights(settings: settings, comm: comm)
        let config = weights.config
        let method = settings.method
        let seqlen = settings.seqlen
        try settings.linearRules.checkTargets(layers: config.numHiddenLayers)
        try checkPatternFits(config: config)
        guard method == .magnitude || seqlen <= config.maxPositionEmbeddings else {
            throw PruneDistError(.argument, "--seqlen \(seqlen) is beyond the model's context: \(settings.model.appendingPathComponent("config.json").path) has max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        let plan = OwnershipPlan(config: config, ranks: comm.size, trueSequential: settings.trueSequential,
                                 statisticsPerInput: method.statisticsPerInput, splitRows: method.splitsRows)
        var solverGroups = SolverGroups(comm: comm)

        // Every rank draws the same windows and keeps those with index ≡ rank (mod size).
        let windows: [[Int]] = method == .magnitude ? [] : try weights.windows(settings: settings)
        let mine = comm.shard(windows)
        let rope = try RopeTable(config: config, positions: seqlen)
        let scratch = LlamaBlockScratch()  // one forward's q, k, v, gate, up for the whole run
        // --threads N: N threads take whole sequences in the forward and the statistics (bits as one thread's), and
        // OpenBLAS gets the N threads back for the solve.
        let threads = max(1, blasThreads())
        let scratches = [scratch] + (1..<threads).map { _ in LlamaBlockScratch() }
        /// - finish: free what only the output stage reads, as each trace is done (the dense stream's traces)
        func advance(_ traces: inout [LlamaBlockTrace], to stage: LlamaBlockStage, weights: LlamaBlockWeights, finish: Bool = false) {
            onSequenceThreads(threads) {
                forEachConcurrently(&traces, threads: threads) { _, thread, trace in
                    trace.advance(to: stage, weights: weights, rope: rope, scratch: scratches[thread])
                    if finish { trace.releaseStagesOnlyTheOutputReads() }
                }
            }
        }
        var prunedStream: [[Float]] = []
        if !windows.isEmpty, let embedding = try weights.embedding(needed: !mine.isEmpty) {
            prunedStream = try mine.map { try embedding.embed($0) }
        }
        var denseStream: [[Float]]? = method.needsDenseStream ? prunedStream : nil
        blockSparsities = try allocatedSparsities(weights: weights, stream: prunedStream, rope: rope)

        let resumption = try RunResumption.start(settings: settings, checkpoint: weights.checkpoint, comm: comm, logger: logger)
        let output = resumption.output
        try replayFinishedBlocks(resumption.firstBlock, journal: resumption.journal, weights: weights, rope: rope, scratch: scratch,
                                 prunedStream: &prunedStream, denseStream: &denseStream)
        var linears: [RunReport.Linear] = []
        var blocks: [RunReport.Block] = []
        if comm.rank == 0 {
            logger.info("pruning \(config.numHiddenLayers) blocks with \(method.rawValue), \(settings.pattern), \(windows.count) sequences of \(seqlen) tokens over \(comm.size) rank(s)")
        }

        for layer in resumption.firstBlock..<config.numHiddenLayers {
            let blockStart = Date()
            FaultInjection.atBlockStart(rank: comm.rank, host: comm.hostName, layer: layer)
            var statisticsTime = PhaseTime(), solveTime = PhaseTime(), forwardTime = PhaseTime()
            let dense = try weights.block(layer)
            var pruned = dense
            var traces = prunedStream.map { LlamaBlockTrace(input: $0, seqlen: seqlen) }
            var denseTraces: [LlamaBlockTrace] = []
            if let denseStream {
                denseTraces = forwardTime.measure {
                    let keepsMLPOutput = method.statistics(for: .mlpHidden, shape: dense.shape).crossOutputs > 0
                    var traces = denseStream.map {
                        var trace = LlamaBlockTrace(input: $0, seqlen: seqlen)
                        trace.keepsMLPOutput = keepsMLPOutput
                        return trace
                    }
                    advance(&traces, to: .output, weights: dense, finish: true)
                    return traces
                }
            }
            for phase in plan.phases {
                let inputs = LlamaLinearInput.allCases.filter { input in phase.contains { $0.inputGroup == input } }
                var statistics: [LlamaLinearInput: InputStatistics] = [:]
                if method.statistics != .none {
                    // Inputs as the block stands at the start of the phase (earlier phases already pruned).
                    let last = LlamaBlockStage(inputs.last!)
                    forwardTime.measure {
                        advance(&traces, to: last, weights: pruned)
                        for scratch in scratches { scratch.release() }  // peak memory: not held next to the statistics
                    }
                    statistics = try statisticsTime.measure {
                        try reducedStatistics(inputs: inputs, layer: layer, plan: plan, dense: dense,
                                              traces: traces, denseTraces: denseTraces, threads: threads)
                    }
                }

                let solveStart = PhaseTime.now()
                // Every rank solves all the linears it owns in this phase before any is broadcast: broadcasting
                // each as it is solved would make the ranks take turns, one solving while the others wait.
                let group = try solverGroups.communicator(phase: phase, layer: layer, plan: plan)
                var solvedHere: [LlamaLinear: [Float]] = [:]
                let mine = phase.filter { plan.solvers(layer: layer, linear: $0).contains(comm.rank) }
                if threads > 1, method.splitsRows, !mine.isEmpty, mine.allSatisfy({ plan.solvers(layer: layer, linear: $0).count == 1 }) {
                    // --threads N: the rank's linears (or bands of them) on its threads, not OpenBLAS's.
                    let solved = try solveOnThreads(mine, layer: layer, config: config, dense: dense, statistics: statistics, threads: threads)
                    for (linear, solution) in zip(mine, solved) {
                        linears.append(solution.report)
                        solvedHere[linear] = solution.weight
                    }
                }
                for linear in phase where solvedHere[linear] == nil {
                    let solvers = plan.solvers(layer: layer, linear: linear)
                    guard solvers.contains(comm.rank) else { continue }
                    let solved = try solve(linear: linear, layer: layer, dense: dense, statistics: statistics[linear.inputGroup],
                                           group: solvers.count > 1 ? group : nil)
                    if let solved {
                        linears.append(solved.report)
                        solvedHere[linear] = solved.weight
                    }
                }
                statistics = [:]  // peak memory: the Hessians are not held next to the broadcast weights
                for linear in phase {
                    var weight = solvedHere.removeValue(forKey: linear) ?? [Float](repeating: 0, count: dense.weight(linear).count)
                    try comm.broadcast(&weight, root: plan.owner(layer: layer, linear: linear))
                    pruned.setWeight(linear, weight)
                }
                solveTime.add(since: solveStart)
                // Stages computed with this phase's linears before they were pruned must be computed again.
                for s in traces.indices { traces[s].rewind(to: LlamaBlockStage(inputs.first!)) }
            }

            // The next block's inputs: the pruned stream through the pruned block, the dense one through the dense block.
            forwardTime.measure {
                advance(&traces, to: .output, weights: pruned)
                for s in traces.indices { prunedStream[s] = traces[s].output }
                if denseStream != nil { denseStream = denseTraces.map(\.output) }
                traces = []
                denseTraces = []
            }
            try output?.writeBlock(layer: layer, linears: pruned.weights)
            try resumption.blockFinished(layer, pruned: pruned)
            let seconds = Date().timeIntervalSince(blockStart)
            blocks.append(RunReport.Block(layer: layer, seconds: seconds, statisticsSeconds: statisticsTime.wall,
                                          solveSeconds: solveTime.wall, forwardSeconds: forwardTime.wall,
                                          statisticsCPUSeconds: statisticsTime.cpu, solveCPUSeconds: solveTime.cpu,
                                          forwardCPUSeconds: forwardTime.cpu))
            if comm.rank == 0 {
                let elapsed = Date().timeIntervalSince(start)
                let left = elapsed / Double(layer + 1 - resumption.firstBlock) * Double(config.numHiddenLayers - layer - 1)
                let tokensPerSecond = Double(windows.count * seqlen * (layer + 1 - resumption.firstBlock)) / elapsed
                logger.info("block \(layer + 1)/\(config.numHiddenLayers) done in \(String(format: "%.1f", seconds)) s; \(String(format: "%.0f", tokensPerSecond)) tokens/s; elapsed \(String(format: "%.0f", elapsed)) s, about \(String(format: "%.0f", left)) s left")
            }
        }

        // Every rank's report entries and usage, gathered on rank 0, which writes the report with the output;
        // the others wait for it and return the same report.
        let usage = RunReport.Rank(rank: comm.rank, host: comm.hostName, peakRSSBytes: peakResidentBytes(), cpuSeconds: processCPUSeconds(),
                                   sequences: mine.count, bytesSent: comm.bytesSent + solverGroups.bytesSent)
        let parts = try comm.gather(RankPart(linears: linears, usage: usage), root: 0)
        var report: RunReport? = nil
        if comm.rank == 0 {
            let made = try makeReport(parts: parts, blocks: blocks, samples: windows.count, start: start, config: config,
                                      prunedBlocks: config.numHiddenLayers - resumption.firstBlock,
                                      inputDType: weights.checkpoint!.storageDType)
            resumption.journal?.remove()
            try output!.finish(reportData: try made.jsonData(), reportURL: settings.reportURL)
            report = made
        }
        return try comm.broadcast(report, root: 0)
    }

    /// The run's report from every rank's entries, in block and then execution order, with plan's estimate of the
    /// bytes each rank sends for the `prunedBlocks` this process pruned beside the measured bytes.
    private func makeReport(parts: [RankPart], blocks: [RunReport.Block], samples: Int, start: Date, config: LlamaConfig,
                            prunedBlocks: Int, inputDType: DType) throws -> RunReport {
        let linears = parts.flatMap(\.linears).sorted {
            ($0.layer, LlamaLinear.allCases.firstIndex(of: $0.linear)!) < ($1.layer, LlamaLinear.allCases.firstIndex(of: $1.linear)!)
        }
        let planned = MemoryPlan(MemoryPlan.Request(config: config, ranks: comm.size, samples: samples, seqlen: settings.seqlen,
                                                    method: settings.method, trueSequential: settings.trueSequential, checkpointBytes: 0,
                                                    storageBytesPerElement: 4, weightsBroadcast: settings.weights == .broadcast,
                                                    patterns: PerLinear { settings.linearRules.pattern(layer: 0, linear: $0, block: pattern(layer: 0)) }))
        let rankUsage = parts.enumerated().map { r, part in
            var usage = part.usage
            usage.plannedBytesSent = planned.ranks[r].sentBytesPerBlock * prunedBlocks
            return usage
        }
        let rules = settings.linearRules
        let overrides = rules.overrides.map { override -> String in
            if case let .nOfM(n, m) = override.pattern { return "\(override.target)=\(n):\(m)" }
            return "\(override.target)=\(override.pattern.sparsity)"
        }
        let zeros = linears.reduce(0) { $0 + $1.zeros }, total = linears.reduce(0) { $0 + $1.total }
        let allocated = settings.method != .magnitude || settings.allocation != .uniform
        return RunReport(tool: "prune-dist", version: PruneDistVersion.string, model: settings.model.path, output: settings.out.path,
                         method: settings.method.rawValue, pattern: settings.pattern.description, sparsityTarget: settings.pattern.sparsity,
                         trueSequential: settings.trueSequential, samples: samples, seqlen: settings.seqlen, seed: settings.seed,
                         ranks: comm.size, linears: linears, blocks: blocks, rankUsage: rankUsage,
                         totalSeconds: Date().timeIntervalSince(start), overallSparsity: Double(zeros) / Double(max(total, 1)), evaluation: nil,
                         allocation: allocated ? settings.allocation.rawValue : nil, blockSparsityTargets: allocated ? blockSparsities : nil,
                         krpRectification: settings.method == .krp ? "\(settings.krpRectification)" : nil,
                         provenance: try RunProvenance.make(settings: settings, calibration: settings.calibration, seed: settings.seed,
                                                            inputDType: inputDType, outputDType: settings.outputDType ?? inputDType,
                                                            hosts: rankUsage.map(\.host), start: start),
                         recipe: settings.recipe, ignore: rules.isEmpty ? nil : rules.ignore, sparsityOverrides: rules.isEmpty ? nil : overrides)
    }

    /// OWL's per-block sparsities (nil for the uniform allocation), logged by rank 0.
    private func allocatedSparsities(weights: RunWeights, stream: [[Float]], rope: RopeTable) throws -> [Double]? {
        guard settings.allocation == .owl else { return nil }
        guard case let .unstructured(target) = settings.pattern else {
            throw PruneDistError(.argument, "--allocation owl spreads an unstructured --sparsity over blocks; \(settings.pattern) is a fixed pattern")
        }
        let start = Date()
        let sparsities = try owlBlockSparsities(weights: weights, stream: stream, rope: rope, seqlen: settings.seqlen, target: target,
                                                settings: settings.owl, comm: comm)
        if comm.rank == 0 {
            let listed = sparsities.map { String(format: "%.3f", $0) }.joined(separator: " ")
            logger.info("OWL (M \(settings.owl.threshold), λ \(settings.owl.spread)) block sparsities in \(String(format: "%.0f", Date().timeIntervalSince(start))) s: \(listed)")
        }
        return sparsities
    }

    /// The pattern block `layer` is pruned to.
    private func pattern(layer: Int) -> SparsityPattern {
        blockSparsities.map { .unstructured(fraction: $0[layer]) } ?? settings.pattern
    }

    /// An N:M pattern (the run's or an override's) must divide its linear's input width; refused before any work is done.
    private func checkPatternFits(config: LlamaConfig) throws {
        for layer in 0..<config.numHiddenLayers {
            for linear in LlamaLinear.allCases {
                guard case let .nOfM(n, m) = settings.linearRules.pattern(layer: layer, linear: linear, block: settings.pattern) else { continue }
                let inputs = linear.shape(config: config, layer: layer)[1]
                if inputs % m != 0 {
                    throw PruneDistError(.argument, "pattern \(n):\(m): \(linear.weightName(layer: layer)) has \(inputs) inputs, not a multiple of \(m)")
                }
            }
        }
    }

    /// The communicators of the ranks that solve one linear together, made once per distinct grouping (MPI_Comm_split
    /// is a collective every rank calls, in the same order on every rank because every rank has the same plan).
    private struct SolverGroups {
        let comm: Communicator
        private var made: [[[Int]]: Communicator] = [:]

        init(comm: Communicator) { self.comm = comm }

        /// What this rank sent in its groups' collectives (each communicator counts its own).
        var bytesSent: Int { made.values.reduce(0) { $0 + $1.bytesSent } }

        /// This rank's group communicator in `phase` (nil when no linear of the phase has several solvers).
        mutating func communicator(phase: [LlamaLinear], layer: Int, plan: OwnershipPlan) throws -> Communicator? {
            let groups = phase.map { plan.solvers(layer: layer, linear: $0) }.filter { $0.count > 1 }
            guard !groups.isEmpty else { return nil }
            if let group = made[groups] { return group }
            let mine = groups.firstIndex { $0.contains(comm.rank) }
            let group = try comm.split(color: mine ?? groups.count, key: mine.map { groups[$0].firstIndex(of: comm.rank)! } ?? comm.rank)
            made[groups] = group
            return group
        }
    }

    private struct RankPart: Codable {
        var linears: [RunReport.Linear]
        var usage: RunReport.Rank
    }

    /// Local statistics of this rank's sequences for each input of the phase, summed over ranks onto the owners
    /// and normalised there. Non-owners get nothing back.
    private func reducedStatistics(inputs: [LlamaLinearInput], layer: Int, plan: OwnershipPlan, dense: LlamaBlockWeights,
                                   traces: [LlamaBlockTrace], denseTraces: [LlamaBlockTrace], threads: Int) throws -> [LlamaLinearInput: InputStatistics] {
        var result: [LlamaLinearInput: InputStatistics] = [:]
        for input in inputs {
            let needs = settings.method.statistics(for: input, shape: dense.shape)
            var local = InputStatistics(dimension: dense.inputDimension(input), needs: needs)
            onSequenceThreads(threads) {
                local.accumulate(batches: traces.count, threads: threads, tokens: settings.seqlen) { s in
                    guard !denseTraces.isEmpty else { return (traces[s].input(input), nil) }
                    // The cross term against down's dense outputs (.mlpHidden only), or against the dense inputs.
                    return (traces[s].input(input), needs.crossOutputs > 0 ? denseTraces[s].mlpOutput : denseTraces[s].input(input))
                }
            }
            var buffer = local.takePacked()  // one copy of the sums at a time, not two (docs/decisions.md: memory)
            let owners = plan.statisticOwners(layer: layer, input: input)
            if owners.count == 1 {
                try comm.reduceSum(&buffer, root: owners[0])
            } else {
                try comm.allreduceSum(&buffer)
            }
            if owners.contains(comm.rank) {
                local.unpack(buffer)
                buffer = []
                if let bad = local.nonFiniteStatistic {
                    let names = input.linears.map { $0.weightName(layer: layer) }.joined(separator: ", ")
                    throw PruneDistError(.nonFinite, "the \(bad) of the input of \(names) holds NaN or Inf: calibration activations overflowed float32 in block \(layer) or earlier (check those weights)")
                }
                local.normalise()
                result[input] = local
            }
        }
        return result
    }

    /// Runs `body` with OpenBLAS on one thread while the run's `threads` threads take whole sequences, then gives
    /// OpenBLAS its threads back for the solve.
    private func onSequenceThreads<R>(_ threads: Int, _ body: () throws -> R) rethrows -> R {
        guard threads > 1 else { return try body() }
        setBLASThreads(1)
        defer { setBLASThreads(threads) }
        return try body()
    }

    /// Prunes one linear with the run's method: alone (`group` nil), or with the ranks of `group` (this linear's
    /// solvers, ranked in their order), each on a band of its rows, the bands then gathered on the owner.
    /// Returns the weight and report entry on the owner, nil on the other solvers.
    private func solve(linear: LlamaLinear, layer: Int, dense: LlamaBlockWeights, statistics: InputStatistics?, group: Communicator?)
        throws -> (weight: [Float], report: RunReport.Linear)?
    {
        let start = Date()
        var band: RowBand?
        if let group {
            band = RowBand(member: group.rank, of: group.size, totalRows: dense.shape(linear)[0]) { try group.allgatherDoubles($0) }
        }
        var solved = try solveBand(linear: linear, layer: layer, dense: dense, statistics: statistics, band: band)
        if let group {
            let whole = try group.gatherFloats(solved.result.weight, root: 0)
            guard group.rank == 0 else { return nil }
            solved.result.weight = whole
        }
        return (solved.result.weight, reportEntry(linear: linear, layer: layer, solved.result, energy: solved.energy,
                                                  seconds: Date().timeIntervalSince(start)))
    }

    /// Prunes this rank's linears of a phase on its `threads` threads, OpenBLAS on one thread each: the linears go to
    /// threads as the ownership plan gives them to ranks, and idle threads solve bands of a linear's rows (RowBand),
    /// so the weights are the bits one thread writes. Returns each linear's weight and report entry, in `linears` order.
    private func solveOnThreads(_ linears: [LlamaLinear], layer: Int, config: LlamaConfig, dense: LlamaBlockWeights,
                                statistics: [LlamaLinearInput: InputStatistics], threads: Int)
        throws -> [(weight: [Float], report: RunReport.Linear)]
    {
        let start = Date()
        let costs = linears.map { OwnershipPlan.cost(of: $0, config: config, layer: layer, statisticsPerInput: settings.method.statisticsPerInput) }
        let solvers = OwnershipPlan.assign(costs: costs, rows: linears.map { dense.shape($0)[0] }, workers: threads, splitRows: true)
        let exchanges = solvers.map { RowBandExchange(members: $0.count) }
        let outcomes = ThreadOutcomes(members: solvers.map(\.count))
        let work = ThreadWork(run: self, dense: dense, statistics: statistics)
        setBLASThreads(1)
        defer { setBLASThreads(threads) }
        onThreadsOfTheirOwn(threads) { thread in
            for (i, linear) in linears.enumerated() {
                guard let position = solvers[i].firstIndex(of: thread) else { continue }
                var band: RowBand?
                if solvers[i].count > 1 {
                    band = RowBand(member: position, of: solvers[i].count, totalRows: work.dense.shape(linear)[0]) {
                        try exchanges[i].gather($0, member: position)
                    }
                }
                do {
                    let solved = try work.run.solveBand(linear: linear, layer: layer, dense: work.dense,
                                                        statistics: work.statistics[linear.inputGroup], band: band)
                    outcomes.set(i, position, .success(solved))
                } catch {
                    exchanges[i].abandon()
                    outcomes.set(i, position, .failure(error))
                }
            }
        }
        let results = outcomes.all
        // The first failure itself, not a band partner's "another thread failed".
        let failures = results.flatMap { $0 }.compactMap { outcome -> Error? in
            if case let .failure(error)? = outcome { return error } else { return nil }
        }
        if let failure = failures.first(where: { ($0 as? PruneDistError)?.kind != .interrupted }) ?? failures.first { throw failure }
        let seconds = Date().timeIntervalSince(start)
        return try linears.indices.map { i in
            let bands = try results[i].map { try $0!.get() }
            var result = bands[0].result
            result.weight = bands.flatMap(\.result.weight)
            return (result.weight, reportEntry(linear: linears[i], layer: layer, result, energy: bands[0].energy, seconds: seconds))
        }
    }

    /// One linear, or the band of its rows `band` names, pruned with the run's method; `result.weight` holds the
    /// band's rows, the errors and `energy` are the whole linear's.
    fileprivate func solveBand(linear: LlamaLinear, layer: Int, dense: LlamaBlockWeights, statistics: InputStatistics?, band: RowBand?)
        throws -> (result: PruneResult, energy: Double?)
    {
        var weight = dense.weight(linear)
        var shape = dense.shape(linear)
        let columns = shape[1]
        if let band {
            weight = band.slice(weight, columns: columns)
            shape = [band.rows.count, columns]
        }
        let name = linear.weightName(layer: layer)
        do {
            guard let pattern = settings.linearRules.pattern(layer: layer, linear: linear, block: pattern(layer: layer)) else {
                return (PruneResult(weight: weight), nil)  // --ignore: left as it is
            }
            let result = try settings.method.prune(weight: weight, shape: shape, statistics: statistics, pattern: pattern, settings: settings,
                                                   band: band)
            // The errors' scale, from the same Hessian they were measured with (reported as error / ‖Y‖²).
            var energy: Double?
            if result.errorBefore != nil, let hessian = statistics?.hessian, hessian.count == columns * columns {
                energy = try outputEnergy(weight: weight, rows: shape[0], columns: columns, hessian: hessian, band: band)
            }
            return (result, energy)
        } catch let error as PruneDistError {
            throw PruneDistError(error.kind, "\(name): \(error.message)")
        }
    }

    /// The report's entry for a solved linear; result.weight: the whole [rows, columns] weight.
    private func reportEntry(linear: LlamaLinear, layer: Int, _ result: PruneResult, energy: Double?, seconds: Double) -> RunReport.Linear {
        let zeros = result.weight.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
        return RunReport.Linear(linear: linear, layer: layer, owner: comm.rank,
                                sparsity: Double(zeros) / Double(result.weight.count), zeros: zeros, total: result.weight.count,
                                errorBefore: result.errorBefore, errorAfter: result.errorAfter, outputEnergy: energy, damping: result.damping,
                                ridge: result.ridge, redamped: result.redamped, seconds: seconds)
    }
}

/// Wall and CPU seconds spent in one phase of a block. CPU time (the process's, so every BLAS thread counts) is
/// what a loaded machine does not inflate; the run report gives both.
struct PhaseTime {
    var wall = 0.0, cpu = 0.0

    static func now() -> (wall: Date, cpu: Double) { (Date(), processCPUSeconds()) }

    mutating func add(since start: (wall: Date, cpu: Double)) {
        wall += Date().timeIntervalSince(start.wall)
        cpu += processCPUSeconds() - start.cpu
    }

    @discardableResult
    mutating func measure<T>(_ body: () throws -> T) rethrows -> T {
        let start = PhaseTime.now()
        defer { add(since: start) }
        return try body()
    }
}

/// What the threads of `PruneRun.solveOnThreads` read: shared read-only while they run.
private struct ThreadWork: @unchecked Sendable {
    let run: PruneRun
    let dense: LlamaBlockWeights
    let statistics: [LlamaLinearInput: InputStatistics]
}

/// Each linear's solution from each of its solver threads (member order).
private final class ThreadOutcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var outcomes: [[Result<(result: PruneResult, energy: Double?), Error>?]]

    init(members: [Int]) { outcomes = members.map { Array(repeating: nil, count: $0) } }

    func set(_ linear: Int, _ member: Int, _ outcome: Result<(result: PruneResult, energy: Double?), Error>) {
        lock.withLock { outcomes[linear][member] = outcome }
    }

    var all: [[Result<(result: PruneResult, energy: Double?), Error>?]] { lock.withLock { outcomes } }
}
