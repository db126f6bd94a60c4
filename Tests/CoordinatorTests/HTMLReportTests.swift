import Engine
import Foundation
import TestSupport
import XCTest
@testable import Coordinator

final class HTMLReportTests: XCTestCase {
    /// A report of `blocks` blocks with every linear, some without errors, a name that needs escaping.
    private func report(method: String, blocks: Int, evaluation: [String: Double]? = nil) -> RunReport {
        var linears: [RunReport.Linear] = []
        for layer in 0..<blocks {
            for (i, linear) in LlamaLinear.allCases.enumerated() {
                linears.append(RunReport.Linear(linear: linear, layer: layer, owner: i % 2,
                                                sparsity: 0.5 + 0.001 * Double(i), zeros: 500 + i, total: 1000,
                                                errorBefore: i == 3 ? nil : 2.0 * Double(layer + 1), errorAfter: i == 3 ? nil : Double(layer + 1) * 0.1,
                                                damping: nil, ridge: nil, redamped: 0, seconds: 0.1))
            }
        }
        return RunReport(tool: "prune-dist", version: "0", model: "/m/<model> & \"x\"", output: "/o", method: method, pattern: "unstructured 50%",
                         sparsityTarget: 0.5, trueSequential: false, samples: 4, seqlen: 32, seed: 0, ranks: 2, linears: linears,
                         blocks: (0..<blocks).map { RunReport.Block(layer: $0, seconds: 1, statisticsSeconds: 0.2, solveSeconds: 0.5, forwardSeconds: 0.1) },
                         rankUsage: [RunReport.Rank(rank: 0, host: "h<0>", peakRSSBytes: 1 << 30, cpuSeconds: 3, sequences: 2),
                                     RunReport.Rank(rank: 1, host: "h1", peakRSSBytes: 1 << 29, cpuSeconds: 2, sequences: 2)],
                         totalSeconds: 10, overallSparsity: 0.503, evaluation: evaluation)
    }

    func testEverySVGIsWellFormedWithOneMarkPerLinear() throws {
        let runs = [HTMLReport.Run(label: "wanda <a&b>", report: report(method: "wanda", blocks: 30, evaluation: ["perplexity": 22.9, "perplexity.seqlen": 512,
                                                                                                                "zeroshot.piqa.acc": 0.6, "zeroshot.piqa.acc_norm": 0.61, "zeroshot.average.acc": 0.6])),
                    HTMLReport.Run(label: "sparsegpt", report: report(method: "sparsegpt", blocks: 30))]
        let html = HTMLReport.render(runs)
        let svgs = try SVGInspection.svgs(in: html)
        XCTAssertEqual(svgs.count, 1 + 4 * runs.count)
        for i in runs.indices {
            let panel = try XCTUnwrap(svgs.first { $0.id == "linear-sparsity-\(i)" })
            XCTAssertEqual(panel.classCounts["linear-mark"], 210)
            let errors = try XCTUnwrap(svgs.first { $0.id == "error-\(i)" })
            XCTAssertEqual(errors.classCounts["error-mark"], 180, "linears without an error have no dot")
        }
        XCTAssertEqual(svgs.first { $0.id == "block-sparsity" }?.classCounts["block-mark"], 60)
        XCTAssertTrue(html.contains("wanda &lt;a&amp;b&gt;"))
        XCTAssertTrue(html.contains("22.900"))
        XCTAssertFalse(html.contains("<script"))
    }

    func testRunWithoutLinearsStillRenders() throws {
        let html = HTMLReport.render([HTMLReport.Run(label: "empty", report: report(method: "magnitude", blocks: 0))])
        XCTAssertNoThrow(try SVGInspection.svgs(in: html))
        XCTAssertTrue(html.contains("no reconstruction errors"))
    }

    func testReadingSomethingElseNamesTheFile() throws {
        let folder = try Fixtures.temporaryDirectory("report-read")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("x.json")
        try Data("{\"tool\": \"prune-dist\"}".utf8).write(to: file)
        XCTAssertThrowsError(try RunReportFiles.read(file)) { error in
            XCTAssertTrue("\(error)".contains(file.path) && "\(error)".contains("missing"), "\(error)")
        }
        XCTAssertEqual(RunReportFiles.htmlURL(forJSON: URL(fileURLWithPath: "/a/r.json")).path, "/a/r.html")
        XCTAssertEqual(RunReportFiles.htmlURL(forJSON: URL(fileURLWithPath: "/a/r")).path, "/a/r.html")
    }

    /// Entries carry their LlamaLinear; the JSON still names the tensor, and reports written before the `linear`
    /// key existed are read by that name. A name that is not the linear of its block is refused.
    func testReportEntriesCarryTheirLinearAndOlderReportsAreRead() throws {
        let written = report(method: "sparsegpt", blocks: 2)
        let json = try JSONSerialization.jsonObject(with: written.jsonData()) as! [String: Any]
        var entries = json["linears"] as! [[String: Any]]
        XCTAssertEqual(entries[8]["name"] as? String, "model.layers.1.self_attn.k_proj.weight")
        XCTAssertEqual(entries[8]["linear"] as? String, "self_attn.k_proj")

        for i in entries.indices { entries[i]["linear"] = nil }
        var older = json
        older["linears"] = entries
        let read = try JSONDecoder().decode(RunReport.self, from: JSONSerialization.data(withJSONObject: older))
        XCTAssertEqual(read.linears.map(\.linear), written.linears.map(\.linear))
        XCTAssertEqual(read.linears.map(\.layer), written.linears.map(\.layer))

        entries[8]["name"] = "model.layers.0.self_attn.k_proj.weight"  // block 0's name on an entry of block 1
        older["linears"] = entries
        XCTAssertThrowsError(try JSONDecoder().decode(RunReport.self, from: JSONSerialization.data(withJSONObject: older))) { error in
            XCTAssertTrue("\(error)".contains("is not the weight of a linear of block 1"), "\(error)")
        }
    }
}
