import ArgumentParser
import Engine
import Foundation
import Yams

/// A prune run as a YAML file (`prune --recipe FILE.yaml`), in the spirit of llm-compressor's recipes: the
/// method, its sparsity, pattern or ratio, the calibration data, the method's options, the linears left dense
/// and per-linear sparsities. Every key is one of prune's options, so a recipe is a command line written down:
/// `--recipe` expands it into those options before parsing (docs/recipes.md). Every report embeds the recipe of
/// its run, with every default written out, so the run can be repeated from its report.
///
///     prune_dist_recipe: 1
///     method: krp
///     sparsity: 0.5                 # or pattern: 2:4, or (structured) ratio: 0.27
///     calibration: {file: /data/calib.txt, samples: 128, seqlen: 512, seed: 0}
///     options: {true-sequential: true, krp-ridge: 3}
///     ignore: [lm_head, "re:.*down_proj"]
///     overrides:
///       - targets: ["re:model\\.layers\\.0\\..*"]
///         sparsity: 0.3
struct PruneRecipe: Equatable {
    var method: String
    /// "sparsity", "pattern" or "ratio" with its value as written.
    var amount: [(key: String, value: String)] = []
    /// "file", "samples", "seqlen", "seed".
    var calibration: [(key: String, value: String)] = []
    /// A prune option's long name (without "--") and its value; flags are "true" or "false".
    var options: [(key: String, value: String)] = []
    var ignore: [String] = []
    /// Each override: its targets and its value (a sparsity, or N:M).
    var overrides: [(targets: [String], value: String)] = []

    static func == (a: PruneRecipe, b: PruneRecipe) -> Bool { a.arguments() == b.arguments() }

    static let version = "1"
    static let amountKeys = ["sparsity", "pattern", "ratio"]
    static let calibrationKeys = ["file": "--calib", "samples": "--samples", "seqlen": "--seqlen", "seed": "--seed"]
    /// On/off options: `key: true` is `--key`, `key: false` is `--no-key`.
    static let flagOptions = ["true-sequential", "krp-ridge-per-input"]
    /// Options that change what is pruned. Paths of the run (--model, --out, --report), evaluation, --resume,
    /// --weights and --threads are the command line's: they say where and how a run happens, not what it does.
    static let valueOptions = [
        "blocksize", "percdamp", "krp-ridge", "krp-correction", "allocation", "owl-threshold", "owl-lambda", "dtype",
        "importance", "aggregation", "calib-draw", "block-start", "block-end", "trials", "pool", "search-seed",
        "min-document-tokens", "sample-choices", "seed-choices", "terms", "beta-vector", "beta-el1", "beta-el2",
        "objective-windows", "objective-seqlen", "gamma", "startup-trials", "parallel-trials",
    ]

    // MARK: Reading

    /// Parses a recipe file; an unknown key, a value of the wrong kind or a missing method is refused naming the
    /// key and the file.
    static func read(_ url: URL) throws -> PruneRecipe {
        let path = url.path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--recipe \(path): no such file or not readable")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ValidationError("--recipe \(path): not UTF-8 text") }
        return try parse(text, file: path)
    }

