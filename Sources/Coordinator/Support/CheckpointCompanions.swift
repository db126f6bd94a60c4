import Engine
import Foundation

/// What makes an output folder usable by others besides its tensors: the input's tokenizer, chat and
/// generation files, a model card, and config.json entries saying how the model was made and how sparse it is.
enum CheckpointCompanions {
    /// Files of the input that are weights or are written anew, never copied.
    static let weightExtensions: Set<String> = ["safetensors", "bin", "pt", "pth", "ckpt", "h5", "msgpack", "gguf", "onnx", "npz", "npy"]
    static let writtenAnew: Set<String> = ["config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json",
                                           "prune-report.json", "prune-report.html", "soup-report.json", "README.md"]

    /// The input's regular, visible files that are neither weights nor written anew: tokenizer.json,
    /// tokenizer_config.json, special_tokens_map.json, added_tokens.json, chat_template.jinja, vocab.json,
    /// merges.txt, tokenizer.model, generation_config.json, licences… Folders are not copied.
    static func filesToCopy(from source: URL) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: source.path)
        return names.filter { name in
            guard !name.hasPrefix("."), !writtenAnew.contains(name),
                  !weightExtensions.contains(URL(fileURLWithPath: name).pathExtension.lowercased()) else { return false }
            let attributes = try? FileManager.default.attributesOfItem(atPath: source.appendingPathComponent(name).path)
            return attributes?[.type] as? FileAttributeType == .typeRegular
        }.sorted()
    }

    static func copy(from source: URL, to folder: URL) throws {
        for name in try filesToCopy(from: source) {
            let target = folder.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: target.path) { try FileManager.default.removeItem(at: target) }
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: target)
        }
    }

    static let unstructuredMethods: Set<String> = ["magnitude", "wanda", "sparsegpt", "krp"]

    /// compressed-tensors' sparsity description (its `SparsityCompressionConfig`, registry name "dense": the
    /// weights are stored as ordinary dense tensors with zeros) for an unstructured or N:M run, nil otherwise.
    /// Written at the top level of config.json, not under `quantization_config`: transformers then loads the
    /// folder as the plain dense checkpoint it is, without the compressed-tensors package (docs/decisions.md).
    static func sparsityConfig(report: [String: Any]) -> [String: Any]? {
        guard let method = report["method"] as? String, unstructuredMethods.contains(method),
              let pattern = report["pattern"] as? String, let overall = report["overall_sparsity"] as? Double else { return nil }
        let structure = pattern.hasPrefix("unstructured") ? "unstructured" : pattern
        // Linears left dense (--ignore, in compressed-tensors' own name/re: syntax), and under an N:M structure
        // the targets overridden to another sparsity, are not what `sparsity_structure` says.
        var ignore = ["lm_head"] + (report["ignore"] as? [String] ?? []).filter { $0 != "lm_head" }
        if structure != "unstructured" {
            for text in report["sparsity_overrides"] as? [String] ?? [] {
                guard let equals = text.lastIndex(of: "="), text[text.index(after: equals)...] != Substring(structure) else { continue }
                ignore.append(String(text[..<equals]))
            }
        }
        return ["format": "dense", "sparsity_structure": structure, "global_sparsity": overall,
                "targets": ["Linear"], "ignore": ignore, "registry_requires_subclass": false]
    }

    /// config.json's `prune_dist` entry: the method and its figures with the run's provenance.
    static func pruneDistEntry(report: [String: Any]) -> [String: Any] {
        var entry: [String: Any] = [:]
        for key in ["method", "pattern", "sparsity_target", "overall_sparsity", "ratio", "importance", "aggregation",
                    "samples", "seqlen", "seed", "ranks", "parameters_before", "parameters_after", "model", "recipe"] {
            if let value = report[key] { entry[key == "model" ? "base_model" : key] = value }
        }
        if let provenance = report["provenance"] { entry["provenance"] = provenance }
        return entry
    }

    /// Adds `prune_dist` and (for sparse runs) `sparsity_config` to a config.json object.
    static func annotate(config: inout [String: Any], reportData: Data?) {
        guard let reportData, let report = try? JSONSerialization.jsonObject(with: reportData) as? [String: Any] else { return }
        config["prune_dist"] = pruneDistEntry(report: report)
        config["sparsity_config"] = sparsityConfig(report: report)
    }

    /// The model card (README.md) of an output folder, from its run report.
    static func modelCard(report: [String: Any], folderName: String) -> String {
        let method = report["method"] as? String ?? "?"
        let provenance = report["provenance"] as? [String: Any]
        var tags = ["prune-dist", "pruned", method]
        let sparse = sparsityConfig(report: report)
        if let structure = sparse?["sparsity_structure"] as? String { tags.append(structure == "unstructured" ? "sparse" : "sparse-\(structure)") }
        var lines = ["---", "library_name: transformers", "tags:"] + tags.map { "- \($0)" } + ["---", ""]
        lines.append("# \(folderName)")
        lines.append("")
        let base = report["model"] as? String ?? "?"
        lines.append("`\(URL(fileURLWithPath: base).lastPathComponent)` pruned with prune-dist \(provenance?["version"] as? String ?? "") by **\(method)**, without retraining.")
        lines.append("")
        lines.append("| | |")
        lines.append("|---|---|")
        func row(_ name: String, _ value: Any?) { if let value { lines.append("| \(name) | \(value) |") } }
        row("base model", "`\(base)`")
        row("method", method)
        if let pattern = report["pattern"] as? String { row("sparsity pattern", pattern) }
        if let overall = report["overall_sparsity"] as? Double { row("zeros in the blocks' linears", String(format: "%.2f %%", overall * 100)) }
        if let ratio = report["ratio"] as? Double { row("structured ratio", ratio) }
        if let before = report["parameters_before"] as? Int, let after = report["parameters_after"] as? Int {
            row("parameters", "\(before) → \(after)")
        }
        if let samples = report["samples"], let seqlen = report["seqlen"] { row("calibration", "\(samples) × \(seqlen) tokens, seed \(report["seed"] ?? "?")") }
        if let calibration = provenance?["calibration"] as? [String: Any] {
            row("calibration file", "`\(calibration["path"] ?? "?")` (\(calibration["bytes"] ?? "?") bytes, sha256 `\(calibration["sha256"] ?? "?")`)")
        }
        row("ranks", report["ranks"])
        if let provenance {
            row("dtype", "\(provenance["input_dtype"] ?? "?") → \(provenance["output_dtype"] ?? "?")")
            row("prune-dist", "\(provenance["version"] ?? "?"), commit `\(provenance["git_commit"] ?? "?")`\((provenance["git_dirty"] as? Bool) == true ? " (with local changes)" : "")")
            row("date", provenance["date"])
            row("hosts", (provenance["hosts"] as? [String])?.joined(separator: ", "))
        }
        if let evaluation = report["evaluation"] as? [String: Double], !evaluation.isEmpty {
            let dense = report["dense_evaluation"] as? [String: Double]
            lines += ["", "## Evaluation", ""]
            lines += dense == nil ? ["| measure | value |", "|---|---|"]
                : ["| measure | dense | pruned | difference |", "|---|---|---|---|"]
            // The first text is also under the plain "perplexity" keys (older reports): shown once, by its label.
            let labelled = evaluation.keys.contains { $0.hasPrefix("perplexity.") && !$0.hasSuffix(".seqlen") && !$0.hasSuffix(".windows") }
            for key in evaluation.keys.sorted() where DenseEvaluation.isMeasure(key) && !(labelled && key == "perplexity") {
                let detail = [evaluation["\(key).windows"].map { "\(Int($0)) windows" }, evaluation["\(key).seqlen"].map { "of \(Int($0)) tokens" }]
                    .compactMap { $0 }.joined(separator: " ")
                let name = "\(key)\(detail.isEmpty ? "" : " (\(detail))")"
                let value = evaluation[key]!
                if let dense, let d = dense[key] {
                    lines.append("| \(name) | \(String(format: "%.4f", d)) | \(String(format: "%.4f", value)) | \(String(format: "%+.4f", value - d)) |")
                } else if dense != nil {
                    lines.append("| \(name) | | \(String(format: "%.4f", value)) | |")
                } else {
                    lines.append("| \(name) | \(String(format: "%.4f", value)) |")
                }
            }
        }
        if let command = provenance?["command_line"] as? String {
            lines += ["", "## Command", "", "```", command, "```"]
        }
        if let recipe = report["recipe"] as? String {
            lines += ["", "## Recipe", "", "Save as `recipe.yaml` and run `prune-dist prune --model DIR --out DIR --recipe recipe.yaml` to repeat the run:",
                      "", "```yaml", recipe.trimmingCharacters(in: .newlines), "```"]
        }
        lines += ["", "## Use", "",
                  "A plain Hugging Face checkpoint (LlamaForCausalLM layout, the input's tokenizer and chat template):", "",
                  "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained(\"\(folderName)\")",
                  "tokenizer = AutoTokenizer.from_pretrained(\"\(folderName)\")", "```", "",
                  "or `prune-dist generate --model \(folderName) --prompt \"…\" --chat`."]
        if sparse != nil {
            lines += ["", "The zeros are stored densely. config.json's `sparsity_config` describes them in compressed-tensors' terms "
                      + "(format `dense`, `sparsity_structure`, `global_sparsity`); it sits at the top level so transformers loads the "
                      + "folder without extra packages. To let vLLM pick its sparse kernels, move it under a `quantization_config` "
                      + "with `\"quant_method\": \"compressed-tensors\"` (then transformers needs the compressed-tensors package)."]
        }
        lines += ["", "The full run report is `prune-report.json` (and `prune-report.html`) in this folder.", ""]
        return lines.joined(separator: "\n")
    }

    static func writeModelCard(reportData: Data, folder: URL, name: String? = nil) throws {
        guard let report = try JSONSerialization.jsonObject(with: reportData) as? [String: Any] else { return }
        let card = modelCard(report: report, folderName: name ?? folder.lastPathComponent)
        try writeFileAtomically(Data(card.utf8), to: folder.appendingPathComponent("README.md"))
    }
}
