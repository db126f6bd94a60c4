import Foundation

extension HTMLReport {
    /// Finetune runs shown next to prune runs: each one's before → after table and its loss and evaluation curves,
    /// as its own finetune-report.html has them (the pruning panels have nothing to show for it).
    static func finetuneSection(_ runs: [Run]) -> String {
        let finetunes = runs.enumerated().compactMap { i, run in run.finetune.map { (i, run.label, $0) } }
        guard !finetunes.isEmpty else { return "" }
        var html = "<h2>Fine-tuning</h2>\n<div class=\"panels\">"
        for (i, label, report) in finetunes {
            html += "<div class=\"panel\"><h3>\(escape(label))</h3>"
            html += "<p class=\"note\">\(escape(URL(fileURLWithPath: report.model).lastPathComponent)), \(report.steps) steps of "
                + "\(report.batch) × \(report.accumulate) × \(report.seqlen) tokens, lr \(report.learningRate), \(report.ranks) rank(s)</p>"
            html += report.beforeAfter?.htmlTable ?? "<p class=\"note\">No before/after evaluation in this run.</p>\n"
            html += FinetuneHTMLReport.lineChart(id: "finetune-loss-\(i)", points: report.curves.loss.map { (Double($0.step), $0.loss) },
                                                 yLabel: "training loss (mean NLL of the step's batch)")
            if !report.curves.eval.isEmpty {
                html += FinetuneHTMLReport.lineChart(id: "finetune-eval-\(i)", points: report.curves.eval.map { (Double($0.step), $0.perplexity) },
                                                     yLabel: "evaluation perplexity")
            }
            html += "</div>"
        }
        return html + "</div>\n"
    }
}
