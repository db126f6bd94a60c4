import Foundation

/// The figures TextAttack prints after an attack (its AttackSummary table), from the outcomes of every example.
public struct AttackSummary: Sendable, Equatable {
    public var examples: Int
    public var succeeded: Int
    public var failed: Int
    public var skipped: Int
    /// Correct on the clean text: (total − skipped) / total.
    public var cleanAccuracy: Double
    /// Accuracy under attack (Aua): failed / total.
    public var accuracyUnderAttack: Double
    /// Attack success rate (Asr): succeeded / (succeeded + failed); 0 when nothing was attacked.
    public var attackSuccessRate: Double
    /// Mean over successful attacks of changed words / words, in %.
    public var averagePerturbedWordPercent: Double
    /// Mean words per example, all examples.
    public var averageWords: Double
    /// Mean queries over the attacked (succeeded or failed) examples.
    public var averageQueries: Double

    public init(outcomes: [AttackOutcome]) {
        examples = outcomes.count
        succeeded = outcomes.filter { $0.status == .succeeded }.count
        failed = outcomes.filter { $0.status == .failed }.count
        skipped = outcomes.filter { $0.status == .skipped }.count
        let n = Double(max(examples, 1))
        cleanAccuracy = Double(examples - skipped) / n
        accuracyUnderAttack = Double(failed) / n
        attackSuccessRate = succeeded + failed == 0 ? 0 : Double(succeeded) / Double(succeeded + failed)
        let successes = outcomes.filter { $0.status == .succeeded }
        averagePerturbedWordPercent = successes.isEmpty ? 0
            : successes.map { 100 * Double($0.perturbedWords) / Double(max($0.words, 1)) }.reduce(0, +) / Double(successes.count)
        averageWords = outcomes.isEmpty ? 0 : Double(outcomes.map(\.words).reduce(0, +)) / n
        let attacked = outcomes.filter { $0.status != .skipped }
        averageQueries = attacked.isEmpty ? 0 : Double(attacked.map(\.queries).reduce(0, +)) / Double(attacked.count)
    }

    /// TextAttack's table.
    public var table: String {
        let rows: [(String, String)] = [
            ("Number of successful attacks:", "\(succeeded)"),
            ("Number of failed attacks:", "\(failed)"),
            ("Number of skipped attacks:", "\(skipped)"),
            ("Original accuracy:", String(format: "%.2f%%", 100 * cleanAccuracy)),
            ("Accuracy under attack:", String(format: "%.2f%%", 100 * accuracyUnderAttack)),
            ("Attack success rate:", String(format: "%.2f%%", 100 * attackSuccessRate)),
            ("Average perturbed word %:", String(format: "%.2f%%", averagePerturbedWordPercent)),
            ("Average num. words per input:", String(format: "%.2f", averageWords)),
            ("Avg num queries:", String(format: "%.2f", averageQueries)),
        ]
        let left = rows.map(\.0.count).max()!, right = rows.map(\.1.count).max()!
        let rule = "+" + String(repeating: "-", count: left + 2) + "+" + String(repeating: "-", count: right + 2) + "+"
        var lines = [rule, "| " + "Attack Results".padding(toLength: left, withPad: " ", startingAt: 0) + " | " + String(repeating: " ", count: right) + " |", rule]
        for (name, value) in rows {
            lines.append("| " + name.padding(toLength: left, withPad: " ", startingAt: 0) + " | "
                         + String(repeating: " ", count: right - value.count) + value + " |")
        }
        lines.append(rule)
        return lines.joined(separator: "\n")
    }

    public var jsonObject: [String: Any] {
        ["examples": examples, "succeeded": succeeded, "failed": failed, "skipped": skipped,
         "clean_accuracy": cleanAccuracy, "accuracy_under_attack": accuracyUnderAttack, "attack_success_rate": attackSuccessRate,
         "average_perturbed_word_percent": averagePerturbedWordPercent, "average_words": averageWords, "average_queries": averageQueries]
    }
}
