import Engine
import Foundation
import Worker

/// The rank groups AdaPruner trials run on side by side: G = min(K, ranks) groups of consecutive world ranks
/// (rank r is in group ⌊r·G/ranks⌋), each with its own communicator from `split`. In a round of K trials, group
/// g evaluates trials g, g+G, g+2G, … of the round; the results then go to every rank in trial order, so what
/// the search does next depends on the trials' results only, never on how many ranks computed them.
struct AdaPrunerTrialGroups {
    /// K: trials proposed and evaluated per round
    let batch: Int
    /// World ranks of each group, in group order
    let members: [[Int]]
    /// This rank's group, and the group's communicator (the world itself when there is one group)
    let group: Int
    let comm: Communicator
    var count: Int { members.count }

    /// A collective over `world`: every rank must call it with the same batch.
    init(batch: Int, world: Communicator) throws {
        precondition(batch >= 1, "AdaPrunerTrialGroups: batch must be at least 1")
        let count = min(batch, world.size)
        self.batch = batch
        members = (0..<count).map { g in (0..<world.size).filter { Self.group(ofRank: $0, ranks: world.size, groups: count) == g } }
        group = Self.group(ofRank: world.rank, ranks: world.size, groups: count)
        comm = count == 1 ? world : try world.split(color: group, key: world.rank)
    }

    static func group(ofRank rank: Int, ranks: Int, groups: Int) -> Int { rank * groups / ranks }

    /// The trials of a round (consecutive trial indices) this rank's group evaluates.
    func mine(of round: Range<Int>) -> [Int] {
        round.filter { ($0 - round.lowerBound) % count == group }
    }

    /// Every group's results of a round on every rank, sorted by trial index: each group's rank 0 contributes
    /// its trials, the other ranks nothing, over one allgather of `world`.
    func share(_ trials: [AdaPrunerReport.Trial], world: Communicator) throws -> [AdaPrunerReport.Trial] {
        // A collapsed trial's perplexity may be infinite: the typed allgather carries it (as a string).
        let all = try world.allgather(comm.rank == 0 ? trials : [])
        return all.flatMap { $0 }.sorted { $0.index < $1.index }
    }
}
