import Foundation
import XCTest
@testable import Coordinator

/// `report --table md|csv|latex`: one row per run (and the dense model), a column per evaluated text, the zero-shot
/// average, sparsity and time, with each format's escaping.
final class RunComparisonTableTests: XCTestCase {
    private func report(method: String, sparsity: Double, seconds: Double, evaluation: [String: Double]?, dense: [String: Double]? = nil) -> RunReport {
        var report = RunReport(tool: "prune-dist", version: "0", model: "/m", output: "/o", method: method, pattern: "unstructured 50%",
                               sparsityTarget: 0.5, trueSequential: false, samples: 4, seqlen: 32, seed: 0, ranks: 1, linears: [], blocks: [],
                               rankUsage: [], totalSeconds: seconds, overallSparsity: sparsity, evaluation: evaluation)
        report.denseEvaluation = dense
        return report
    }

    private var runs: [HTMLReport.Run] {
        let dense = ["perplexity": 10.0, "perplexity.wiki": 10.0, "perplexity.tempest": 30.0, "perplexity.wiki.seqlen": 512]
        return [
            HTMLReport.Run(label: "krp 50%", report: report(method: "krp", sparsity: 0.5, seconds: 12.34,
                                                           evaluation: ["perplexity": 12.3456, "perplexity.wiki": 12.3456, "perplexity.wiki.windows": 8,
                                                                        "perplexity.tempest": 40.5, "zeroshot.average.acc": 0.41, "zeroshot.average.acc_norm": 0.43],
                                                           dense: dense)),
            HTMLReport.Run(label: "wanda_2:4 & more", report: report(method: "wanda", sparsity: 0.5, seconds: 3,
                                                                      evaluation: ["perplexity": 20, "perplexity.wiki": 20])),
        ]
    }

    func testMarkdownHasADenseRowAndAColumnPerText() {
        XCTAssertEqual(RunComparisonTable.render(runs, format: .md), """
        | run | method | pattern | sparsity | ppl tempest | ppl wiki | zero-shot avg acc | zero-shot avg acc_norm | time (s) |
        | --- | --- | --- | --- | --- | --- | --- | --- | --- |
        | dense | – | – | 0 | 30.000 | 10.000 | – | – | – |
        | krp 50% | krp | unstructured 50% | 0.5000 | 40.500 | 12.346 | 0.4100 | 0.4300 | 12.3 |
        | wanda_2:4 & more | wanda | unstructured 50% | 0.5000 | – | 20.000 | – | – | 3.0 |

        """)
    }

    func testCSVAndLaTeXEscapeTheirSpecialCharacters() {
        let csv = RunComparisonTable.render([HTMLReport.Run(label: "a, \"b\"", report: runs[1].report)], format: .csv)
        XCTAssertEqual(csv, "run,method,pattern,sparsity,ppl wiki,time (s)\n\"a, \"\"b\"\"\",wanda,unstructured 50%,0.5000,20.000,3.0\n")
        let latex = RunComparisonTable.render(runs, format: .latex)
        XCTAssertTrue(latex.hasPrefix("\\begin{tabular}{lrrrrrrrr}\n\\toprule\nrun & method & pattern & sparsity & ppl tempest"), latex)
        XCTAssertTrue(latex.contains("wanda\\_2:4 \\& more & wanda & unstructured 50\\% & 0.5000 & -- & 20.000 & -- & -- & 3.0 \\\\"), latex)
        XCTAssertTrue(latex.hasSuffix("\\bottomrule\n\\end{tabular}\n"))
    }

    /// The HTML page of several runs starts with the same table; a single run's page has none.
    func testTheHTMLPageOfSeveralRunsHasTheTable() {
        let html = HTMLReport.render(runs)
        XCTAssertTrue(html.contains("<h2>Runs side by side</h2>"))
        XCTAssertTrue(html.contains("<tr><td>wanda_2:4 &amp; more</td><td>wanda</td><td>unstructured 50%</td><td>0.5000</td><td>–</td><td>20.000</td>"), html)
        XCTAssertFalse(HTMLReport.render([runs[0]]).contains("Runs side by side"))
    }
}
