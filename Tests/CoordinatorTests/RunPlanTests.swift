import Engine
import Foundation
import TestSupport
import Worker
import WorkerTesting
import XCTest
@testable import Coordinator

/// The plans every rank computes on its own and must agree on: which rank solves which linear (`OwnershipPlan`),
/// which ranks run which AdaPruner trials (`AdaPrunerTrialGroups`), and what each rank holds (`MemoryPlan`).
final class RunPlanTests: XCTestCase {
    private func tinyLlama() throws -> LlamaConfig {
        try LlamaConfig.load(from: Fixtures.path("fixtures/tiny-llama").appendingPathComponent("config.json"))
    }

    private func llama70B() throws -> LlamaConfig {
        try LlamaConfig.load(from: Fixtures.packageRoot.appendingPathComponent("cluster/llama-2-70b.json"))
    }

    // MARK: OwnershipPlan

    func testOwnershipPlanIsDeterministicAndCoversEveryLinear() throws {
        for config in [try tinyLlama(), try llama70B()] {
            for ranks in [1, 2, 3, 8] {
                for trueSequential in [false, true] {
                    let plan = OwnershipPlan(config: config, ranks: ranks, trueSequential: trueSequential, statisticsPerInput: 2)
                    XCTAssertEqual(plan, OwnershipPlan(config: config, ranks: ranks, trueSequential: trueSequential, statisticsPerInput: 2))
                    XCTAssertEqual(plan.phases.flatMap { $0 }.sorted { $0.rawValue < $1.rawValue },
                                   LlamaLinear.allCases.sorted { $0.rawValue < $1.rawValue }, "the phases partition the linears")
                    XCTAssertEqual(plan.owners.count, config.numHiddenLayers)
                    for layer in 0..<config.numHiddenLayers {
                        for linear in LlamaLinear.allCases {
                            XCTAssertTrue((0..<ranks).contains(plan.owner(layer: layer, linear: linear)))
                        }
                        for input in LlamaLinearInput.allCases {
                            let owners = plan.statisticOwners(layer: layer, input: input)
                            XCTAssertEqual(owners, Set(input.linears.map { plan.owner(layer: layer, linear: $0) }).sorted())
                        }
                    }
                    if ranks == 1 { XCTAssertTrue(plan.owners.allSatisfy { $0 == PerLinear(repeating: 0) }) }
                }
            }
        }
    }

    /// With `splitRows`, a phase with fewer linears than ranks has its idle ranks join the solves, each rank in one
    /// linear's solvers, owner first; no band falls below `minimumBandRows`; phases with a linear per rank or more are
    /// not split, and without `splitRows` nothing is.
    func testIdleRanksJoinTheSolveOfPhasesWithFewLinears() throws {
        for config in [try tinyLlama(), try llama70B()] {
            for ranks in [1, 2, 3, 4, 8, 600] {
                for trueSequential in [false, true] {
                    let plan = OwnershipPlan(config: config, ranks: ranks, trueSequential: trueSequential, statisticsPerInput: 2, splitRows: true)
                    let unsplit = OwnershipPlan(config: config, ranks: ranks, trueSequential: trueSequential, statisticsPerInput: 2)
                    XCTAssertEqual(plan.owners, unsplit.owners, "the owners do not change")
                    for layer in [0, config.numHiddenLayers - 1] {
                        for phase in plan.phases {
                            var seen = Set<Int>()
                            for linear in phase {
                                let solvers = plan.solvers(layer: layer, linear: linear)
                                XCTAssertEqual(unsplit.solvers(layer: layer, linear: linear), [unsplit.owner(layer: layer, linear: linear)])
                                XCTAssertEqual(solvers.first, plan.owner(layer: layer, linear: linear))
                                XCTAssertGreaterThanOrEqual(linear.shape(config: config, layer: layer)[0] / solvers.count, OwnershipPlan.minimumBandRows)
                                if phase.count >= ranks { XCTAssertEqual(solvers.count, 1, "\(ranks) ranks, \(phase): no split") }
                                if phase.count < ranks {
                                    XCTAssertTrue(seen.isDisjoint(with: solvers), "\(ranks) ranks, \(phase): a rank in two linears' solvers")
                                }
                                seen.formUnion(solvers)
                            }
                            if phase.count < ranks {
                                let room = phase.reduce(0) { $0 + $1.shape(config: config, layer: layer)[0] / OwnershipPlan.minimumBandRows }
                                XCTAssertEqual(seen.count, min(ranks, room), "\(ranks) ranks, \(phase): every idle rank joins while bands have rows")
                            }
                        }
                    }
                    if ranks == 2 && trueSequential {
                        XCTAssertEqual(plan.solvers(layer: 0, linear: .o), [0, 1])
                        XCTAssertEqual(plan.solvers(layer: 0, linear: .down), [0, 1])
                    }
                }
            }
        }
    }

