import Engine

/// Which rank solves which linear. Linears are solved phase by phase (one phase per block, or four with
/// --true-sequential); inside a phase, linears go largest first to the least loaded rank (greedy
/// bin-packing), where a linear's weight is the size of the statistics its owner must hold plus the
/// work of its solve. A phase with fewer linears than ranks (o_proj and down_proj alone with --true-sequential) would
/// leave ranks waiting while the owners solve: with `splitRows` each idle rank joins the solve of the linear with the
/// most work per solver, on a band of its output rows (RowBand). Every rank computes the same plan from the same
/// config, so no message is needed.
public struct OwnershipPlan: Codable, Equatable, Sendable {
    public let ranks: Int
    /// solvers[layer][linear]: the ranks that solve the linear, its owner first; the order of their row bands.
    public let solvers: [PerLinear<[Int]>]
    /// owners[layer][linear] = rank: each linear's first solver.
    public var owners: [PerLinear<Int>] { solvers.map { layer in PerLinear { layer[$0][0] } } }
    /// The linears solved together, in order: statistics are collected once per phase.
    public let phases: [[LlamaLinear]]

    /// The fewest rows a solver's band may hold: below that the factorisations every solver repeats outweigh the rows.
    public static let minimumBandRows = 16

    public static func phases(trueSequential: Bool) -> [[LlamaLinear]] {
        trueSequential ? [[.q, .k, .v], [.o], [.gate, .up], [.down]] : [LlamaLinear.allCases]
    }

    public init(config: LlamaConfig, ranks: Int, trueSequential: Bool, statisticsPerInput: Int = 1, splitRows: Bool = false) {
        self.ranks = ranks
        let phases = OwnershipPlan.phases(trueSequential: trueSequential)
        self.phases = phases
        solvers = (0..<config.numHiddenLayers).map { layer in
            var layerSolvers = PerLinear<[Int]>(repeating: [])  // every linear is in exactly one phase, so each is set below
            for phase in phases {
                let costs = phase.map { OwnershipPlan.cost(of: $0, config: config, layer: layer, statisticsPerInput: statisticsPerInput) }
                let rows = phase.map { $0.shape(config: config, layer: layer)[0] }
                let assigned = OwnershipPlan.assign(costs: costs, rows: rows, workers: ranks, splitRows: splitRows)
                for (i, linear) in phase.enumerated() { layerSolvers[linear] = assigned[i] }
            }
            return layerSolvers
        }
    }

    /// Who solves each of a phase's linears, given in execution order with their costs and row counts: solvers[i],
    /// owner first. Largest first to the least loaded worker (ties keep execution order, so every worker computes
    /// the same); with fewer linears than workers and `splitRows`, the idle workers join, in order, the linear with
    /// the most work per solver (ties to the earlier linear) while its bands keep at least `minimumBandRows` rows.
    /// Workers are a job's ranks, or one rank's threads (PruneRun).
    public static func assign(costs: [Double], rows: [Int], workers: Int, splitRows: Bool) -> [[Int]] {
        var load = [Double](repeating: 0, count: workers)
        var solvers = [[Int]](repeating: [], count: costs.count)
        for (i, cost) in costs.enumerated().sorted(by: { ($0.element, -$0.offset) > ($1.element, -$1.offset) }) {
            let worker = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            solvers[i] = [worker]
            load[worker] += cost
        }
        guard splitRows, costs.count < workers else { return solvers }
        for idle in load.indices where load[idle] == 0 {
            let open = costs.indices.filter { rows[$0] / (solvers[$0].count + 1) >= minimumBandRows }
            guard let linear = open.max(by: { a, b in
                (costs[a] / Double(solvers[a].count), -a) < (costs[b] / Double(solvers[b].count), -b)
            }) else { break }
            solvers[linear].append(idle)
        }
        return solvers
    }

    /// What owning `linear` weighs: d² statistics (×statisticsPerInput, e.g. KRP's cross term) and an O(d³ + m·d²)
    /// solve, for its [m, d] weight.
    public static func cost(of linear: LlamaLinear, config: LlamaConfig, layer: Int, statisticsPerInput: Int) -> Double {
        let shape = linear.shape(config: config, layer: layer)
        let (m, d) = (Double(shape[0]), Double(shape[1]))
        return Double(statisticsPerInput) * d * d + d * d * d / 3 + m * d * d
    }

    public func owner(layer: Int, linear: LlamaLinear) -> Int { solvers[layer][linear][0] }

    /// The ranks that solve `linear` together, its owner first.
    public func solvers(layer: Int, linear: LlamaLinear) -> [Int] { solvers[layer][linear] }

    /// The distinct ranks that need the statistics of one linear input in one phase: its linears' solvers.
    public func statisticOwners(layer: Int, input: LlamaLinearInput) -> [Int] {
        Array(Set(input.linears.flatMap { solvers(layer: layer, linear: $0) })).sorted()
    }
}
