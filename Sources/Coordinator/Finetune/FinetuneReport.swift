import Engine
import Foundation

/// finetune-report.json: the settings, the data, the curves and the speed of a `finetune` run.
struct FinetuneReport: Codable, Sendable {
    var model: String
    var data: [String]
    var format: String
    var sequences: Int
    var truncated: Int
    var dropped: Int
    var lora: LoraSettings
    var learningRate: Double
    var warmup: Int
    var schedule: String
    var weightDecay: Double
    var steps: Int
    var batch: Int
    var accumulate: Int
    var seqlen: Int
    var seed: Int
    /// The update was trained masked by the base weights' zeros (PEFT applies an adapter unmasked: use the merge)
    var maskAware: Bool
    var ranks: Int
    var parameters: Int
    var curves: FinetuneCurves
    var resumedAfterStep: Int?
    var seconds: Double
    var tokensPerSecond: Double?
    /// With --merge: the merged checkpoint's folder, and its evaluation perplexity (a sparse model's merge keeps
    /// the mask, so it can differ from the adapter's)
    var merged: String? = nil
    var mergedPerplexity: Double? = nil
    var maskedWeights: Int? = nil
    /// With --eval-text / --eval-tasks: every text and task on the input and on the result (absent in older reports)
    var beforeAfter: FinetuneBeforeAfter? = nil

    init(settings: FinetuneSettings, data: TrainingSet, totalSteps: Int, parameters: Int, ranks: Int, curves: FinetuneCurves,
         resumedAfterStep: Int?, seconds: Double, tokensPerSecond: Double?) {
        model = settings.model.path
        self.data = settings.data.map(\.path)
        format = data.format.rawValue
        sequences = data.examples.count
        truncated = data.truncated
        dropped = data.dropped
        lora = settings.lora
        learningRate = settings.learningRate
        warmup = settings.warmup
        schedule = settings.decay.rawValue
        weightDecay = settings.weightDecay
        steps = totalSteps
        batch = settings.batch
        accumulate = settings.accumulate
        seqlen = settings.seqlen
        seed = settings.seed
        maskAware = settings.maskAware
        self.ranks = ranks
        self.parameters = parameters
        self.curves = curves
        self.resumedAfterStep = resumedAfterStep
        self.seconds = seconds
        self.tokensPerSecond = tokensPerSecond
    }

    /// The run as a row among prune runs (`prune-dist report`): the after-figures as its `evaluation`, its wall time;
    /// no linears, blocks or sparsity (the HTML page shows a finetune run's own section instead of those panels).
    var runReportView: RunReport {
        RunReport(tool: "prune-dist", version: "", model: model, output: merged ?? "", method: RunReportFiles.label(self), pattern: "–",
                  sparsityTarget: .nan, trueSequential: false, samples: 0, seqlen: seqlen, seed: seed, ranks: ranks,
                  linears: [], blocks: [], rankUsage: [], totalSeconds: seconds, overallSparsity: .nan, evaluation: beforeAfter?.after)
    }

    func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}

/// The input and the fine-tuned model evaluated alike (`prune --eval-*`'s code, over the run's ranks). `before` and
/// `after` are flat maps with the keys of a prune report's `evaluation` (`perplexity.<text>`, `zeroshot.<task>.acc`,
/// `zeroshot.average.acc_norm`, …), so the figures line up with prune runs' in `prune-dist report`.
struct FinetuneBeforeAfter: Codable, Sendable, Equatable {
    /// What `after` measured: the merged checkpoint as written (OUT/merged), or the trained model (base + adapter,
    /// merged in Float32 into a scratch checkpoint that is not kept)
    var afterModel: String
    /// The texts' labels in command-line order (the first is the curve's)
    var texts: [String]
    var before: [String: Double]
    var after: [String: Double]

    /// Zero-shot tasks measured, in ZeroShotTask order.
    var tasks: [String] { ZeroShotTask.allCases.map(\.rawValue).filter { before["zeroshot.\($0).acc"] != nil } }

    /// Rows of (what, before, after) for the terminal and the HTML table: perplexity per text, acc and acc_norm per task,
    /// and the average.
    var rows: [(name: String, before: Double?, after: Double?, format: String)] {
        var rows: [(name: String, before: Double?, after: Double?, format: String)] = []
        for label in texts {
            rows.append(("perplexity, \(label)", before["perplexity.\(label)"], after["perplexity.\(label)"], "%.4f"))
        }
        for task in tasks + (tasks.isEmpty ? [] : ["average"]) {
            for metric in ["acc", "acc_norm"] where before["zeroshot.\(task).\(metric)"] != nil {
                rows.append(("\(task) \(metric)", before["zeroshot.\(task).\(metric)"], after["zeroshot.\(task).\(metric)"], "%.4f"))
            }
        }
        return rows
    }

    /// One line per row: "perplexity, eval: before 20.1234 → after 15.4321".
    var lines: [String] {
        rows.map { row in
            "\(row.name): before \(row.before.map { String(format: row.format, $0) } ?? "–") → after \(row.after.map { String(format: row.format, $0) } ?? "–")"
        }
    }

    /// The before → after table (text rows, task rows, the average).
    var htmlTable: String {
        var html = "<table class=\"before-after\"><tr><th></th><th>before</th><th>after</th></tr>"
        for row in rows {
            html += "<tr><td>\(HTMLReport.escape(row.name))</td><td>\(row.before.map { String(format: row.format, $0) } ?? "–")</td>"
                + "<td>\(row.after.map { String(format: row.format, $0) } ?? "–")</td></tr>"
        }
        let seqlen = before["perplexity.seqlen"].map { "windows of \(Int($0)) tokens; " } ?? ""
        let documents = before["zeroshot.limit"].map { "first \(Int($0)) documents per task; " } ?? ""
        return html + "</table>\n<p class=\"note\">\(seqlen)\(documents)after: \(HTMLReport.escape(afterModel)). The zero-shot average leaves SST-2 out; acc_norm where reported, acc otherwise.</p>\n"
    }
}

