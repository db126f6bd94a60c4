import Foundation

extension HTMLReport {
    /// Where each run came from: command line, version and commit, date, hosts, ranks, calibration file, dtypes,
    /// seed and every option (RunProvenance).
    static func provenanceSection(_ runs: [Run]) -> String {
        var html = "<h2>Provenance</h2>\n"
        for run in runs {
            guard let p = run.report.provenance else {
                html += "<p class=\"note\">\(escape(run.label)): no provenance (a report from an older prune-dist).</p>\n"
                continue
            }
            html += "<h3>\(escape(run.label))</h3>\n<table>"
            func row(_ name: String, _ value: String) { html += "<tr><td>\(escape(name))</td><td style=\"text-align:left\">\(escape(value))</td></tr>" }
            row("command line", p.commandLine)
            row("prune-dist", "\(p.version), commit \(p.gitCommit)\(p.gitDirty == true ? " (with local changes)" : "")")
            row("date", p.date)
            row("hosts", p.hosts.joined(separator: ", "))
            row("ranks", String(p.ranks))
            if let c = p.calibration { row("calibration file", "\(c.path) (\(c.bytes) bytes, sha256 \(c.sha256))") }
            row("dtype", "\(p.inputDType) → \(p.outputDType)")
            row("seed", String(p.seed))
            for key in p.options.keys.sorted() { row("option \(key)", p.options[key]!) }
            html += "</table>\n"
            if let recipe = run.report.recipe {
                // A <pre> block selects as plain text: copy it into a file and run prune --recipe FILE.
                html += "<p class=\"note\">Recipe: save as recipe.yaml and run <code>prune-dist prune --model DIR --out DIR --recipe recipe.yaml</code> to repeat this run.</p>\n"
                html += "<pre class=\"recipe\">\(escape(recipe))</pre>\n"
            }
        }
        return html
    }
}
