import Foundation

/// This rank's share of a linear that several ranks solve together: a band of consecutive output rows.
///
/// Given the shared input statistics the rows of W are independent, except where a step looks at all of them:
/// SparseGPT's unstructured threshold of each column block, KRP's mean squared change, the reported errors.
/// Those steps gather per-row values from every member in row order and add them in that order, and every
/// product is a GEMM or TRSM whose M is the band's rows (OpenBLAS's bits per element do not depend on M at layer
/// sizes; they do depend on N, so no product puts the rows in N). So the pruned weight does not change in a single
/// bit with the number of members, alone included; the reported errors agree to rounding (RowBandTests).
public struct RowBand {
    /// This member's rows of the whole [totalRows, columns] weight.
    public let rows: Range<Int>
    public let totalRows: Int
    /// Every member's values concatenated in member order (the members' bands are consecutive in that order).
    private let gatherMembers: ([Double]) throws -> [Double]

    public init(rows: Range<Int>, totalRows: Int, gather: @escaping ([Double]) throws -> [Double]) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= totalRows, "RowBand: rows \(rows) outside 0..<\(totalRows)")
        self.rows = rows
        self.totalRows = totalRows
        gatherMembers = gather
    }

    /// Member `member`'s band when `members` solve a linear of `totalRows` rows together (the bands of `split`).
    public init(member: Int, of members: Int, totalRows: Int, gather: @escaping ([Double]) throws -> [Double]) {
        self.init(rows: RowBand.split(rows: totalRows, members: members)[member], totalRows: totalRows, gather: gather)
    }

    /// This band's rows of a row-major [totalRows, columns] array (a weight, or a statistic with a row per output).
    public func slice<Element>(_ whole: [Element], columns: Int) -> [Element] {
        precondition(whole.count == totalRows * columns, "RowBand.slice: \(whole.count) values for \(totalRows) rows × \(columns)")
        return Array(whole[(rows.lowerBound * columns)..<(rows.upperBound * columns)])
    }

    /// All the rows, solved alone.
    public static func alone(rows: Int) -> RowBand { RowBand(rows: 0..<rows, totalRows: rows) { $0 } }

    /// The bands of `members` members in member order, as even as possible (the first ones one row more).
    public static func split(rows: Int, members: Int) -> [Range<Int>] {
        precondition(members > 0, "RowBand.split: no members")
        var start = 0
        return (0..<members).map { member in
            let count = rows / members + (member < rows % members ? 1 : 0)
            defer { start += count }
            return start..<(start + count)
        }
    }

    /// Per-row values of every band, in row order.
    /// values: [rows.count, width] of this band → [totalRows, width]
    func gather(_ values: [Double], width: Int) throws -> [Double] {
        precondition(values.count == rows.count * width, "RowBand.gather: \(values.count) values for \(rows.count) rows × \(width)")
        let all = try gatherMembers(values)
        guard all.count == totalRows * width else {
            throw PruneDistError(.communication, "row band gather: \(all.count) values arrived for \(totalRows) rows × \(width)")
        }
        return all
    }

    /// Sums over every member's rows of per-row values, added in row order.
    /// perRow: [rows.count, width] → [width]
    func sumOverRows(_ perRow: [Double], width: Int = 1) throws -> [Double] {
        let all = try gather(perRow, width: width)
        var sums = [Double](repeating: 0, count: width)
        for row in 0..<totalRows {
            for j in 0..<width { sums[j] += all[row * width + j] }
        }
        return sums
    }
}

/// Where the threads of one process that solve a linear together meet to gather their bands' values (the in-process
/// counterpart of the group communicator ranks use). Every member takes part in every round, in the same order.
public final class RowBandExchange: @unchecked Sendable {
    private let condition = NSCondition()
    private let members: Int
    private var round = 0
    private var deposits: [[Double]?]
    private var collected = 0
    private var finished: [Int: (values: [Double], readers: Int)] = [:]
    private var memberRounds: [Int]
    private var abandoned = false

    public init(members: Int) {
        self.members = members
        deposits = Array(repeating: nil, count: members)
        memberRounds = Array(repeating: 0, count: members)
    }

    /// Every member's values of this round concatenated in member order, once all have given theirs.
    public func gather(_ values: [Double], member: Int) throws -> [Double] {
        condition.lock()
        defer { condition.unlock() }
        let myRound = memberRounds[member]
        memberRounds[member] += 1
        while round != myRound && !abandoned { condition.wait() }
        if !abandoned {
            deposits[member] = values
            collected += 1
            if collected == members {
                finished[myRound] = (deposits.flatMap { $0! }, members)
                deposits = Array(repeating: nil, count: members)
                collected = 0
                round += 1
                condition.broadcast()
            }
        }
        while finished[myRound] == nil && !abandoned { condition.wait() }
        guard let result = finished[myRound] else {
            throw PruneDistError(.interrupted, "another thread solving the same linear failed")
        }
        finished[myRound] = result.readers == 1 ? nil : (result.values, result.readers - 1)
        return result.values
    }

    /// A member failed: the others stop waiting for it and fail too.
    public func abandon() {
        condition.lock()
        abandoned = true
        condition.broadcast()
        condition.unlock()
    }
}