    /// Greedy largest-first packing: within a phase, the most and least loaded ranks differ by at most the largest
    /// cost of the phase, and as many ranks as linears get one linear each.
    func testOwnershipPlanBalancesEachPhase() throws {
        for config in [try tinyLlama(), try llama70B()] {
            for ranks in [2, 3, 4, 7] {
                for trueSequential in [false, true] {
                    let plan = OwnershipPlan(config: config, ranks: ranks, trueSequential: trueSequential, statisticsPerInput: 1)
                    for phase in plan.phases {
                        var load = [Double](repeating: 0, count: ranks)
                        var count = [Int](repeating: 0, count: ranks)
                        let costs = phase.map { OwnershipPlan.cost(of: $0, config: config, layer: 0, statisticsPerInput: 1) }
                        for (linear, cost) in zip(phase, costs) {
                            load[plan.owner(layer: 0, linear: linear)] += cost
                            count[plan.owner(layer: 0, linear: linear)] += 1
                        }
                        XCTAssertLessThanOrEqual(load.max()! - load.min()!, costs.max()!, "\(ranks) ranks, phase \(phase)")
                        if phase.count <= ranks {
                            XCTAssertEqual(count.max(), 1, "\(ranks) ranks, phase \(phase): one linear per rank")
                        }
                    }
                }
            }
        }
    }

    // MARK: AdaPrunerTrialGroups

    func testTrialGroupsAreConsecutiveRanksAndShareResultsInTrialOrder() throws {
        XCTAssertEqual((0..<4).map { AdaPrunerTrialGroups.group(ofRank: $0, ranks: 4, groups: 2) }, [0, 0, 1, 1])
        XCTAssertEqual((0..<5).map { AdaPrunerTrialGroups.group(ofRank: $0, ranks: 5, groups: 2) }, [0, 0, 0, 1, 1])
        XCTAssertEqual((0..<3).map { AdaPrunerTrialGroups.group(ofRank: $0, ranks: 3, groups: 3) }, [0, 1, 2])

        struct Seen: Sendable { var members: [[Int]]; var group: Int; var groupSize: Int; var mine: [Int]; var shared: [Int] }
        for (ranks, batch, members) in [(4, 2, [[0, 1], [2, 3]]), (3, 8, [[0], [1], [2]]), (2, 1, [[0, 1]]), (1, 4, [[0]])] {
            let seen = try InMemoryCommunicator.run(ranks: ranks) { world -> Seen in
                let groups = try AdaPrunerTrialGroups(batch: batch, world: world)
                let round = 4..<(4 + batch)
                let mine = groups.mine(of: round)
                let trials = mine.map { index in
                    AdaPrunerReport.Trial(index: index, calibrationSeed: 0, samples: 1, alphas: [:], betas: [:], coefficients: [:],
                                          objectivePerplexity: index == 5 ? .infinity : Double(index), gradientSeconds: 0,
                                          objectiveSeconds: 0, reusedGradients: false, round: 1, group: groups.group)
                }
                let shared = try groups.share(trials, world: world)
                return Seen(members: groups.members, group: groups.group, groupSize: groups.comm.size, mine: mine, shared: shared.map(\.index))
            }
            for (rank, s) in seen.enumerated() {
                XCTAssertEqual(s.members, members, "\(ranks) ranks, batch \(batch)")
                XCTAssertTrue(members[s.group].contains(rank))
                XCTAssertEqual(s.groupSize, members[s.group].count)
                XCTAssertEqual(s.mine, Array(4..<(4 + batch)).filter { ($0 - 4) % members.count == s.group })
                XCTAssertEqual(s.shared, Array(4..<(4 + batch)), "every trial once, in order, on every rank")
            }
        }
    }

    // MARK: MemoryPlan

    private func memoryPlan(_ config: LlamaConfig, ranks: Int, method: PruneMethod = .krp, broadcast: Bool = false) -> MemoryPlan {
        MemoryPlan(MemoryPlan.Request(config: config, ranks: ranks, samples: 128, seqlen: 512, method: method, trueSequential: method == .krp,
                                      checkpointBytes: 140 << 30, storageBytesPerElement: 2, weightsBroadcast: broadcast))
    }

    func testMemoryPlanSharesSequencesAndShrinksWithMoreRanks() throws {
        let config = try llama70B()
        var previous = Int.max
        for ranks in [1, 2, 4, 8, 16] {
            let plan = memoryPlan(config, ranks: ranks)
            XCTAssertEqual(plan.ranks.count, ranks)
            XCTAssertEqual(plan.ranks.map(\.sequences).reduce(0, +), 128)
            XCTAssertLessThanOrEqual(plan.ranks.map(\.sequences).max()! - plan.ranks.map(\.sequences).min()!, 1)
            let worst = plan.ranks.map(\.neededBytes).max()!
            XCTAssertLessThan(worst, previous, "\(ranks) ranks need less each than fewer ranks")
            previous = worst
            XCTAssertEqual(plan.fits(memoryPerRank: worst), true)
            XCTAssertEqual(plan.fits(memoryPerRank: worst - 1), false)
        }
        // The case the design must make feasible: 70B over eight ranks of 64 GiB.
        XCTAssertTrue(memoryPlan(config, ranks: 8).fits(memoryPerRank: 64 << 30))
    }

