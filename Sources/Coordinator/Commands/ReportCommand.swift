import ArgumentParser
import Engine
import Foundation

extension RunComparisonTable.Format: ExpressibleByArgument {}

/// `prune-dist report`: the HTML page of one or several run reports, side by side, and the table of runs.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Render run reports (prune-report.json, finetune-report.json) as one self-contained HTML page, and/or a table of runs × figures.",
        discussion: """
        --table md|csv|latex prints one row per run (and the dense model when the runs evaluated it): method, pattern, \
        sparsity reached, perplexity on every evaluated text, zero-shot average, wall time. A finetune report is one row \
        (method "lora r=R", its after-training figures). With --out the HTML page is written as well.
        """)

    @Argument(help: "Run reports (JSON) written by prune-dist prune or prune-dist finetune.")
    var reports: [String]

    @Option(name: .long, help: "The HTML file to write.")
    var out: String?

    @Option(name: .long, help: "Print the runs side by side as a table: md, csv or latex.")
    var table: RunComparisonTable.Format?

    @Option(name: .long, help: "Page title.")
    var title: String = "prune-dist run report"

    func validate() throws {
        guard !reports.isEmpty else { throw ValidationError("give at least one run report (RUN.json)") }
        guard out != nil || table != nil else { throw ValidationError("give --out FILE.html, --table md|csv|latex, or both") }
        if let out {
            try asValidationError {
                try RunReportFiles.checkWritable(OutputFolder.Argument("--out", URL(fileURLWithPath: out)),
                                                 others: reports.map { OutputFolder.Argument("report", URL(fileURLWithPath: $0)) }, html: true)
            }
        }
    }

    func run() throws {
        let urls = reports.map { URL(fileURLWithPath: $0) }
        var runs = try urls.map(RunReportFiles.readRun)
        // Runs with the same method and pattern are told apart by where their report lives.
        let clashing = runs.indices.filter { i in runs.filter { $0.label == runs[i].label }.count > 1 }
        for i in clashing {
            let parent = urls[i].deletingLastPathComponent().lastPathComponent
            runs[i].label += " (\(["prune-report.json", "finetune-report.json"].contains(urls[i].lastPathComponent) ? parent : urls[i].lastPathComponent))"
        }
        if let table { print(RunComparisonTable.render(runs, format: table), terminator: "") }
        if let out = self.out.map({ URL(fileURLWithPath: $0) }) {
            try writeFileAtomically(Data(HTMLReport.render(runs, title: title).utf8), to: out)
            // With a table on stdout, the note goes to stderr so that `> table.md` holds the table alone.
            let note = "wrote \(out.path): \(runs.count) run(s)\n"
            if table == nil { printLine(note.trimmingCharacters(in: .newlines)) } else { FileHandle.standardError.write(Data(note.utf8)) }
        }
        fflush(nil)
    }
}
