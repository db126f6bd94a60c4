import Engine
import Foundation
import TestSupport
import XCTest

/// Structured pruning: LLM-Pruner's counting rule, group scores (GQA alignment over a group's own query heads,
/// the four aggregations, the three terms), physical removal against zeroing, and the TPE search.
final class StructuredPruningTests: XCTestCase {
    func testKeptCountsFollowLLMPrunerOnSmolLM2Widths() {
        // LLM-Pruner's own code on SmolLM2: ratio 0.27 keeps 1121 of 1536 channels and all 9/3 heads; 0.34 keeps 1013 and 6/9, 2/3.
        XCTAssertEqual(StructuredPruning.keptCount(total: 1536, ratio: 0.27), 1121)
        XCTAssertEqual(StructuredPruning.removedKeyValueHeads(heads: 9, kvHeads: 3, headDim: 64, ratio: 0.27), 0)
        XCTAssertEqual(StructuredPruning.keptCount(total: 1536, ratio: 0.34), 1013)
        XCTAssertEqual(StructuredPruning.removedKeyValueHeads(heads: 9, kvHeads: 3, headDim: 64, ratio: 0.34), 1)
        // LLaMA-7B at 0.25: 8 of 32 heads (MHA: a KV group is one head), 2752 of 11008 channels.
        XCTAssertEqual(StructuredPruning.removedKeyValueHeads(heads: 32, kvHeads: 32, headDim: 128, ratio: 0.25), 8)
        XCTAssertEqual(11008 - StructuredPruning.keptCount(total: 11008, ratio: 0.25), 2752)
        XCTAssertEqual(try StructuredPruning.defaultBlocks(layers: 30), 4...27)
        XCTAssertEqual(try StructuredPruning.defaultBlocks(layers: 32), 4...29)
        XCTAssertThrowsError(try StructuredPruning.defaultBlocks(layers: 3))
    }

    func testStructureTermsOfAKnownMatrix() {
        // w = [[1, -2], [3, 4]], g = [[1, 1], [-1, 0.5]], F = Σ g_n² = [[2, 0], [4, 8]] over N = 2 sequences.
        let w: [Float] = [1, -2, 3, 4], g: [Double] = [1, 1, -1, 0.5], f: [Double] = [2, 0, 4, 8]
        let rows = TaylorImportance.structureTerms(weight: w, gradient: g, fisherSum: f, sequences: 2, rows: 2, columns: 2, alongColumns: false)
        // w·g = [[1, -2], [-3, 2]]; ½w²F/N = ½·[[1·1, 0], [9·2, 16·4]] = [[0.5, 0], [9, 32]]
        XCTAssertEqual(rows[.vector]!, [1, 1])              // |1 − 2|, |−3 + 2|
        XCTAssertEqual(rows[.el1]!, [3, 5])
        XCTAssertEqual(rows[.el2]!, [0.5 + 2, 12 + 30])     // |1 − 0.5| + |−2 − 0|, |−3 − 9| + |2 − 32|
        let columns = TaylorImportance.structureTerms(weight: w, gradient: g, fisherSum: nil, sequences: 2, rows: 2, columns: 2, alongColumns: true)
        XCTAssertEqual(columns[.vector]!, [2, 0])
        XCTAssertEqual(columns[.el1]!, [4, 4])
        XCTAssertNil(columns[.el2])
    }

    /// 6 query heads over 2 KV heads of width 1: group j is scored from query heads 3j..3j+2 (upstream adds heads
    /// {j, j+2, j+4}); MLP channels aggregate gate, up, down.
    func testGroupScoresAlignOwnQueryHeadsAndAggregate() {
        func terms(_ values: [Double]) -> [TaylorTerm: [Double]] { [.el1: values, .vector: values.map { _ in 0 }] }
        let blockTerms = TaylorImportance.BlockTerms(
            layer: 0, headDim: 1, heads: 6, kvHeads: 2, intermediate: 2,
            terms: PerLinear(q: terms([1, 1, 1, 10, 10, 10]), k: terms([2, 3]), v: terms([4, 5]), o: terms([1, 2, 3, 4, 5, 6]),
                             gate: terms([1, 2]), up: terms([3, 4]), down: terms([5, 0.5])))
        func scores(_ aggregation: GroupAggregation) -> StructuredGroupScores {
            TaylorImportance.groupScores(terms: blockTerms, mix: .single(.el1), aggregation: aggregation)
        }
        let sumHeads: [Double] = [15, 53]     // q 1+1+1, k 2, v 4, o 1+2+3 | q 30, k 3, v 5, o 4+5+6
        let prodHeads: [Double] = [144, 6750]  // 3·2·4·6 | 30·3·5·15
        XCTAssertEqual(scores(.sum).keyValueHeads, sumHeads)
        XCTAssertEqual(scores(.sum).channels, [9, 6.5])
        XCTAssertEqual(scores(.max).keyValueHeads, [6, 30])
        XCTAssertEqual(scores(.prod).keyValueHeads, prodHeads)
        XCTAssertEqual(scores(.last).keyValueHeads, [6, 15])
        XCTAssertEqual(scores(.last).channels, [5, 0.5])
        let keep = TaylorImportance.keep(scores: scores(.last), heads: 6, headDim: 1, ratio: 0.5)
        XCTAssertEqual(keep.keyValueHeads, [1])  // 3 of 6 query channels pruned: one whole group of 3
        XCTAssertEqual(keep.channels, [0])
        // A mix adds the terms with their coefficients.
        let mixed = TaylorImportance.groupScores(terms: blockTerms, mix: ImportanceMix([.el1: 2, .vector: 5]), aggregation: .sum)
        XCTAssertEqual(mixed.channels, [18, 13])
    }

