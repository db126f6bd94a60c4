import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist prune` end to end: against the reference pipelines' goldens (tiny-llama-pruned.safetensors: masks and NLL of
/// sparsegpt.py's and Wanda's pipelines),
/// and under `mpirun -n 2` and `-n 4` against the single-process result.
final class PruneTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("prune")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    private func model() throws -> String { try Fixtures.path("fixtures/tiny-llama").path }

    /// The reference runs' calibration: 4 windows of 32 tokens, as explicit windows (a JSON array of arrays).
    private func goldenCalibration() throws -> URL {
        let golden = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-pruned.safetensors"))
        let ids = try golden.int64s("calib_ids").map(Int.init)
        let windows = (0..<4).map { Array(ids[($0 * 32)..<(($0 + 1) * 32)]) }
        let url = scratch.appendingPathComponent("calib_ids.json")
        try JSONSerialization.data(withJSONObject: windows).write(to: url)
        return url
    }

    /// More calibration tokens (1024) than any linear has inputs (172), so every statistic is well conditioned.
    private func randomCalibration() throws -> URL {
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib_random.json"), count: 16, seqlen: 64, seed: 5)
    }

    @discardableResult
    private func prune(ranks: Int? = nil, _ arguments: [String], out: String) throws -> URL {
        let url = scratch.appendingPathComponent(out)
        let full = ["prune", "--model", try model(), "--out", url.path, "--log-level", "warning"] + arguments
        let result = try ranks.map { try PruneDistBinary.mpirun(ranks: $0, full) } ?? PruneDistBinary.run(full)
        XCTAssertEqual(result.status, 0, "prune \(arguments) on \(ranks ?? 1) rank(s): \(result.stderr)")
        return url
    }

    private func linearWeights(_ directory: URL) throws -> [String: [Float]] {
        let checkpoint = try Checkpoint(directory: directory)
        var result: [String: [Float]] = [:]
        for name in checkpoint.tensorNames where LlamaLinear.parse(weightName: name) != nil {
            result[name] = try checkpoint.floats(name)
        }
        return result
    }

    /// np.packbits(mask.flatten()): MSB first, bit = 1 where the weight is zero.
    private func goldenMask(_ golden: SafetensorsFile, run: String, name: String, count: Int) throws -> [Bool] {
        let bytes = try golden.bytes("\(run).\(name).maskbits")
        return (0..<count).map { bytes[$0 / 8] & (0x80 >> UInt8($0 % 8)) != 0 }
    }

    private func meanNLLOnReferenceInputs(_ directory: URL) throws -> Double {
        let reference = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
        let ids = try reference.int64s("input_ids").map(Int.init)
        let windows = try Perplexity.windows(tokens: ids, seqlen: 16)
        let perWindow = try Perplexity.windowMeanNLL(checkpoint: Checkpoint(directory: directory), windows: windows, seqlen: 16)
        return perWindow.reduce(0, +) / Double(perWindow.count)
    }

    func testWandaAndSparseGPTReproduceTheReferencePipelines() throws {
        let calibration = try goldenCalibration()
        let golden = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-pruned.safetensors"))
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.path("fixtures/tiny-llama-pruned.summary.json"))) as? [String: [String: Any]])
        let runs: [(run: String, arguments: [String])] = [
            ("wanda_unstructured50", ["--method", "wanda", "--sparsity", "0.5"]),
            ("wanda_2of4", ["--method", "wanda", "--pattern", "2:4"]),
            // The reference's order: every linear's statistics from the dense block (SparseGPT's default is true-sequential).
            ("sparsegpt_unstructured50", ["--method", "sparsegpt", "--sparsity", "0.5", "--no-true-sequential"]),
            ("sparsegpt_2of4", ["--method", "sparsegpt", "--pattern", "2:4", "--no-true-sequential"]),
        ]
        for (run, arguments) in runs {
            let out = try prune(arguments + ["--calib", calibration.path, "--samples", "4", "--seqlen", "32"], out: run)
            let weights = try linearWeights(out)
            XCTAssertEqual(weights.count, 21)
            var zeros = 0
            for (name, values) in weights {
                let mask = try goldenMask(golden, run: run, name: name, count: values.count)
                let mismatches = zip(values, mask).filter { ($0.0 == 0) != $0.1 }.count
                XCTAssertEqual(mismatches, 0, "\(run) \(name): mask differs from the reference in \(mismatches) places")
                zeros += values.filter { $0 == 0 }.count
                if golden.names.contains("\(run).\(name)") {
                    let expected = try golden.floats("\(run).\(name)")
                    let worst = zip(values, expected).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertLessThan(worst, 1e-5, "\(run) \(name): OBS-updated weights")
                }
            }
            XCTAssertEqual(zeros, summary[run]?["zeros"] as? Int, run)
            let expectedNLL = try XCTUnwrap(summary[run]?["mean_nll_on_reference_inputs"] as? Double)
            XCTAssertEqual(try meanNLLOnReferenceInputs(out), expectedNLL, accuracy: 1e-4, run)

            // The report accounts for every linear.
            let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any])
            XCTAssertEqual((report["linears"] as? [Any])?.count, 21)
        }
    }

    /// Distribution is invisible in the result through Open MPI too: 2 and 4 ranks (oversubscribed) give the
    /// single-process model. A smoke test over two methods; every method and option is checked over in-memory
    /// ranks (CoordinatorTests' InProcessRunTests).
    func testMPIRanksReproduceSingleProcess() throws {
        let calibration = try randomCalibration()
        let common = ["--calib", calibration.path, "--samples", "16", "--seqlen", "64"]
        for arguments in [["--method", "wanda", "--pattern", "2:4"], ["--method", "krp", "--sparsity", "0.5"]] {
            let name = arguments[1] + "-" + arguments[3].replacingOccurrences(of: ":", with: "of") + (arguments.count > 4 ? "-" + arguments[5] : "")
            let single = try linearWeights(try prune(arguments + common, out: name + "-1"))
            for ranks in [2, 4] {
                let distributed = try linearWeights(try prune(ranks: ranks, arguments + common, out: "\(name)-\(ranks)"))
                XCTAssertEqual(distributed.keys.sorted(), single.keys.sorted())
                for (tensor, values) in single {
                    let other = try XCTUnwrap(distributed[tensor])
                    let maskDifferences = zip(values, other).filter { ($0.0 == 0) != ($0.1 == 0) }.count
                    let worst = zip(values, other).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertEqual(maskDifferences, 0, "\(name) on \(ranks) ranks: \(tensor) mask")
                    XCTAssertLessThan(worst, 1e-5, "\(name) on \(ranks) ranks: \(tensor) weights")
                }
            }
        }
    }

    /// `--threads 2`: two threads per rank take whole sequences and add their statistics in sequence order, so on
    /// tiny-llama the checkpoint is the bytes of one thread, run after run, for SparseGPT and KRP (whose two streams
    /// both go through the threads), also on two ranks (and 1 rank with 2 threads is a valid run, whatever
    /// OPENBLAS_NUM_THREADS says). The solve is on the threads as well (a linear each, or bands of one linear's rows,
    /// OpenBLAS on one thread inside), so it does not round differently either.
    func testTwoThreadsGiveTheBytesOfOneThread() throws {
        let calibration = try randomCalibration().path
        for method in ["sparsegpt", "krp"] {
            let common = ["--method", method, "--sparsity", "0.5", "--calib", calibration, "--samples", "16", "--seqlen", "64"]
            let one = try Data(contentsOf: try prune(common + ["--threads", "1"], out: "\(method)-threads-1").appendingPathComponent("model.safetensors"))
            for (run, ranks) in [("a", 1), ("b", 1), ("c", 2)] {
                let out = try prune(ranks: ranks, common + ["--threads", "2"], out: "\(method)-threads-2\(run)")
                XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("model.safetensors")), one, "\(method), 2 threads on \(ranks) rank(s), run \(run)")
            }
        }
        let bad = try PruneDistBinary.run(["prune", "--model", try model(), "--out", scratch.appendingPathComponent("threads-0").path,
                                           "--method", "magnitude", "--sparsity", "0.5", "--threads", "0"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--threads"), bad.stderr)
    }

    /// OWL: the report lists each block's target, their mean is the asked sparsity, they differ, and every
    /// block's linears are pruned to their block's target; a fixed N:M pattern is refused before any work.
    func testOWLAllocationPrunesEachBlockToItsTarget() throws {
        let calibration = try randomCalibration()
        let out = try prune(["--method", "wanda", "--sparsity", "0.6", "--allocation", "owl", "--owl-lambda", "0.1",
                             "--calib", calibration.path, "--samples", "16", "--seqlen", "64"], out: "owl")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any])
        XCTAssertEqual(report["allocation"] as? String, "owl")
        let targets = try XCTUnwrap(report["block_sparsity_targets"] as? [Double])
        XCTAssertEqual(targets.count, 3)
        XCTAssertEqual(targets.reduce(0, +) / 3, 0.6, accuracy: 1e-5)
        XCTAssertEqual(targets.max()! - targets.min()!, 0.2, accuracy: 1e-5, "the blocks span the target ± λ")
        let weights = try linearWeights(out)
        var achieved: [Double] = []
        for (layer, target) in targets.enumerated() {
            let block = weights.filter { $0.key.contains("layers.\(layer).") }.values
            let zeros = block.reduce(0) { $0 + $1.filter { $0 == 0 }.count }, total = block.reduce(0) { $0 + $1.count }
            achieved.append(Double(zeros) / Double(total))
            // Wanda prunes ⌊columns · target⌋ of each row: at most one weight per row (1/64 here) short.
            XCTAssertEqual(achieved[layer], target, accuracy: 1.0 / 64, "block \(layer)")
        }
        XCTAssertEqual(achieved.indices.sorted { achieved[$0] < achieved[$1] }, targets.indices.sorted { targets[$0] < targets[$1] })
        let refused = try PruneDistBinary.run(["prune", "--model", try model(), "--out", scratch.appendingPathComponent("owl-24").path,
                                               "--method", "wanda", "--pattern", "2:4", "--allocation", "owl", "--calib", calibration.path])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("--allocation owl"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent("owl-24").path))
    }

    /// KRP's objective: the pruned model's block outputs stay closer to the dense model's than SparseGPT's do.
    func testKRPTracksDenseOutputsBetterThanSparseGPT() throws {
        let calibration = try randomCalibration()
        let common = ["--calib", calibration.path, "--samples", "16", "--seqlen", "64", "--sparsity", "0.5"]
        let krp = try prune(["--method", "krp"] + common, out: "krp")
        let sparsegpt = try prune(["--method", "sparsegpt"] + common, out: "sparsegpt")
        let windows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: calibration)) as? [[Int]])
        let ids = windows.flatMap { $0 }
        func lastHidden(_ directory: URL) throws -> [Float] {
            let checkpoint = try Checkpoint(directory: directory)
            return try llamaForward(checkpoint: checkpoint, embedding: LlamaEmbedding(checkpoint: checkpoint), ids: ids, seqlen: 64).lastHidden
        }
        let dense = try lastHidden(URL(fileURLWithPath: try model()))
        func distance(_ x: [Float]) -> Double { zip(x, dense).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } }
        let krpDistance = distance(try lastHidden(krp)), sparsegptDistance = distance(try lastHidden(sparsegpt))
        XCTAssertLessThan(krpDistance, sparsegptDistance, "KRP \(krpDistance) vs SparseGPT \(sparsegptDistance)")
    }

    func testBadRequestsFailClearlyAndLeaveNoOutput() throws {
        let model = try model()
        let calibration = try goldenCalibration()
        func expectFailure(_ arguments: [String], _ message: String, out: String = "bad", modelDirectory: String? = nil) throws {
            let url = scratch.appendingPathComponent(out)
            let result = try PruneDistBinary.run(["prune", "--model", modelDirectory ?? model, "--out", url.path] + arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): expected “\(message)” in: \(result.stderr)")
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? []
            XCTAssertFalse(leftovers.contains { $0 == out || $0.hasPrefix(".\(out)") }, "left behind: \(leftovers)")
        }
        try expectFailure(["--method", "wanda", "--sparsity", "1.0", "--calib", calibration.path], "sparsity")
        try expectFailure(["--method", "wanda", "--pattern", "4:2", "--calib", calibration.path], "N:M")
        try expectFailure(["--method", "wanda", "--pattern", "3:5", "--calib", calibration.path, "--samples", "4", "--seqlen", "32"], "model.layers.0.self_attn.q_proj.weight")
        try expectFailure(["--method", "magnitude", "--pattern", "4:8"], "model.layers.0.mlp.down_proj.weight has 172 inputs, not a multiple of 8")
        try expectFailure(["--method", "sparsegpt", "--sparsity", "0.5"], "--calib")
        try expectFailure(["--method", "sparsegpt", "--sparsity", "0.5", "--calib", calibration.path, "--samples", "9", "--seqlen", "32"], "holds 4 windows")
        try expectFailure(["--method", "sparsegpt", "--sparsity", "0.5", "--calib", calibration.path, "--samples", "4", "--seqlen", "16"], "--seqlen is 16")

        try expectFailure(["--method", "sparsegpt", "--sparsity", "0.5", "--calib", calibration.path, "--samples", "4", "--seqlen", "512"],
                          "--seqlen 512 is beyond the model's context")

        // A copy of the model with one tensor altered.
        let source = try Checkpoint(directory: URL(fileURLWithPath: model))
        func altered(_ folder: String, tensor: String, _ change: (inout [Float]) -> Void) throws -> String {
            let directory = scratch.appendingPathComponent(folder)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let entries = try source.tensorNames.map { SafetensorsWriter.Entry(name: $0, dtype: .f32, shape: try source.info($0).shape) }
            let writer = try SafetensorsWriter(url: directory.appendingPathComponent("model.safetensors"), tensors: entries)
            for name in source.tensorNames {
                var values = try source.floats(name)
                if name == tensor { change(&values) }
                try writer.append(name, floats: values)
            }
            try writer.finish()
            try FileManager.default.copyItem(at: source.directory.appendingPathComponent("config.json"), to: directory.appendingPathComponent("config.json"))
            return directory.path
        }

        // A NaN in one weight: named by file and tensor, and nothing written.
        let target = LlamaLinear.up.weightName(layer: 1)
        let poisoned = try altered("poisoned-model", tensor: target) { $0[77] = .nan }
        try expectFailure(["--method", "magnitude", "--sparsity", "0.5"], target, out: "from-poisoned", modelDirectory: poisoned)

        // Finite weights whose activations overflow float32: the statistic of down_proj's input is not finite. Every
        // rank of an mpirun job stops, the owner's message names the linear, and nothing is written.
        let huge = try altered("overflowing-model", tensor: target) { values in for i in values.indices { values[i] *= 1e30 } }
        let overflowOut = scratch.appendingPathComponent("from-overflowing")
        let overflow = try PruneDistBinary.mpirun(ranks: 2, ["prune", "--model", huge, "--out", overflowOut.path, "--method", "sparsegpt",
                                                             "--sparsity", "0.5", "--calib", calibration.path, "--samples", "4", "--seqlen", "32"])
        XCTAssertNotEqual(overflow.status, 0)
        XCTAssertTrue(overflow.stderr.contains("of the input of model.layers.1.mlp.down_proj.weight holds NaN or Inf"), overflow.stderr)
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: scratch.path)) ?? []
        XCTAssertFalse(leftovers.contains { $0.contains("from-overflowing") }, "left behind: \(leftovers)")

        // An output folder that already holds something is never overwritten.
        let occupied = scratch.appendingPathComponent("occupied")
        try FileManager.default.createDirectory(at: occupied, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: occupied.appendingPathComponent("keep.txt"))
        let result = try PruneDistBinary.run(["prune", "--model", model, "--out", occupied.path, "--method", "magnitude", "--sparsity", "0.5"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertEqual(try String(contentsOf: occupied.appendingPathComponent("keep.txt"), encoding: .utf8), "keep")
    }
}