    static func parse(_ text: String, file: String) throws -> PruneRecipe {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ValidationError("--recipe \(file): not valid YAML: \(error)")
        }
        func where_(_ node: Node) -> String { node.mark.map { " (line \($0.line))" } ?? "" }
        func scalar(_ node: Node, _ key: String) throws -> String {
            guard let value = node.scalar?.string else { throw ValidationError("--recipe \(file): \(key) must be a single value\(where_(node))") }
            return value
        }
        func list(_ node: Node, _ key: String) throws -> [String] {
            if let value = node.scalar?.string { return [value] }
            guard let items = node.sequence else { throw ValidationError("--recipe \(file): \(key) must be a list\(where_(node))") }
            return try items.map { try scalar($0, key) }
        }
        func mapping(_ node: Node, _ key: String) throws -> [(String, Node)] {
            guard let pairs = node.mapping else { throw ValidationError("--recipe \(file): \(key) must be a mapping of key: value\(where_(node))") }
            return try pairs.map { (try scalar($0.key, "a key of \(key)"), $0.value) }
        }
        guard let root else { throw ValidationError("--recipe \(file): empty; a recipe needs at least method:") }
        var recipe = PruneRecipe(method: "")
        var method: String?
        for (key, value) in try mapping(root, "the recipe") {
            switch key {
            case "prune_dist_recipe":
                guard try scalar(value, key) == version else {
                    throw ValidationError("--recipe \(file): prune_dist_recipe \(value.string ?? "?") is not a version this prune-dist reads (\(version))")
                }
            case "method": method = try scalar(value, key)
            case _ where amountKeys.contains(key): recipe.amount.append((key, try scalar(value, key)))
            case "calibration":
                for (inner, v) in try mapping(value, key) {
                    guard calibrationKeys[inner] != nil else {
                        throw ValidationError("--recipe \(file): unknown key calibration.\(inner)\(where_(v)) (file, samples, seqlen, seed)")
                    }
                    recipe.calibration.append((inner, try scalar(v, "calibration.\(inner)")))
                }
            case "options":
                for (inner, v) in try mapping(value, key) {
                    guard flagOptions.contains(inner) || valueOptions.contains(inner) else {
                        throw ValidationError("--recipe \(file): unknown key options.\(inner)\(where_(v)); recipe options are \((flagOptions + valueOptions).joined(separator: ", ")) (paths, evaluation, --resume, --weights and --threads go on the command line)")
                    }
                    let text = try scalar(v, "options.\(inner)")
                    if flagOptions.contains(inner), !["true", "false"].contains(text) {
                        throw ValidationError("--recipe \(file): options.\(inner) must be true or false, got \(text)")
                    }
                    recipe.options.append((inner, text))
                }
            case "ignore": recipe.ignore = try list(value, key)
            case "overrides":
                guard let items = value.sequence else { throw ValidationError("--recipe \(file): overrides must be a list of {targets, sparsity}\(where_(value))") }
                for item in items {
                    var targets: [String]?, amount: String?
                    for (inner, v) in try mapping(item, "an override") {
                        switch inner {
                        case "targets": targets = try list(v, "overrides.targets")
                        case "sparsity", "pattern": amount = try scalar(v, "overrides.\(inner)")
                        default: throw ValidationError("--recipe \(file): unknown key overrides.\(inner)\(where_(v)) (targets, sparsity or pattern)")
                        }
                    }
                    guard let targets, !targets.isEmpty, let amount else {
                        throw ValidationError("--recipe \(file): each override needs targets and a sparsity (or pattern)\(where_(item))")
                    }
                    recipe.overrides.append((targets, amount))
                }
            default:
                throw ValidationError("--recipe \(file): unknown key \(key)\(where_(value)); a recipe has prune_dist_recipe, method, sparsity | pattern | ratio, calibration, options, ignore, overrides")
            }
        }
        guard let method else { throw ValidationError("--recipe \(file): no method: key") }
        recipe.method = method
        return recipe
    }

    // MARK: Arguments

    /// The recipe as prune's options, in the recipe's order.
    func arguments() -> [String] {
        var out = ["--method", method]
        for (key, value) in amount { out += ["--\(key)", value] }
        for (key, value) in calibration { out += [Self.calibrationKeys[key]!, value] }
        for (key, value) in options {
            if Self.flagOptions.contains(key) { out.append(value == "true" ? "--\(key)" : "--no-\(key)") } else { out += ["--\(key)", value] }
        }
        for target in ignore { out += ["--ignore", target] }
        for (targets, value) in overrides { for target in targets { out += ["--sparsity-override", "\(target)=\(value)"] } }
        return out
    }

    /// Every spelling of an option the recipe sets (`--seqlen`, and `--no-true-sequential` for a flag).
    private func optionNames() -> Set<String> {
        var names: Set<String> = ["--method"]
        for (key, _) in amount { names.insert("--\(key)") }
        for (key, _) in calibration { names.insert(Self.calibrationKeys[key]!) }
        for (key, _) in options { names.insert("--\(key)"); if Self.flagOptions.contains(key) { names.insert("--no-\(key)") } }
        if !ignore.isEmpty { names.insert("--ignore") }
        if !overrides.isEmpty { names.insert("--sparsity-override") }
        return names
    }

    /// `prune … --recipe FILE …` with the recipe's options added. An option given both on the command line and in
    /// the recipe is refused (exit 64) rather than one silently winning. Other command lines are returned as they are.
    /// - arguments: the process's arguments without the program name
    static func expand(_ arguments: [String]) throws -> [String] {
        guard arguments.first == "prune" else { return arguments }
        var file: String?
        for (i, argument) in arguments.enumerated() {
            if argument == "--" { break }
            if argument == "--recipe", i + 1 < arguments.count { file = arguments[i + 1] }
            if argument.hasPrefix("--recipe=") { file = String(argument.dropFirst("--recipe=".count)) }
        }
        guard let file else { return arguments }
        let recipe = try read(URL(fileURLWithPath: file))
        let names = recipe.optionNames()
        for argument in arguments {
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if names.contains(name) {
                throw ValidationError("\(name) is given on the command line and in --recipe \(file); give it in one place (the recipe's options are \(names.sorted().joined(separator: " ")))")
            }
        }
        return arguments + recipe.arguments()
    }

    // MARK: Writing

    /// The recipe as YAML, with a comment saying how to run it.
    func yaml() throws -> String {
        func scalar(_ text: String) -> Node { Node(text) }
        func pairs(_ list: [(key: String, value: String)]) -> Node { Node(list.map { (scalar($0.key), scalar($0.value)) }) }
        var top: [(Node, Node)] = [(scalar("prune_dist_recipe"), scalar(Self.version)), (scalar("method"), scalar(method))]
        for (key, value) in amount { top.append((scalar(key), scalar(value))) }
        if !calibration.isEmpty { top.append((scalar("calibration"), pairs(calibration))) }
        if !options.isEmpty { top.append((scalar("options"), pairs(options))) }
        if !ignore.isEmpty { top.append((scalar("ignore"), Node(ignore.map(scalar)))) }
        if !overrides.isEmpty {
            top.append((scalar("overrides"), Node(overrides.map { entry in
                Node([(scalar("targets"), Node(entry.targets.map(scalar))),
                      (scalar(entry.value.contains(":") ? "pattern" : "sparsity"), scalar(entry.value))])
            })))
        }
        return "# prune-dist recipe: prune-dist prune --model DIR --out DIR --recipe THIS_FILE\n"
            + (try Yams.serialize(node: Node(top), allowUnicode: true))
    }
}

