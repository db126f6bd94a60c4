import Engine
import Foundation

/// A run's report files: the JSON (machine-readable, the source of truth) and the HTML rendered from it,
/// side by side under the same name.
enum RunReportFiles {
    /// `run.json` → `run.html`; any other name gets `.html` appended.
    static func htmlURL(forJSON url: URL) -> URL {
        url.pathExtension.lowercased() == "json" ? url.deletingPathExtension().appendingPathExtension("html") : url.appendingPathExtension("html")
    }

    /// The label a run goes by in an HTML report: method and pattern.
    static func label(_ report: RunReport) -> String {
        "\(report.method) \(report.pattern)"
    }

    /// Writes the JSON report and its HTML page to each of `jsonURLs` (and their `.html` twins).
    static func write(_ report: RunReport, jsonURLs: [URL]) throws {
        let json = try report.jsonData()
        let html = Data(HTMLReport.render([HTMLReport.Run(label: label(report), report: report)],
                                          title: "prune-dist: \(label(report)) on \(URL(fileURLWithPath: report.model).lastPathComponent)").utf8)
        for url in jsonURLs {
            try writeFileAtomically(json, to: url)
            try writeFileAtomically(html, to: htmlURL(forJSON: url))
        }
    }

    /// Reads a run report written by `prune`, naming the file when it is not one.
    static func read(_ url: URL) throws -> RunReport {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read run report (\(error.localizedDescription))")
        }
        do {
            return try JSONDecoder().decode(RunReport.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw PruneDistError(.format, "\(url.path): not a prune-dist run report: key \"\(key.stringValue)\" missing at \(path(context))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw PruneDistError(.format, "\(url.path): not a prune-dist run report: wrong value at \(path(context)) (\(context.debugDescription))")
        } catch {
            throw PruneDistError(.format, "\(url.path): not a prune-dist run report (\(error.localizedDescription))")
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "the top level" : path
    }
}
