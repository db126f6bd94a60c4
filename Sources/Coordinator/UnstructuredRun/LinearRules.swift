import Engine
import Foundation

/// Which linears a run leaves dense (`--ignore`) and which get their own sparsity (`--sparsity-override`),
/// matched by module name as llm-compressor's recipes do: `model.layers.3.mlp.down_proj` exactly, or a
/// regular expression after `re:` that must match the whole name (`re:.*down_proj`).
struct LinearRules: Sendable, Equatable {
    /// One `--sparsity-override TARGET=VALUE`: the linears matching `target` are pruned to `pattern`.
    struct Override: Sendable, Equatable {
        var target: String
        var pattern: SparsityPattern
    }

    var ignore: [String] = []
    var overrides: [Override] = []

    var isEmpty: Bool { ignore.isEmpty && overrides.isEmpty }

    /// Names no block linear has but that recipes commonly list (the head is never pruned): accepted, matching nothing.
    static let alwaysDense = ["lm_head"]

    /// `--sparsity-override 're:model\.layers\.0\..*=0.3'` or `…=2:4`; the value after the last `=`.
    static func parseOverride(_ text: String) throws -> Override {
        guard let equals = text.lastIndex(of: "="), equals != text.startIndex else {
            throw PruneDistError(.argument, "--sparsity-override must be TARGET=SPARSITY or TARGET=N:M (e.g. re:.*down_proj=0.3), got \"\(text)\"")
        }
        let target = String(text[..<equals]), value = String(text[text.index(after: equals)...])
        try checkTarget(target, option: "--sparsity-override")
        let pattern: SparsityPattern
        if value.contains(":") {
            pattern = try SparsityPattern.parse(nOfM: value)
        } else {
            guard let fraction = Double(value) else {
                throw PruneDistError(.argument, "--sparsity-override \(text): \"\(value)\" is not a sparsity in [0, 1) or an N:M pattern")
            }
            pattern = try SparsityPattern.resolve(sparsity: fraction, pattern: nil)
        }
        return Override(target: target, pattern: pattern)
    }

    /// A `re:` target must be a valid regular expression.
    static func checkTarget(_ target: String, option: String) throws {
        guard target.hasPrefix("re:") else {
            if target.isEmpty { throw PruneDistError(.argument, "\(option): empty target") }
            return
        }
        do { _ = try NSRegularExpression(pattern: String(target.dropFirst(3))) } catch {
            throw PruneDistError(.argument, "\(option) \(target): not a regular expression (\(error.localizedDescription))")
        }
    }

    /// `model.layers.3.mlp.down_proj`: the name targets are matched against (the weight's name without `.weight`).
    static func moduleName(layer: Int, linear: LlamaLinear) -> String { "model.layers.\(layer).\(linear.rawValue)" }

    static func matches(_ target: String, _ module: String) -> Bool {
        guard target.hasPrefix("re:") else { return target == module }
        guard let regex = try? NSRegularExpression(pattern: "^(?:" + target.dropFirst(3) + ")$") else { return false }
        return regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
    }

    func isIgnored(layer: Int, linear: LlamaLinear) -> Bool {
        let module = Self.moduleName(layer: layer, linear: linear)
        return ignore.contains { Self.matches($0, module) }
    }

    /// The pattern of one linear: the last override matching it, else the block's pattern; nil when ignored.
    func pattern(layer: Int, linear: LlamaLinear, block: SparsityPattern) -> SparsityPattern? {
        if isIgnored(layer: layer, linear: linear) { return nil }
        let module = Self.moduleName(layer: layer, linear: linear)
        return overrides.last { Self.matches($0.target, module) }?.pattern ?? block
    }

    /// A target that matches no linear of the model is a mistake (a typo would otherwise prune what was meant
    /// to stay dense): refused, naming it.
    func checkTargets(layers: Int) throws {
        let modules = (0..<layers).flatMap { layer in LlamaLinear.allCases.map { Self.moduleName(layer: layer, linear: $0) } }
        let targets = ignore.map { ("--ignore", $0) } + overrides.map { ("--sparsity-override", $0.target) }
        for (option, target) in targets where !Self.alwaysDense.contains(target) {
            if !modules.contains(where: { Self.matches(target, $0) }) {
                throw PruneDistError(.argument, "\(option) \(target) matches no linear of the model (names look like \(modules.first ?? "model.layers.0.self_attn.q_proj"); a regular expression starts with re:)")
            }
        }
    }
}
