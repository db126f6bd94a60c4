import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist plan`: its prediction against the peak resident size a real run reports, refusal with the
/// numbers when a run cannot fit, and the 70B case the design must make feasible.
final class PlanTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("plan") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// Predicted resident size (page cache kept, as VmHWM counts it) within 15 % of the measured peak on
    /// every rank, for KRP at 1 and 2 ranks.
    func testPredictionMatchesMeasuredPeakOnTinyLlama() throws {
        let model = try Fixtures.path("fixtures/tiny-llama").path
        let calibration = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 16, seqlen: 64, seed: 9)
        for ranks in [1, 2] {
            let out = scratch.appendingPathComponent("out-\(ranks)")
            let arguments = ["prune", "--model", model, "--out", out.path, "--method", "krp", "--sparsity", "0.5",
                             "--calib", calibration.path, "--samples", "16", "--seqlen", "64", "--log-level", "warning"]
            let run = try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(run.status, 0, run.stderr)
            let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prune-report.json"))) as? [String: Any])
            let usage = try XCTUnwrap(report["rank_usage"] as? [[String: Any]])
            let plan = try PruneDistBinary.run(["plan", "--model", model, "--ranks", String(ranks), "--mem-per-rank", "1G",
                                                "--samples", "16", "--seqlen", "64", "--method", "krp", "--json"]).lastJSON()
            let predicted = try XCTUnwrap(plan["per_rank"] as? [[String: Any]])
            XCTAssertEqual(predicted.count, ranks)
            for entry in usage {
                let rank = try XCTUnwrap(entry["rank"] as? Int)
                let measured = Double(try XCTUnwrap(entry["peak_rss_bytes"] as? Int))
                let prediction = Double(try XCTUnwrap(predicted[rank]["resident_with_page_cache_bytes"] as? Int))
                XCTAssertLessThan(abs(prediction - measured) / measured, 0.15,
                                  "rank \(rank) of \(ranks): predicted \(prediction), measured \(measured)")
            }
        }
    }

    /// A limit below the need: non-zero exit, the table still printed, and the error naming rank and bytes.
    func testRefusesWhenItCannotFit() throws {
        let model = try Fixtures.path("fixtures/tiny-llama").path
        let result = try PruneDistBinary.run(["plan", "--model", model, "--ranks", "2", "--mem-per-rank", "20M",
                                              "--samples", "16", "--seqlen", "64"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stdout.contains("does not fit: rank"), result.stdout)
        XCTAssertTrue(result.stderr.contains("does not fit: rank 0 needs"), result.stderr)
        XCTAssertTrue(result.stderr.contains("but --mem-per-rank is 20.0 MiB (20971520 bytes)"), result.stderr)
    }

    /// LLaMA-2-70B, 128 × 2048 calibration, KRP: fits on 8 ranks of 64 GB; 405B does not, and says so.
    func testLlama70BFitsOnEightRanksOf64G() throws {
        let config = Fixtures.packageRoot.appendingPathComponent("cluster/llama-2-70b.json").path
        let result = try PruneDistBinary.run(["plan", "--config", config, "--ranks", "8", "--mem-per-rank", "64G",
                                              "--samples", "128", "--seqlen", "2048", "--method", "krp"])
        XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
        XCTAssertTrue(result.stdout.contains("fits: the largest rank needs"), result.stdout)
        let fewer = try PruneDistBinary.run(["plan", "--config", config, "--ranks", "2", "--mem-per-rank", "64G",
                                             "--samples", "128", "--seqlen", "2048", "--method", "krp"])
        XCTAssertNotEqual(fewer.status, 0, fewer.stdout)
        let big = Fixtures.packageRoot.appendingPathComponent("cluster/llama-3.1-405b.json").path
        let huge = try PruneDistBinary.run(["plan", "--config", big, "--ranks", "8", "--mem-per-rank", "64G",
                                            "--samples", "128", "--seqlen", "2048", "--json"])
        XCTAssertNotEqual(huge.status, 0)
        XCTAssertEqual(try huge.lastJSON()["fits"] as? Bool, false)
    }

    /// `plan --json` with a given GEMM rate: the time estimate is the flops at that rate over the ranks, disk is
    /// output plus journal; refused plans name the smallest rank count that fits.
    func testPlanEstimatesTimeDiskAndTheRanksThatFit() throws {
        let config = Fixtures.packageRoot.appendingPathComponent("cluster/llama-2-70b.json").path
        let arguments = ["plan", "--config", config, "--mem-per-rank", "64G", "--samples", "128", "--seqlen", "2048", "--method", "krp", "--gemm-gflops", "500"]
        let object = try PruneDistBinary.run(arguments + ["--ranks", "8", "--json"]).lastJSON()
        let flops = try XCTUnwrap(object["flops_float"] as? Double), double = try XCTUnwrap(object["flops_double"] as? Double)
        let seconds = try XCTUnwrap(object["estimated_seconds"] as? Double)
        XCTAssertEqual(seconds, (flops / 500e9 + double / 250e9) / 8, accuracy: 1e-9 * seconds)
        XCTAssertEqual(object["gemm_rate_source"] as? String, "--gemm-gflops")
        XCTAssertEqual(try XCTUnwrap(object["disk_bytes"] as? Int), try XCTUnwrap(object["output_bytes"] as? Int) + (try XCTUnwrap(object["journal_bytes"] as? Int)))
        let smallest = try XCTUnwrap(object["smallest_fitting_ranks"] as? Int)
        XCTAssertTrue((3...8).contains(smallest), "8 fit, 2 do not: \(smallest)")
        let refused = try PruneDistBinary.run(arguments + ["--ranks", "2"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stdout.contains("smallest rank count that fits in 64.0 GiB per rank: --ranks"), refused.stdout)
        XCTAssertTrue(refused.stderr.contains("activations dominate"), refused.stderr)
        XCTAssertTrue(refused.stdout.contains("time: about") && refused.stdout.contains("from --gemm-gflops"), refused.stdout)
    }
}
