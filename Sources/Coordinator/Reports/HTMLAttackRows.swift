import Foundation

extension HTMLReport {
    /// TextAttack's figures as rows of the evaluation table, one block per recipe found in the runs' entries
    /// (`attack.<recipe>.<figure>`, DistributedAttack.reportEntries).
    static func attackRows(_ runs: [Run], keys: Set<String>) -> String {
        let figures: [(key: String, name: String, percent: Bool)] = [
            ("clean_accuracy", "clean accuracy", true), ("accuracy_under_attack", "accuracy under attack (Aua)", true),
            ("attack_success_rate", "attack success rate (Asr)", true), ("average_perturbed_word_percent", "perturbed words", false),
            ("average_queries", "queries per example", false),
        ]
        var html = ""
        for recipe in AttackSettings.Recipe.allCases where keys.contains("attack.\(recipe.rawValue).clean_accuracy") {
            let prefix = "attack.\(recipe.rawValue)."
            let examples = runs[0].report.evaluation?[prefix + "documents"].map { " (\(Int($0)) examples)" } ?? ""
            html += "<tr><th>attack \(recipe.rawValue)\(examples)</th>" + runs.map { _ in "<th></th>" }.joined() + "</tr>\n"
            for figure in figures {
                html += "<tr><td>\(escape(figure.name))</td>" + runs.map { run in
                    let value = run.report.evaluation?[prefix + figure.key]
                    let text = value.map { figure.percent ? String(format: "%.2f %%", 100 * $0) : figure.key.hasSuffix("percent") ? String(format: "%.2f %%", $0) : String(format: "%.2f", $0) }
                    return "<td>\(text ?? "–")</td>"
                }.joined() + "</tr>\n"
            }
        }
        return html
    }
}
