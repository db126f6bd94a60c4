import Foundation
import TestSupport
import XCTest

/// `finetune --eval-text … --eval-tasks …`: before/after figures on several texts and zero-shot tasks under mpirun -n 2,
/// equal to `eval perplexity` / `eval zeroshot` on the input and on the written output; `report` reading a finetune
/// report next to a prune report; refused options.
final class FinetuneEvaluationTests: XCTestCase {
    private var scratch: URL!
    private let taskList = "piqa,winogrande,arc_easy"

    override func setUpWithError() throws { scratch = try Fixtures.temporaryDirectory("finetune-eval") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func text(_ name: String, _ line: String, repeats: Int = 40) throws -> URL {
        let url = scratch.appendingPathComponent("\(name).txt")
        try Data(String(repeating: line, count: repeats).utf8).write(to: url)
        return url
    }

    /// Two held-out texts (the curve on the first), one training text, the tiny model with a tokenizer, the task files.
    private func setUpRun() throws -> (model: URL, tasks: URL, train: URL, texts: [URL]) {
        let model = try TinyEvaluationFixture.model(in: scratch)
        let tasks = try TinyEvaluationFixture.tasks(in: scratch)
        let train = try text("train", "the sun is hot and the sea is deep and blue. birds sing at dawn in the park. ", repeats: 60)
        let texts = [try text("wiki", "the cat sat on the mat and the dog ran in the park. "), try text("code", "def f(x):\n    return x + 1\n\n")]
        return (model, tasks, train, texts)
    }

    private func finetuneArguments(model: URL, train: URL, out: URL, texts: [URL], tasks: URL, extra: [String] = []) -> [String] {
        ["finetune", "--model", model.path, "--data", train.path, "--out", out.path, "--lora-rank", "4", "--lora-alpha", "8",
         "--lr", "1e-2", "--warmup", "1", "--steps", "4", "--batch", "2", "--seqlen", "32", "--seed", "1", "--log-level", "warning"]
            + texts.flatMap { ["--eval-text", $0.path] } + ["--eval-max-windows", "3", "--eval-every", "2",
            "--eval-tasks", taskList, "--eval-data", tasks.path, "--eval-limit", "10"] + extra
    }

    private func json(_ url: URL) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any], url.path)
    }

    /// `eval perplexity` and `eval zeroshot` on a checkpoint, as flat entries with the report's keys.
    private func standalone(_ model: URL, texts: [URL], tasks: URL) throws -> [String: Double] {
        var entries: [String: Double] = [:]
        for text in texts {
            let run = try PruneDistBinary.run(["eval", "perplexity", "--model", model.path, "--text", text.path, "--seqlen", "32",
                                               "--max-windows", "3", "--json", "--log-level", "warning"])
            XCTAssertEqual(run.status, 0, run.stderr)
            entries["perplexity.\(text.deletingPathExtension().lastPathComponent)"] = try run.lastJSON()["perplexity"] as? Double
        }
        let zeroshot = try PruneDistBinary.run(["eval", "zeroshot", "--model", model.path, "--data", tasks.path, "--tasks", taskList,
                                                "--limit", "10", "--json", "--log-level", "warning"])
        XCTAssertEqual(zeroshot.status, 0, zeroshot.stderr)
        let object = try zeroshot.lastJSON()
        let results = try XCTUnwrap(object["tasks"] as? [String: [String: Any]])
        for (task, result) in results {
            entries["zeroshot.\(task).acc"] = result["acc"] as? Double
            if let norm = result["acc_norm"] as? Double { entries["zeroshot.\(task).acc_norm"] = norm }
        }
        entries["zeroshot.average.acc"] = object["average_acc"] as? Double
        entries["zeroshot.average.acc_norm"] = object["average_acc_norm"] as? Double
        return entries
    }

    func testBeforeAndAfterEqualSeparateEvaluationsAndReportListsFinetuneNextToPrune() throws {
        let (model, tasks, train, texts) = try setUpRun()
        let out = scratch.appendingPathComponent("lora")
        let run = try PruneDistBinary.mpirun(ranks: 2, finetuneArguments(model: model, train: train, out: out, texts: texts, tasks: tasks,
                                                                         extra: ["--merge", "--merge-dtype", "f32"]))
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("perplexity, wiki: before ") && run.stdout.contains("average acc_norm: before "), run.stdout)
        let report = try json(out.appendingPathComponent("finetune-report.json"))
        let beforeAfter = try XCTUnwrap(report["beforeAfter"] as? [String: Any])
        let before = try XCTUnwrap(beforeAfter["before"] as? [String: Double]), after = try XCTUnwrap(beforeAfter["after"] as? [String: Double])
        XCTAssertEqual(beforeAfter["texts"] as? [String], ["wiki", "code"])

        // Every figure is the standalone commands' on the input (before) and on the written merged checkpoint (after).
        let input = try standalone(model, texts: texts, tasks: tasks)
        let output = try standalone(out.appendingPathComponent("merged"), texts: texts, tasks: tasks)
        XCTAssertEqual(input.count, 2 + 3 + 2 + 2, "two texts, three acc, two acc_norm (winogrande has none), two averages")
        for (key, value) in input { XCTAssertEqual(before[key], value, "before: \(key)") }
        for (key, value) in output { XCTAssertEqual(after[key], value, "after: \(key)") }
        for key in ["perplexity.wiki", "perplexity.code"] { XCTAssertNotEqual(before[key], after[key], "training changed \(key)") }
        XCTAssertEqual(before["zeroshot.piqa.documents"], 10)
        XCTAssertEqual(report["mergedPerplexity"] as? Double, after["perplexity.wiki"], "the merged perplexity is the first text's after-figure")
        // The curve stays on the first text: steps 0, 2 and 4.
        let curves = try XCTUnwrap(report["curves"] as? [String: Any])
        XCTAssertEqual((curves["eval"] as? [[String: Any]])?.map { $0["step"] as? Int }, [0, 2, 4])

        let html = try String(contentsOf: out.appendingPathComponent("finetune-report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("Before → after") && html.contains("perplexity, code") && html.contains("arc_easy acc_norm")
                      && html.contains(String(format: "%.4f", after["zeroshot.average.acc"]!)), "the before → after table")
        XCTAssertEqual(try SVGInspection.svgs(in: html).map(\.id), ["loss-curve", "eval-curve"])

        // A prune run evaluated on the same texts, and `report` with both: one row each, the finetune run's after-figures.
        let pruned = scratch.appendingPathComponent("pruned")
        let prune = try PruneDistBinary.run(["prune", "--model", model.path, "--out", pruned.path, "--method", "magnitude", "--sparsity", "0.5",
                                             "--log-level", "warning", "--eval-text", texts[0].path, "--eval-text", texts[1].path,
                                             "--eval-seqlen", "32", "--eval-max-windows", "3", "--eval-tasks", taskList,
                                             "--eval-data", tasks.path, "--eval-limit", "10", "--no-dense-eval"])
        XCTAssertEqual(prune.status, 0, prune.stderr)
        let reports = [pruned.appendingPathComponent("prune-report.json").path, out.appendingPathComponent("finetune-report.json").path]
        let table = try PruneDistBinary.run(["report"] + reports + ["--table", "csv"])
        XCTAssertEqual(table.status, 0, table.stderr)
        let rows = table.stdout.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.first, ["run", "method", "pattern", "sparsity", "ppl code", "ppl wiki", "zero-shot avg acc", "zero-shot avg acc_norm", "time (s)"])
        XCTAssertEqual(rows.count, 3, table.stdout)
        XCTAssertEqual(rows[1][0], "magnitude unstructured 50%")
        XCTAssertEqual(Array(rows[2].prefix(8)), ["lora r=4", "lora r=4", "–", "–", String(format: "%.3f", after["perplexity.code"]!),
                                                  String(format: "%.3f", after["perplexity.wiki"]!),
                                                  String(format: "%.4f", after["zeroshot.average.acc"]!),
                                                  String(format: "%.4f", after["zeroshot.average.acc_norm"]!)])
        XCTAssertEqual(Double(rows[2][8])!, report["seconds"] as! Double, accuracy: 0.05)

        let page = scratch.appendingPathComponent("both.html")
        let combined = try PruneDistBinary.run(["report"] + reports + ["--out", page.path])
        XCTAssertEqual(combined.status, 0, combined.stderr)
        let both = try String(contentsOf: page, encoding: .utf8)
        let svgs = try SVGInspection.svgs(in: both)
        XCTAssertNotNil(svgs.first { $0.id == "linear-sparsity-0" }, "the prune run's panels")
        XCTAssertNil(svgs.first { $0.id == "linear-sparsity-1" }, "no pruning panels for the finetune run")
        XCTAssertNotNil(svgs.first { $0.id == "finetune-loss-1" }, "the finetune run's loss curve")
        XCTAssertTrue(both.contains("<h2>Fine-tuning</h2>") && both.contains("class=\"before-after\""), "its before → after table")

        // A finetune run alone: its section, none of the pruning panels.
        let alone = try PruneDistBinary.run(["report", reports[1], "--out", scratch.appendingPathComponent("alone.html").path])
        XCTAssertEqual(alone.status, 0, alone.stderr)
        let aloneHTML = try String(contentsOf: scratch.appendingPathComponent("alone.html"), encoding: .utf8)
        XCTAssertEqual(try SVGInspection.svgs(in: aloneHTML).map(\.id), ["finetune-loss-0", "finetune-eval-0"])
        XCTAssertFalse(aloneHTML.contains("Sparsity per block"))

        // A report of an older finetune (no before/after section) still decodes: a row without figures.
        var old = report
        old.removeValue(forKey: "beforeAfter")
        let oldURL = scratch.appendingPathComponent("old-finetune-report.json")
        try JSONSerialization.data(withJSONObject: old).write(to: oldURL)
        let oldTable = try PruneDistBinary.run(["report", reports[0], oldURL.path, "--table", "md"])
        XCTAssertEqual(oldTable.status, 0, oldTable.stderr)
        XCTAssertTrue(oldTable.stdout.contains("| lora r=4 | lora r=4 | – | – | – | – | – | – |"), oldTable.stdout)

        // JSON of neither kind is named as such.
        let neither = scratch.appendingPathComponent("neither.json")
        try Data("{\"steps\": 3}".utf8).write(to: neither)
        let refused = try PruneDistBinary.run(["report", neither.path, "--table", "md"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("neither.json: neither a prune run report") && refused.stderr.contains("nor a finetune report"), refused.stderr)
    }

    /// Without --merge the after-figures are the trained model's (base + adapter in Float32): on the dense tiny model
    /// (no zero weights) the same as the f32 merged checkpoint's, and nothing of the scratch checkpoint is left behind.
    func testWithoutMergeTheTrainedModelIsEvaluated() throws {
        let (model, tasks, train, texts) = try setUpRun()
        var afters: [[String: Double]] = []
        for (name, extra) in [("merged", ["--merge", "--merge-dtype", "f32"]), ("adapter", [])] {
            let out = scratch.appendingPathComponent(name)
            let run = try PruneDistBinary.mpirun(ranks: 2, finetuneArguments(model: model, train: train, out: out, texts: texts, tasks: tasks, extra: extra))
            XCTAssertEqual(run.status, 0, run.stderr)
            let beforeAfter = try XCTUnwrap(try json(out.appendingPathComponent("finetune-report.json"))["beforeAfter"] as? [String: Any])
            afters.append(try XCTUnwrap(beforeAfter["after"] as? [String: Double]))
            if extra.isEmpty {
                XCTAssertTrue((beforeAfter["afterModel"] as? String ?? "").contains("trained model"))
                XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: out.path)),
                               ["adapter_config.json", "adapter_model.safetensors", "finetune-report.json", "finetune-report.html"])
            }
        }
        XCTAssertEqual(afters[0], afters[1])
    }

    func testRefusedEvaluationOptions() throws {
        let (model, tasks, train, texts) = try setUpRun()
        let out = scratch.appendingPathComponent("out")
        func refused(_ arguments: [String], _ message: String) throws {
            let result = try PruneDistBinary.run(arguments)
            XCTAssertEqual(result.status, 64, "\(message): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(message), result.stderr)
        }
        var noData = finetuneArguments(model: model, train: train, out: out, texts: texts, tasks: tasks)
        noData.removeSubrange(noData.firstIndex(of: "--eval-data")!...(noData.firstIndex(of: "--eval-data")! + 1))
        try refused(noData, "--eval-tasks needs --eval-data")
        // The second held-out text is a training file.
        try refused(finetuneArguments(model: model, train: train, out: out, texts: [texts[0], train], tasks: tasks), "is the same path as --data")
        try refused(finetuneArguments(model: model, train: train, out: out, texts: texts, tasks: tasks, extra: ["--eval-tasks", "piqa,nope"]),
                    "unknown task \"nope\"")
        try refused(finetuneArguments(model: model, train: train, out: out, texts: texts, tasks: scratch), "no piqa.validation.jsonl")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }
}