extension PruneCommand {
    /// This run as a recipe, every setting that changes the result written out (defaults included), so that the
    /// recipe repeats the run even if a later version changes a default.
    func runRecipe() throws -> PruneRecipe {
        var recipe = PruneRecipe(method: method.rawValue)
        func number(_ value: Double) -> String { "\(value)" }
        if method.isStructured {
            recipe.amount = [("ratio", number(structured.ratio ?? 0))]
        } else if let pattern, case let .nOfM(n, m) = pattern {
            recipe.amount = [("pattern", "\(n):\(m)")]
        } else {
            recipe.amount = [("sparsity", number(sparsity ?? 0))]
        }
        if let calib {
            recipe.calibration = [("file", URL(fileURLWithPath: calib).standardizedFileURL.path)]
            if method != .adapruner || samples != nil { recipe.calibration.append(("samples", "\(resolvedSamples)")) }
            recipe.calibration += [("seqlen", "\(seqlen)"), ("seed", "\(seed)")]
        }
        var options: [(key: String, value: String)] = []
        if method.isStructured {
            let s = structured
            options.append(("importance", (s.importance ?? .el1).rawValue))
            options.append(("aggregation", (s.aggregation ?? .sum).rawValue))
            let given: [(String, String?)] = [
                ("calib-draw", s.calibDraw?.rawValue), ("block-start", s.blockStart.map(String.init)), ("block-end", s.blockEnd.map(String.init)),
                ("trials", adapruner.trials.map(String.init)), ("pool", adapruner.pool.map { URL(fileURLWithPath: $0).standardizedFileURL.path }),
                ("search-seed", adapruner.searchSeed.map(String.init)), ("min-document-tokens", adapruner.minDocumentTokens.map(String.init)),
                ("sample-choices", adapruner.sampleChoices), ("seed-choices", adapruner.seedChoices.map(String.init)), ("terms", adapruner.terms),
                ("beta-vector", adapruner.betaVector), ("beta-el1", adapruner.betaEl1), ("beta-el2", adapruner.betaEl2),
                ("objective-windows", adapruner.objectiveWindows.map(String.init)), ("objective-seqlen", adapruner.objectiveSeqlen.map(String.init)),
                ("gamma", adapruner.gamma.map(number)), ("startup-trials", adapruner.startupTrials.map(String.init)),
                ("parallel-trials", adapruner.parallelTrials.map(String.init)),
            ]
            options += given.compactMap { key, value in value.map { (key, $0) } }
        } else {
            options.append(("true-sequential", "\(try trueSequential ?? method.trueSequentialByDefault(pattern: sparsityPattern()))"))
            if method == .sparsegpt || method == .krp {
                options += [("blocksize", "\(resolvedBlocksize)"), ("percdamp", number(resolvedPercdamp))]
            }
            if method == .krp {
                options += [("krp-ridge", krpRidge), ("krp-ridge-per-input", "\(krpRidgePerInput)"), ("krp-correction", number(krpCorrection))]
            }
            options.append(("allocation", allocation.rawValue))
            if allocation == .owl { options += [("owl-threshold", number(owlThreshold)), ("owl-lambda", number(owlLambda))] }
        }
        if let dtype { options.append(("dtype", dtype.torchName)) }
        recipe.options = options
        recipe.ignore = ignore
        recipe.overrides = sparsityOverride.map { text in
            let equals = text.lastIndex(of: "=")!
            return ([String(text[..<equals])], String(text[text.index(after: equals)...]))
        }
        return recipe
    }
}
