import ArgumentParser
import Engine
import Foundation

/// `prune-dist report`: the HTML page of one or several run reports, side by side.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Render run reports (prune-report.json) as one self-contained HTML page; several runs side by side.")

    @Argument(help: "Run reports (JSON) written by prune-dist prune.")
    var reports: [String]

    @Option(name: .long, help: "The HTML file to write.")
    var out: String

    @Option(name: .long, help: "Page title.")
    var title: String = "prune-dist run report"

    func validate() throws {
        guard !reports.isEmpty else { throw ValidationError("give at least one run report (RUN.json)") }
        try asValidationError {
            try RunReportFiles.checkWritable(OutputFolder.Argument("--out", URL(fileURLWithPath: out)),
                                             others: reports.map { OutputFolder.Argument("report", URL(fileURLWithPath: $0)) }, html: true)
        }
    }

    func run() throws {
        let urls = reports.map { URL(fileURLWithPath: $0) }
        var runs = try urls.map { HTMLReport.Run(label: RunReportFiles.label(try RunReportFiles.read($0)), report: try RunReportFiles.read($0)) }
        // Runs with the same method and pattern are told apart by where their report lives.
        for i in runs.indices where runs.filter({ $0.label == runs[i].label }).count > 1 {
            let parent = urls[i].deletingLastPathComponent().lastPathComponent
            runs[i].label += " (\(urls[i].lastPathComponent == "prune-report.json" ? parent : urls[i].lastPathComponent))"
        }
        let out = URL(fileURLWithPath: self.out)
        try writeFileAtomically(Data(HTMLReport.render(runs, title: title).utf8), to: out)
        printLine("wrote \(out.path): \(runs.count) run(s)")
    }
}
