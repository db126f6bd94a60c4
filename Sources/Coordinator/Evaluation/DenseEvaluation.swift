import Engine
import Foundation
import Logging
import Worker

/// `prune --eval-*` also evaluates the dense model, so the report can show dense → pruned. The dense figures
/// depend only on the input model and the evaluation settings, so they are computed once and cached in the
/// output's parent folder (`.prune-dist-dense-eval-MODEL-EVAL.json`), keyed by a hash of the model and one of
/// the evaluation: the next run on the same model and texts reads them instead of evaluating again.
enum DenseEvaluation {
    /// The measures compared (counts and settings such as `.seqlen`, `.windows`, `.documents` are not).
    static func isMeasure(_ key: String) -> Bool {
        !(key.hasSuffix(".seqlen") || key.hasSuffix(".windows") || key.hasSuffix(".limit") || key.hasSuffix(".documents")
          || key.hasSuffix("_stderr"))
    }

    /// The model's hash: config.json, and per safetensors file its name, size, header and 1 MiB read at each of
    /// 16 evenly spaced places (hashing a 140 GB checkpoint whole would cost more than evaluating it; two
    /// models with the same shapes differ in every sampled stretch of weights).
    static func modelHash(_ checkpoint: Checkpoint) throws -> String {
        var hash = SHA256()
        hash.update(try Data(contentsOf: checkpoint.directory.appendingPathComponent("config.json")))
        for file in checkpoint.files.sorted(by: { $0.url.lastPathComponent < $1.url.lastPathComponent }) {
            let url = file.url.resolvingSymlinksInPath()
            guard let handle = FileHandle(forReadingAtPath: url.path) else { throw PruneDistError(.io, "\(url.path): cannot open to hash") }
            defer { try? handle.close() }
            let size = Int(try handle.seekToEnd())
            hash.update(Array("\(url.lastPathComponent) \(size)\n".utf8))
            let chunk = 1 << 20
            var offsets = [0]
            if size > chunk { offsets += (1...16).map { (size - chunk) * $0 / 16 } }
            for offset in offsets {
                try handle.seek(toOffset: UInt64(offset))
                hash.update(try handle.read(upToCount: chunk) ?? Data())
            }
        }
        return hash.hexDigest()
    }

    /// The evaluation's hash: each text's sha256, the window length and count, the tasks, limit and task files.
    static func evaluationHash(_ evaluation: PruneRunEvaluation) throws -> String {
        var lines = ["seqlen \(evaluation.seqlen)", "max windows \(evaluation.maxWindows.map(String.init) ?? "all")",
                     "tasks \(evaluation.tasks.map(\.rawValue).joined(separator: ","))", "limit \(evaluation.limit.map(String.init) ?? "all")"]
        for text in evaluation.texts { lines.append("text \(PruneRunEvaluation.label(of: text, among: evaluation.texts)) \(try SHA256.file(text).hex)") }
        if let data = evaluation.data {
            for task in evaluation.tasks { lines.append("task file \(task.fileName) \(try SHA256.file(data.appendingPathComponent(task.fileName)).hex)") }
        }
        if let a = evaluation.attack {  // only when asked for, so earlier caches keep their names
            lines.append("attack \(a.attack.rawValue) \(a.task) shots \(a.shots) template \(a.template) pool \(a.demoPool) limit \(a.limit.map(String.init) ?? "all") perturb \(a.maxPerturb) budget \(a.queryBudget.map(String.init) ?? "none") seed \(a.seed) cos \(a.minCos) candidates \(a.maxCandidates) batch \(a.batchTokens) wordnet \(a.wordnet?.path ?? "default")")
            lines.append("attack file \(try SHA256.file(a.file).hex)")
        }
        return SHA256.hex(Array(lines.joined(separator: "\n").utf8))
    }

    static func cacheURL(out: URL, modelHash: String, evaluationHash: String) -> URL {
        out.deletingLastPathComponent().appendingPathComponent(".prune-dist-dense-eval-\(modelHash.prefix(16))-\(evaluationHash.prefix(16)).json")
    }

