import Foundation

/// `report A.json B.json … --table md|csv|latex`: one row per run (and one for the dense model when the runs
/// evaluated it), one column per figure: method, pattern, sparsity reached, perplexity on every evaluated text,
/// zero-shot average, wall time. A finetune run is a row too (method "lora r=R", its figures after training). The table
/// users paste into a paper; the HTML page has the details.
enum RunComparisonTable {
    enum Format: String, CaseIterable {
        case md, csv, latex
    }

    /// The figures of every run, as text; "–" where a run lacks one.
    /// - runs: label and report of each run, in the order given
    static func rows(_ runs: [HTMLReport.Run]) -> (header: [String], rows: [[String]]) {
        // Texts by label, in the order first seen (the plain "perplexity" key of single-text reports counts as its own column).
        var texts: [String] = []
        for run in runs {
            for key in (run.report.evaluation ?? [:]).keys.sorted() where isText(key) && !texts.contains(key) { texts.append(key) }
        }
        if texts.count > 1, texts.contains("perplexity") { texts.removeAll { $0 == "perplexity" } }  // also under perplexity.<label>
        let hasZeroShot = runs.contains { $0.report.evaluation?["zeroshot.average.acc"] != nil }
        var header = ["run", "method", "pattern", "sparsity"]
        header += texts.map { $0 == "perplexity" ? "ppl" : "ppl \($0.dropFirst("perplexity.".count))" }
        if hasZeroShot { header += ["zero-shot avg acc", "zero-shot avg acc_norm"] }
        header.append("time (s)")
        func figures(_ evaluation: [String: Double]?) -> [String] {
            var cells = texts.map { key in evaluation?[key].map { String(format: "%.3f", $0) } ?? "–" }
            if hasZeroShot {
                cells += ["zeroshot.average.acc", "zeroshot.average.acc_norm"].map { key in evaluation?[key].map { String(format: "%.4f", $0) } ?? "–" }
            }
            return cells
        }
        var rows: [[String]] = []
        // The dense model once, from the first run that evaluated it (every run of one model and texts has the same figures).
        if let dense = runs.lazy.compactMap(\.report.denseEvaluation).first {
            rows.append(["dense", "–", "–", "0"] + figures(dense) + ["–"])
        }
        for run in runs {
            let r = run.report
            // A finetune run: its after-training figures; it prunes nothing, so no sparsity of its own.
            rows.append([run.label, r.method, r.pattern, run.finetune == nil ? String(format: "%.4f", r.overallSparsity) : "–"] + figures(r.evaluation)
                        + [String(format: "%.1f", r.totalSeconds)])
        }
        return (header, rows)
    }

    private static func isText(_ key: String) -> Bool {
        (key == "perplexity" || key.hasPrefix("perplexity.")) && !key.hasSuffix(".seqlen") && !key.hasSuffix(".windows")
    }

    static func render(_ runs: [HTMLReport.Run], format: Format) -> String {
        let (header, rows) = rows(runs)
        switch format {
        case .md:
            func line(_ cells: [String]) -> String { "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |" }
            return ([line(header), line(header.map { _ in "---" })] + rows.map(line)).joined(separator: "\n") + "\n"
        case .csv:
            func field(_ text: String) -> String {
                text.contains(where: { ",\"\n".contains($0) }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
            }
            return ([header] + rows).map { $0.map(field).joined(separator: ",") }.joined(separator: "\n") + "\n"
        case .latex:
            func escaped(_ text: String) -> String {
                var out = ""
                for c in text {
                    switch c {
                    case "\\": out += "\\textbackslash{}"
                    case "&", "%", "$", "#", "_", "{", "}": out += "\\\(c)"
                    case "~": out += "\\textasciitilde{}"
                    case "^": out += "\\textasciicircum{}"
                    case "–": out += "--"
                    default: out.append(c)
                    }
                }
                return out
            }
            func line(_ cells: [String]) -> String { cells.map(escaped).joined(separator: " & ") + " \\\\" }
            var lines = ["\\begin{tabular}{l" + String(repeating: "r", count: header.count - 1) + "}", "\\toprule", line(header), "\\midrule"]
            lines += rows.map(line)
            lines += ["\\bottomrule", "\\end{tabular}"]
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
