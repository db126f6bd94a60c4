import Engine
import Foundation

/// A run's report files: the JSON (machine-readable, the source of truth) and the HTML rendered from it,
/// side by side under the same name.
enum RunReportFiles {
    /// `run.json` → `run.html`; any other name gets `.html` appended.
    static func htmlURL(forJSON url: URL) -> URL {
        url.pathExtension.lowercased() == "json" ? url.deletingPathExtension().appendingPathExtension("html") : url.appendingPathExtension("html")
    }

    /// Where a prune run writes its JSON report: OUT/prune-report.json, and --report FILE when given.
    static func jsonURLs(out: URL, extra: URL?) -> [URL] {
        [out.appendingPathComponent("prune-report.json")] + (extra.map { [$0] } ?? [])
    }

    /// Every report file of a run, JSON then HTML for each place (named in the run's last lines).
    static func reportURLs(out: URL, extra: URL?) -> [URL] {
        jsonURLs(out: out, extra: extra).flatMap { [$0, htmlURL(forJSON: $0)] }
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

    /// Refuses, before any work, a report path that could cost the user a file: one that is, holds or sits
    /// inside an input or the output (`others`), that is a folder or special file, that already holds
    /// something other than a prune-dist report (a later run may replace its own report, nothing else), or
    /// whose folder does not exist or cannot be written. `html`: the path holds an HTML page, not JSON.
    static func checkWritable(_ report: OutputFolder.Argument, others: [OutputFolder.Argument], html: Bool = false) throws {
        let targets = html ? [(report.url, true)] : [(report.url, false), (htmlURL(forJSON: report.url), true)]
        let existing = targets.filter { FileManager.default.fileExists(atPath: $0.0.path) }
        for (url, _) in existing where !isRegularFile(url) {
            throw PruneDistError(.argument, "\(report.option) \(url.path): is \(OutputFolder.fileKind(url)), not a report file; choose a file name")
        }
        try OutputFolder.checkSeparate(report, from: others)
        for (url, isHTML) in existing where !isPruneDistReport(url, html: isHTML) {
            throw PruneDistError(.argument, "\(report.option) \(url.path): exists and is not a prune-dist \(isHTML ? "HTML" : "JSON") report; it would be overwritten. Remove it or choose another file name")
        }
        let folder = report.url.deletingLastPathComponent()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PruneDistError(.argument, "\(report.option) \(report.url.path): folder \(folder.path) does not exist")
        }
        guard access(folder.path, W_OK) == 0 else {
            throw PruneDistError(.argument, "\(report.option) \(report.url.path): folder \(folder.path) is not writable: \(String(cString: strerror(errno)))")
        }
    }

    private static func isRegularFile(_ url: URL) -> Bool {
        (try? FileManager.default.attributesOfItem(atPath: url.path)[.type] as? FileAttributeType) == .typeRegular
    }

    /// Whether the file starts like a report this tool writes (JSON with `"tool": "prune-dist"`, or our HTML page).
    private static func isPruneDistReport(_ url: URL, html: Bool) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: url.path) else { return false }
        defer { try? handle.close() }
        let head = String(decoding: (try? handle.read(upToCount: 65536)) ?? Data(), as: UTF8.self)
        if html { return head.contains(HTMLReport.generatorTag) }
        return head.contains("\"tool\"") && head.contains("\"prune-dist\"")
    }

    /// The label of a finetune run: the method as a table row names it.
    static func label(_ report: FinetuneReport) -> String {
        "lora r=\(report.lora.rank)"
    }

    /// A report `prune-dist report` reads: `prune`'s run report, or `finetune`'s (finetune-report.json) shown as a
    /// row of its own. Told apart by content, not by name: a run report has `linears`, a finetune report `lora` and
    /// `curves`.
    static func readRun(_ url: URL) throws -> HTMLReport.Run {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read run report (\(error.localizedDescription))")
        }
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        if let object, object["linears"] == nil, object["lora"] != nil, object["curves"] != nil {
            let finetune = try decode(FinetuneReport.self, from: data, url: url, kind: "finetune report")
            return HTMLReport.Run(label: label(finetune), report: finetune.runReportView, finetune: finetune)
        }
        guard let object, object["linears"] != nil || object["tool"] as? String == "prune-dist" else {
            throw PruneDistError(.format, "\(url.path): neither a prune run report (prune-report.json, with \"linears\") nor a finetune report (finetune-report.json, with \"lora\" and \"curves\")")
        }
        let report = try decode(RunReport.self, from: data, url: url, kind: "prune-dist run report")
        return HTMLReport.Run(label: label(report), report: report)
    }

    /// Reads a run report written by `prune`, naming the file when it is not one.
    static func read(_ url: URL) throws -> RunReport {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read run report (\(error.localizedDescription))")
        }
        return try decode(RunReport.self, from: data, url: url, kind: "prune-dist run report")
    }

    private static func decode<T: Decodable>(_ type: T.Type, from data: Data, url: URL, kind: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw PruneDistError(.format, "\(url.path): not a \(kind): key \"\(key.stringValue)\" missing at \(path(context))")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw PruneDistError(.format, "\(url.path): not a \(kind): wrong value at \(path(context)) (\(context.debugDescription))")
        } catch {
            throw PruneDistError(.format, "\(url.path): not a \(kind) (\(error.localizedDescription))")
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "the top level" : path
    }
}