    /// The dense model's evaluation entries (same keys as the pruned model's): from the cache when there, else
    /// evaluated over the job's ranks and cached by rank 0. Every rank calls this; rank 0 decides and broadcasts
    /// whether the cache holds them. nil when they cannot be had (`--weights broadcast` over several ranks: the
    /// other ranks cannot read --model) — the reason is logged.
    static func entries(evaluation: PruneRunEvaluation, model: URL, out: URL, weights: WeightsSource,
                        comm: Communicator, logger: Logger) throws -> (entries: [String: Double], cached: Bool)? {
        var message = Data()
        var cache: URL?
        if comm.rank == 0 {
            let checkpoint = try Checkpoint(directory: model)
            let url = cacheURL(out: out, modelHash: try modelHash(checkpoint), evaluationHash: try evaluationHash(evaluation))
            cache = url
            if let data = try? Data(contentsOf: url), (try? JSONDecoder().decode([String: Double].self, from: data)) != nil {
                message = data
                logger.info("dense model's evaluation read from \(url.path)")
            }
        }
        try comm.broadcast(&message, root: 0)
        if !message.isEmpty { return (try JSONDecoder().decode([String: Double].self, from: message), true) }
        if weights == .broadcast && comm.size > 1 {
            if comm.rank == 0 { logger.notice("dense model not evaluated: with --weights broadcast only rank 0 reads --model (run once with --weights shared, or eval perplexity on --model, to fill the cache)") }
            return nil
        }
        logger.info("evaluating the dense model (once; cached for later runs on the same model and texts)")
        let result = try evaluation.evaluate(model: model, comm: comm, logger: logger)
        if comm.rank == 0, let cache {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            do { try writeFileAtomically(try encoder.encode(result.entries), to: cache) } catch {
                logger.warning("could not cache the dense evaluation at \(cache.path): \(error)")
            }
        }
        return (result.entries, false)
    }

    /// "perplexity.wiki: dense 19.68 → pruned 25.10 (+5.42, +27.5 %)" for every measure both have.
    static func comparisonLines(dense: [String: Double], pruned: [String: Double]) -> [String] {
        let labelled = pruned.keys.contains { $0.hasPrefix("perplexity.") }
        return pruned.keys.sorted().compactMap { key in
            guard isMeasure(key), !(labelled && key == "perplexity"), let d = dense[key], let p = pruned[key] else { return nil }
            let relative = d != 0 ? String(format: ", %+.1f %%", 100 * (p - d) / abs(d)) : ""
            return "\(key): dense \(String(format: "%.4f", d)) → pruned \(String(format: "%.4f", p)) (\(String(format: "%+.4f", p - d))\(relative))"
        }
    }
}

extension HTMLReport {
    /// Dense → pruned for every measure of runs that evaluated the dense model too.
    static func denseComparisonSection(_ runs: [Run]) -> String {
        let compared = runs.filter { $0.report.denseEvaluation != nil && $0.report.evaluation != nil }
        guard !compared.isEmpty else { return "" }
        var html = "<h2>Dense → pruned</h2>\n<p class=\"note\">The same evaluation on the input model and on the result; difference = pruned − dense (perplexity: lower is better; accuracy: higher is better).</p>\n"
        for run in compared {
            let dense = run.report.denseEvaluation!, pruned = run.report.evaluation!
            html += "<h3>\(escape(run.label))</h3>\n<table><tr><th>measure</th><th>dense</th><th>pruned</th><th>difference</th><th>relative</th></tr>\n"
            let labelled = pruned.keys.contains { $0.hasPrefix("perplexity.") }
            for key in pruned.keys.sorted() where DenseEvaluation.isMeasure(key) && !(labelled && key == "perplexity") {
                guard let d = dense[key], let p = pruned[key] else { continue }
                html += "<tr><td>\(escape(key))</td><td>\(String(format: "%.4f", d))</td><td>\(String(format: "%.4f", p))</td>"
                    + "<td>\(String(format: "%+.4f", p - d))</td><td>\(d != 0 ? String(format: "%+.1f %%", 100 * (p - d) / abs(d)) : "")</td></tr>\n"
            }
            html += "</table>\n"
        }
        return html
    }
}