    func testMemoryPlanFollowsTheMethodAndWhereWeightsComeFrom() throws {
        let config = try llama70B()
        let magnitude = memoryPlan(config, ranks: 2, method: .magnitude), sparsegpt = memoryPlan(config, ranks: 2, method: .sparsegpt)
        let krp = memoryPlan(config, ranks: 2, method: .krp)
        XCTAssertEqual(magnitude.ranks.map(\.statisticsBytes).max(), 0, "magnitude needs no statistics")
        XCTAssertGreaterThan(sparsegpt.ranks[0].peakBytes, magnitude.ranks[0].peakBytes, "SparseGPT holds Hessians")
        XCTAssertGreaterThan(krp.ranks[0].peakBytes, sparsegpt.ranks[0].peakBytes, "KRP adds the cross term and the dense stream")
        let broadcast = memoryPlan(config, ranks: 4, broadcast: true), shared = memoryPlan(config, ranks: 4)
        XCTAssertEqual(broadcast.ranks.map { $0.mappedBlockBytes > 0 }, [true, false, false, false], "only rank 0 reads")
        XCTAssertTrue(shared.ranks.allSatisfy { $0.mappedBlockBytes > 0 })
        XCTAssertGreaterThan(broadcast.ranks[0].sentBytesPerBlock, shared.ranks[0].sentBytesPerBlock)
    }

    // MARK: RunEstimate

    /// The smallest rank count that fits is one where every rank fits and one fewer does not; 70B KRP 128 × 2048 on
    /// 64 GiB ranks needs more than 2 (README: 8 fit).
    func testSmallestRankCountThatFits() throws {
        let config = try llama70B()
        var request = memoryPlan(config, ranks: 2).request
        request.seqlen = 2048
        let limit = 64 << 30
        let smallest = try XCTUnwrap(RunEstimate.smallestRanks(request, memoryPerRank: limit))
        func fits(_ ranks: Int) -> Bool { var r = request; r.ranks = ranks; return MemoryPlan(r).fits(memoryPerRank: limit) }
        XCTAssertTrue(fits(smallest))
        XCTAssertFalse(fits(smallest - 1))
        XCTAssertGreaterThan(smallest, 2)
        XCTAssertLessThanOrEqual(smallest, 8)
        XCTAssertNil(RunEstimate.smallestRanks(request, memoryPerRank: 4 << 30), "two Float32 copies of a 3.2 GiB block never fit in 4 GiB")
        XCTAssertEqual(RunEstimate(plan: MemoryPlan(request)).dominantTerm.name, "activations", "128 × 2048 tokens over 2 ranks")
    }

    /// Disk, bytes over the run and time follow the shapes: the journal is every block linear in Float32, the run
    /// sends every block's bytes, the time halves with twice the rate or twice the ranks (the same work), and
    /// methods without a solve have no Double work.
    func testDiskBytesAndTimeFollowTheShapes() throws {
        let config = try llama70B()
        let plan = memoryPlan(config, ranks: 4)
        let estimate = RunEstimate(plan: plan)
        let linears = LlamaLinear.allCases.reduce(0) { $0 + $1.shape(config: config, layer: 0).reduce(1, *) }
        XCTAssertEqual(estimate.journalBytes, 80 * linears * 4)
        XCTAssertEqual(estimate.outputBytes(outputBytesPerElement: 2), MemoryPlan.parameterCount(config) * 2)
        XCTAssertEqual(estimate.sentBytesPerRank, plan.ranks.map { $0.sentBytesPerBlock * 80 })
        let base = estimate.seconds(floatGFLOPS: 100, doubleGFLOPS: 50)
        XCTAssertEqual(estimate.seconds(floatGFLOPS: 200, doubleGFLOPS: 100), base / 2, accuracy: 1e-9 * base)
        let eight = RunEstimate(plan: memoryPlan(config, ranks: 8))
        XCTAssertEqual(eight.flops.float, estimate.flops.float)
        XCTAssertEqual(eight.seconds(floatGFLOPS: 100, doubleGFLOPS: 50), base / 2, accuracy: 1e-9 * base)
        XCTAssertEqual(RunEstimate(plan: memoryPlan(config, ranks: 4, method: .wanda)).flops.double, 0)
        XCTAssertGreaterThan(estimate.flops.double, RunEstimate(plan: memoryPlan(config, ranks: 4, method: .sparsegpt)).flops.double, "KRP's refit")
    }
}