    /// Removing groups gives a smaller block computing exactly what the full block computes with those rows
    /// and columns zeroed: the whole tiny-llama's logits agree within 1e-5.
    func testRemovedGroupsEqualZeroedGroupsOnTinyLlama() throws {
        let checkpoint = try Checkpoint(directory: try Fixtures.path("fixtures/tiny-llama"))
        let config = checkpoint.config
        let keeps = [
            0: StructuredKeep(layer: 0, keyValueHeads: [1], channels: Array(stride(from: 0, to: 172, by: 3))),
            1: StructuredKeep(layer: 1, keyValueHeads: [0, 1], channels: Array(10..<150)),
            2: StructuredKeep(layer: 2, keyValueHeads: [0], channels: [5, 77, 171]),
        ]
        var random = SplitMix64(seed: 11)
        let seqlen = 24
        let ids = (0..<(2 * seqlen)).map { _ in Int(random.next() % UInt64(config.vocabSize)) }
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let rope = try RopeTable(config: config, positions: seqlen)
        var removed = try embedding.embed(ids), zeroed = removed
        for layer in 0..<config.numHiddenLayers {
            let block = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer)
            let small = StructuredPruning.removing(block, keep: keeps[layer]!)
            XCTAssertEqual(small.shape(.q), [keeps[layer]!.keyValueHeads.count * 2 * 16, 64])
            XCTAssertEqual(small.shape(.k), [keeps[layer]!.keyValueHeads.count * 16, 64])
            XCTAssertEqual(small.shape(.o), [64, keeps[layer]!.keyValueHeads.count * 2 * 16])
            XCTAssertEqual(small.shape(.down), [64, keeps[layer]!.channels.count])
            llamaBlockForward(&removed, weights: small, rope: rope, seqlen: seqlen)
            llamaBlockForward(&zeroed, weights: StructuredPruning.zeroing(block, keep: keeps[layer]!), rope: rope, seqlen: seqlen)
        }
        let a = head.logits(head.normed(removed)), b = head.logits(head.normed(zeroed))
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 1e-5, "logits of removed vs zeroed groups")
        // And pruning changed something: the dense model's logits differ.
        var dense = try embedding.embed(ids)
        for layer in 0..<config.numHiddenLayers {
            llamaBlockForward(&dense, weights: try LlamaBlockWeights(checkpoint: checkpoint, layer: layer), rope: rope, seqlen: seqlen)
        }
        XCTAssertGreaterThan(zip(head.logits(head.normed(dense)), a).map { abs($0 - $1) }.max()!, 1e-2)
        // The in-memory NLL of the pruned model is the same model.
        let nll = try structuredPrunedNLL(checkpoint: checkpoint, keeps: keeps, windows: [Array(ids[0..<seqlen]), Array(ids[seqlen...])], seqlen: seqlen)
        let direct = head.nextTokenNLL(hidden: removed, ids: ids, seqlen: seqlen).reduce(0, +)
        XCTAssertEqual(nll.predictions, 2 * (seqlen - 1))
        XCTAssertEqual(nll.nllSum, direct, accuracy: 1e-9 * abs(direct))
    }

    func testTreeParzenEstimatorIsReproducibleAndConverges() {
        func run(seed: UInt64) -> (points: [[Double]], best: Double) {
            var tpe = TreeParzenEstimator(dimensions: [.uniform(lower: 0, upper: 1), .choice(count: 4)], seed: seed,
                                          startupTrials: 8)
            var points: [[Double]] = [], best = Double.infinity
            for _ in 0..<40 {
                let p = tpe.suggest()
                let loss = (p[0] - 0.3) * (p[0] - 0.3) + (Int(p[1]) == 2 ? 0 : 1)
                tpe.observe(p, loss: loss)
                points.append(p)
                best = min(best, loss)
            }
            return (points, best)
        }
        let a = run(seed: 3), b = run(seed: 3), c = run(seed: 4)
        XCTAssertEqual(a.points, b.points, "same seed, same trials")
        XCTAssertNotEqual(a.points, c.points)
        XCTAssertLessThan(a.best, 2e-3)
        // After start-up, proposals concentrate on the good choice.
        let late = a.points.suffix(20).filter { Int($0[1]) == 2 }.count
        XCTAssertGreaterThan(late, 12, "TPE proposals after start-up pick the good option \(late) of 20 times")
    }
}