/// finetune-report.html: one self-contained page (inline SVG, no script) with the loss and evaluation curves.
enum FinetuneHTMLReport {
    static func render(_ report: FinetuneReport) -> String {
        var html = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">\(HTMLReport.generatorTag)<title>prune-dist finetune report</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
        h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
        table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
        svg text { font: 11px system-ui, sans-serif; fill: #333; }
        </style></head><body>
        <h1>prune-dist finetune report</h1>

        """
        let targets = report.lora.targets.map(LoraSettings.moduleName).joined(separator: ",")
        let resumed = report.resumedAfterStep.map { ", resumed after step \($0)" } ?? ""
        let speed = report.tokensPerSecond.map { String(format: "%.0f tokens/s", $0) } ?? "–"
        var rows: [(String, String)] = []
        rows.append(("model", report.model))
        rows.append(("data", report.data.joined(separator: ", ")))
        rows.append(("sequences", "\(report.sequences) \(report.format) × \(report.seqlen) tokens (\(report.truncated) cut, \(report.dropped) left out)"))
        rows.append(("LoRA", "r \(report.lora.rank), alpha \(report.lora.alpha), dropout \(report.lora.dropout), targets \(targets)"
                     + (report.maskAware ? ", update masked by the base model's zeros" : "")))
        rows.append(("optimizer", "AdamW lr \(report.learningRate), weight decay \(report.weightDecay), \(report.schedule) schedule, \(report.warmup) warm-up steps"))
        rows.append(("steps", "\(report.steps) of \(report.batch) × \(report.accumulate) sequences over \(report.ranks) rank(s)\(resumed)"))
        rows.append(("speed", speed))
        rows.append(("time", String(format: "%.1f s", report.seconds)))
        if let merged = report.merged {
            let perplexity = report.mergedPerplexity.map { String(format: ", perplexity %.4f", $0) } ?? ""
            rows.append(("merged checkpoint", merged + perplexity + ", \(report.maskedWeights ?? 0) updates held at zero by the mask"))
        }
        html += "<table>" + rows.map { "<tr><th>\(HTMLReport.escape($0.0))</th><td>\(HTMLReport.escape($0.1))</td></tr>" }.joined() + "</table>\n"
        html += "<h2>Before → after</h2>\n"
            + (report.beforeAfter?.htmlTable ?? "<p>No --eval-text or --eval-tasks was given.</p>\n")
        html += "<h2>Training loss</h2>\n" + lineChart(id: "loss-curve", points: report.curves.loss.map { (Double($0.step), $0.loss) }, yLabel: "mean NLL of the step's batch")
        html += "<h2>Evaluation perplexity\(report.beforeAfter?.texts.first.map { " (\($0))" } ?? "")</h2>\n"
        if report.curves.eval.isEmpty {
            html += "<p>No --eval-text was given.</p>\n"
        } else {
            html += lineChart(id: "eval-curve", points: report.curves.eval.map { (Double($0.step), $0.perplexity) }, yLabel: "perplexity")
            html += "<table><tr><th>after step</th><th>perplexity</th></tr>"
                + report.curves.eval.map { "<tr><td>\($0.step)</td><td>\(String(format: "%.4f", $0.perplexity))</td></tr>" }.joined() + "</table>\n"
        }
        return html + "</body></html>\n"
    }

    /// A polyline over step, with the y range of the points; one circle per point.
    static func lineChart(id: String, points: [(x: Double, y: Double)], yLabel: String) -> String {
        let width = 560.0, height = 260.0, left = 60.0, right = 16.0, top = 16.0, bottom = 36.0
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"\(id)\" width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(HTMLReport.escape(yLabel))\">"
        guard let first = points.first else { return svg + "<text x=\"20\" y=\"40\">no points</text></svg>\n" }
        let xs = points.map(\.x), ys = points.map(\.y).filter(\.isFinite)
        let (x0, x1) = (min(xs.min()!, first.x), max(xs.max()!, first.x + 1))
        var (y0, y1) = (ys.min() ?? 0, ys.max() ?? 1)
        if y1 - y0 < 1e-12 { y0 -= 0.5; y1 += 0.5 }
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (width - left - right) }
        func py(_ y: Double) -> Double { top + (y1 - y) / (y1 - y0) * (height - top - bottom) }
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#888\"/>"
        for y in [y0, (y0 + y1) / 2, y1] {
            svg += "<text x=\"\(left - 4)\" y=\"\(String(format: "%.1f", py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", y))</text>"
        }
        for x in [x0, x1] { svg += "<text x=\"\(String(format: "%.1f", px(x)))\" y=\"\(height - bottom + 14)\" text-anchor=\"middle\">\(Int(x))</text>" }
        svg += "<text x=\"\(left + (width - left - right) / 2)\" y=\"\(height - 4)\" text-anchor=\"middle\">step</text>"
        let path = points.filter { $0.y.isFinite }.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
        svg += "<polyline class=\"curve\" fill=\"none\" stroke=\"#0072B2\" stroke-width=\"1.5\" points=\"\(path)\"/>"
        for p in points where p.y.isFinite {
            svg += "<circle class=\"point\" cx=\"\(String(format: "%.1f", px(p.x)))\" cy=\"\(String(format: "%.1f", py(p.y)))\" r=\"2\" fill=\"#0072B2\"/>"
        }
        return svg + "</svg>\n"
    }
}
