import Engine
import Foundation
import TestSupport
import XCTest

/// `prune-dist finetune` through the binary: mpirun -n 2 against one process, resume after an injected rank exit,
/// refused input, and the adapter and merged checkpoint loaded by Hugging Face PEFT and transformers.
final class FinetuneTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("finetune") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func tokens(_ name: String, count: Int, seed: UInt64) throws -> URL {
        try writeLearnableTokens(to: scratch.appendingPathComponent(name), count: count, seed: seed)
    }

    private func arguments(out: URL, extra: [String] = []) throws -> [String] {
        ["finetune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--data", try tokens("train.json", count: 48 * 16, seed: 1).path,
         "--out", out.path, "--lora-rank", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--lr", "5e-3", "--warmup", "2",
         "--steps", "6", "--batch", "2", "--accumulate", "2", "--seqlen", "16", "--seed", "3", "--save-every", "2",
         "--eval-text", try tokens("eval.json", count: 8 * 16, seed: 2).path, "--eval-every", "3"] + extra
    }

    private func report(_ out: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("finetune-report.json"))) as! [String: Any]
    }

    private func lossCurve(_ out: URL) throws -> [Double] {
        let curves = try report(out)["curves"] as! [String: Any]
        return (curves["loss"] as! [[String: Any]]).map { $0["loss"] as! Double }
    }

    func testTwoRanksGiveTheLossCurveOfOneProcess() throws {
        let single = scratch.appendingPathComponent("single"), pair = scratch.appendingPathComponent("pair")
        let one = try PruneDistBinary.run(try arguments(out: single))
        XCTAssertEqual(one.status, 0, one.stderr)
        let two = try PruneDistBinary.mpirun(ranks: 2, try arguments(out: pair))
        XCTAssertEqual(two.status, 0, two.stderr)
        let a = try lossCurve(single), b = try lossCurve(pair)
        XCTAssertEqual(a.count, 6)
        XCTAssertEqual(b.count, 6)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5) }
        XCTAssertTrue(one.stderr.contains("step 6/6 loss") && one.stderr.contains("tokens/s ETA"), one.stderr)
        let json = try two.lastJSON()
        XCTAssertLessThan(json["eval_perplexity_after"] as! Double, json["eval_perplexity_before"] as! Double)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: pair.path)),
                       ["adapter_config.json", "adapter_model.safetensors", "finetune-report.json", "finetune-report.html"])
        let html = try String(contentsOf: pair.appendingPathComponent("finetune-report.html"), encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "class=\"point\"").count - 1, 6 + 3, "6 loss points and 3 eval points (steps 0, 3, 6)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent(".pair.partial").path))
    }

    func testResumeAfterARankExitsGivesTheSameAdapterBytes() throws {
        let reference = scratch.appendingPathComponent("reference"), out = scratch.appendingPathComponent("out")
        XCTAssertEqual(try PruneDistBinary.mpirun(ranks: 2, try arguments(out: reference)).status, 0)
        let failed = try PruneDistBinary.mpirun(ranks: 2, try arguments(out: out),
                                                environment: ["PRUNE_DIST_FAULT_RANK": "1", "PRUNE_DIST_FAULT_BLOCK": "5"])
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        let partial = scratch.appendingPathComponent(".out.partial")
        XCTAssertTrue(FileManager.default.fileExists(atPath: partial.appendingPathComponent("finetune-state.safetensors").path),
                      "steps 1-4 were saved before rank 1 died at step 6")
        let resumed = try PruneDistBinary.mpirun(ranks: 2, try arguments(out: out, extra: ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming after step 4 of 6"), resumed.stderr)
        XCTAssertFalse(resumed.stderr.contains("step 1/6 loss"), "saved steps were trained again")
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("adapter_model.safetensors")),
                       try Data(contentsOf: reference.appendingPathComponent("adapter_model.safetensors")))
        XCTAssertEqual(try lossCurve(out), try lossCurve(reference))
        XCTAssertEqual(try report(out)["resumedAfterStep"] as? Int, 4)
    }

    /// SIGTERM after a save keeps the partial folder and says how to continue; the continued run gives the same bytes.
    func testSIGTERMAfterASaveKeepsTheStateForResume() throws {
        let reference = scratch.appendingPathComponent("reference"), out = scratch.appendingPathComponent("out")
        XCTAssertEqual(try PruneDistBinary.run(try arguments(out: reference)).status, 0)
        let pidFile = scratch.appendingPathComponent("pid")
        let job = try BackgroundProcess(PruneDistBinary.executable, try arguments(out: out),
                                        environment: ["PRUNE_DIST_FAULT_RANK": "0", "PRUNE_DIST_FAULT_BLOCK": "3",
                                                      "PRUNE_DIST_FAULT_PAUSE": "1", "PRUNE_DIST_FAULT_PIDFILE": pidFile.path])
        // One process, paused at the start of step 4 (steps 1-2 saved): the job's own process is the one to stop.
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 60) { FileManager.default.fileExists(atPath: pidFile.path) }, job.stderr)
        XCTAssertEqual(kill(job.process.processIdentifier, SIGTERM), 0)
        XCTAssertEqual(job.wait(seconds: 30), 143)
        XCTAssertTrue(job.stderr.contains("interrupted; the last saved step is kept in") && job.stderr.contains("--resume"), job.stderr)
        let resumed = try PruneDistBinary.run(try arguments(out: out, extra: ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming after step 2 of 6"), resumed.stderr)
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("adapter_model.safetensors")),
                       try Data(contentsOf: reference.appendingPathComponent("adapter_model.safetensors")))
    }

    func testBadDataIsRefusedAndLeavesNothing() throws {
        let bad = scratch.appendingPathComponent("bad.jsonl")
        try "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n".write(to: bad, atomically: true, encoding: .utf8)
        let out = scratch.appendingPathComponent("out")
        var arguments = try arguments(out: out)
        arguments[arguments.firstIndex(of: "--data")! + 1] = bad.path
        let result = try PruneDistBinary.run(arguments)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("bad.jsonl line 2: expected string fields \"instruction\" and \"output\""), result.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.contains("out") }, [])
        // The held-out text may not be a training file.
        let same = try PruneDistBinary.run(try self.arguments(out: out).map { $0.hasSuffix("eval.json") ? try tokens("train.json", count: 0, seed: 0).path : $0 })
        XCTAssertEqual(same.status, 64)
        XCTAssertTrue(same.stderr.contains("--eval-text") && same.stderr.contains("is the same path as --data"), same.stderr)
    }

    func testImpossibleOptionsAreRefusedBeforeAnyWork() throws {
        let out = scratch.appendingPathComponent("out")
        for (extra, message) in [(["--epochs", "2"], "give --steps or --epochs, not both"),
                                 (["--lora-dropout", "1"], "--lora-dropout must be in [0, 1)"),
                                 (["--targets", "q,x"], "--targets: x is not one of q, k, v, o, gate, up, down"),
                                 (["--merge-dtype", "f32"], "--merge-dtype is for --merge"),
                                 (["--lora-rank", "0"], "--lora-rank must be a positive integer"),
                                 (["--batch", "-1"], "--batch must be a positive integer")] {
            let result = try PruneDistBinary.run(try arguments(out: out, extra: extra))
            XCTAssertEqual(result.status, 64, "\(extra)")
            XCTAssertTrue(result.stderr.contains(message), "\(extra): \(result.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.appendingPathComponent(".out.partial").path))
    }

    /// A structurally pruned model with per-layer widths (LLM-Pruner on blocks 1-2): adapters at each layer's widths,
    /// a merged checkpoint with the input's shapes and config, and the merge equal to base + adapter.
    func testStructuredModelWithPerLayerWidths() throws {
        let pruned = scratch.appendingPathComponent("pruned")
        try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 9)
        let prune = try PruneDistBinary.run(["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", pruned.path,
                                             "--log-level", "warning", "--calib", scratch.appendingPathComponent("calib.json").path,
                                             "--samples", "8", "--seqlen", "32", "--method", "llm-pruner", "--ratio", "0.5",
                                             "--block-start", "1", "--block-end", "2"])
        XCTAssertEqual(prune.status, 0, prune.stderr)
        let out = scratch.appendingPathComponent("out")
        var arguments = try arguments(out: out, extra: ["--merge"])
        arguments[arguments.firstIndex(of: "--model")! + 1] = pruned.path
        let run = try PruneDistBinary.mpirun(ranks: 2, arguments)
        XCTAssertEqual(run.status, 0, run.stderr)
        let source = try Checkpoint(directory: pruned), merged = try Checkpoint(directory: out.appendingPathComponent("merged"))
        XCTAssertEqual(merged.tensorNames, source.tensorNames)
        for name in source.tensorNames { XCTAssertEqual(try merged.info(name).shape, try source.info(name).shape, name) }
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("merged/config.json")), try Data(contentsOf: pruned.appendingPathComponent("config.json")))
        let adapter = try SafetensorsFile(url: out.appendingPathComponent("adapter_model.safetensors"))
        for layer in 0..<3 {
            let shape = LlamaLinear.up.shape(config: source.config, layer: layer)
            XCTAssertEqual(try adapter.info("base_model.model.model.layers.\(layer).mlp.up_proj.lora_B.weight").shape, [shape[0], 4])
            XCTAssertEqual(try adapter.info("base_model.model.model.layers.\(layer).mlp.down_proj.lora_A.weight").shape, [4, shape[0]])
        }
        XCTAssertLessThan(LlamaLinear.up.shape(config: source.config, layer: 1)[0], LlamaLinear.up.shape(config: source.config, layer: 0)[0])
        let json = try run.lastJSON()
        XCTAssertEqual(json["merged_perplexity"] as! Double, json["eval_perplexity_after"] as! Double, accuracy: 1e-4 * (json["eval_perplexity_after"] as! Double))
    }

    /// A BF16 model in two shards: the merged checkpoint keeps its layout (shards, index, dtype); with --merge-dtype
    /// f32 the merged weights keep the whole update, so their perplexity is the adapter's.
    func testMergeKeepsABF16ShardedLayoutAndF32KeepsTheUpdate() throws {
        let model = try Fixtures.path("fixtures/tiny-llama-bf16-sharded")
        func finetune(_ name: String, _ extra: [String]) throws -> (URL, [String: Any]) {
            let out = scratch.appendingPathComponent(name)
            var arguments = try arguments(out: out, extra: ["--merge"] + extra)
            arguments[arguments.firstIndex(of: "--model")! + 1] = model.path
            let run = try PruneDistBinary.run(arguments)
            XCTAssertEqual(run.status, 0, run.stderr)
            return (out.appendingPathComponent("merged"), try run.lastJSON())
        }
        let (bf16, _) = try finetune("bf16", [])
        let files = try FileManager.default.contentsOfDirectory(atPath: bf16.path)
        XCTAssertTrue(files.contains("model.safetensors.index.json") && files.contains("model-00002-of-00002.safetensors"), "\(files)")
        let source = try Checkpoint(directory: model), merged = try Checkpoint(directory: bf16)
        XCTAssertEqual(merged.tensorNames, source.tensorNames)
        XCTAssertEqual(try merged.info(LlamaLinear.q.weightName(layer: 0)).dtype, .bf16)
        let (f32, json) = try finetune("f32", ["--merge-dtype", "f32"])
        XCTAssertEqual(try Checkpoint(directory: f32).info(LlamaLinear.q.weightName(layer: 0)).dtype, .f32)
        let after = json["eval_perplexity_after"] as! Double
        XCTAssertEqual(json["merged_perplexity"] as! Double, after, accuracy: 1e-5 * after)
    }

    /// A magnitude-50 % model: a plain adapter loses its update on pruned weights when merged with the mask kept; a
    /// --mask-aware one trains exactly what the merge writes, so the merged perplexity is the trained one.
    func testMaskAwareTrainingMakesTheMaskKeepingMergeExact() throws {
        let sparse = scratch.appendingPathComponent("sparse")
        let prune = try PruneDistBinary.run(["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", sparse.path,
                                             "--method", "magnitude", "--sparsity", "0.5", "--log-level", "warning"])
        XCTAssertEqual(prune.status, 0, prune.stderr)
        func finetune(_ name: String, _ extra: [String], ranks: Int) throws -> [String: Any] {
            var arguments = try arguments(out: scratch.appendingPathComponent(name), extra: ["--merge", "--merge-dtype", "f32"] + extra)
            arguments[arguments.firstIndex(of: "--model")! + 1] = sparse.path
            let run = ranks == 1 ? try PruneDistBinary.run(arguments) : try PruneDistBinary.mpirun(ranks: ranks, arguments)
            XCTAssertEqual(run.status, 0, run.stderr)
            return try run.lastJSON()
        }
        let plain = try finetune("plain", [], ranks: 1)
        XCTAssertGreaterThan(abs((plain["merged_perplexity"] as! Double) - (plain["eval_perplexity_after"] as! Double)), 1e-3,
                             "the plain adapter's update on pruned weights is dropped by the merge")
        let masked = try finetune("masked", ["--mask-aware"], ranks: 2)
        let after = masked["eval_perplexity_after"] as! Double
        XCTAssertEqual(masked["merged_perplexity"] as! Double, after, accuracy: 1e-5 * after)
        let merged = try Checkpoint(directory: scratch.appendingPathComponent("masked/merged")), source = try Checkpoint(directory: sparse)
        for layer in 0..<3 {
            let before = try source.floats(LlamaLinear.gate.weightName(layer: layer)), now = try merged.floats(LlamaLinear.gate.weightName(layer: layer))
            XCTAssertEqual(before.map { $0 == 0 }, now.map { $0 == 0 }, "layer \(layer): the merge keeps exactly the mask")
        }
    }

    /// The adapter loads in PEFT onto the base model and the merged checkpoint in transformers, each giving the
    /// perplexity prune-dist measured. Needs python with torch, transformers and peft (PRUNE_DIST_PYTHON, default python3).
    func testPEFTAndTransformersLoadTheOutputWithTheSamePerplexity() throws {
        let python = try ReferencePython.requiring(["torch", "transformers", "peft"], check: "the PEFT load check")
        let out = scratch.appendingPathComponent("out")
        let run = try PruneDistBinary.run(try arguments(out: out, extra: ["--merge"]))
        XCTAssertEqual(run.status, 0, run.stderr)
        let ours = try run.lastJSON()
        let script = """
        import json, math, sys, torch, transformers, peft
        base, adapter, merged, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))
        windows = torch.tensor([ids[i * 16:(i + 1) * 16] for i in range(len(ids) // 16)])
        def ppl(model):
            with torch.no_grad():
                return math.exp(model(input_ids=windows, labels=windows).loss.item())
        m = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        p = peft.PeftModel.from_pretrained(m, adapter)
        print(json.dumps({"peft": ppl(p), "merged": ppl(transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32))}))
        """
        let check = try PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/env"),
                                               [python, "-c", script, try Fixtures.path("fixtures/tiny-llama").path, out.path,
                                                out.appendingPathComponent("merged").path, try tokens("eval.json", count: 8 * 16, seed: 2).path])
        XCTAssertEqual(check.status, 0, check.stderr)
        let theirs = try check.lastJSON()
        let after = ours["eval_perplexity_after"] as! Double
        XCTAssertEqual(theirs["peft"] as! Double, after, accuracy: 1e-4 * after)
        XCTAssertEqual(theirs["merged"] as! Double, after, accuracy: 1e-4 * after)
        XCTAssertEqual(ours["merged_perplexity"] as! Double, after, accuracy: 1e-4 * after)
    }
}
