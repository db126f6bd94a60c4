import Foundation

/// Calibration (and evaluation) text as token ids, and the random windows pruning calibrates on.
///
/// Sources: `.u16` / `.json` token files (ids as they are), `.jsonl` (each line's "text" is a document;
/// documents are joined with a blank line, "\n\n", as the wiki extracts of calib.txt are joined),
/// and anything else as plain UTF-8 text whose documents are separated by blank lines.
public enum CalibrationData {
    /// The token stream of a source: token files as stored, text encoded in one call (so the ids equal
    /// a single Hugging Face `encode(text)` of the whole file). `tokenizer` is needed for text sources.
    public static func tokens(url: URL, tokenizer: Tokenizer?) throws -> [Int] {
        let ids: [Int]
        if isTokenFile(url) {
            ids = try TokenFile.read(url)
        } else {
            let tokenizer = try require(tokenizer, for: url)
            let text = isJSONL(url) ? try documents(url).joined(separator: "\n\n") : try readText(url)
            ids = tokenizer.encode(text)
        }
        guard !ids.isEmpty else { throw PruneDistError(.data, "\(url.path): no tokens; expected non-empty calibration data") }
        try checkRange(ids, tokenizer: tokenizer, url: url)
        return ids
    }

    /// `samples` windows of `seqlen` consecutive tokens at random starts drawn from `seed`.
    ///
    /// The draw is Python's: `random.seed(seed)`, then per window `random.randint(0, N - seqlen - 1)` over
    /// the N tokens (the SparseGPT/Wanda convention the reference runs used), so seed 0, 128 × 512 on
    /// calib_tokens.u16 gives exactly the protocol-R windows. With `minDocumentTokens`, only documents of
    /// at least that many tokens are used, each tokenized on its own, and no window crosses a document
    /// boundary: the start is drawn uniformly over every valid start of every eligible document.
    public static func windows(url: URL, tokenizer: Tokenizer?, samples: Int, seqlen: Int, seed: UInt64,
                               minDocumentTokens: Int? = nil) throws -> [[Int]] {
        guard samples > 0, seqlen > 0 else {
            throw PruneDistError(.argument, "calibration from \(url.path): samples (\(samples)) and seqlen (\(seqlen)) must be positive")
        }
        var documentTokens: [[Int]]
        var what = "tokens"
        if let minDocumentTokens {
            guard !isTokenFile(url) else {
                throw PruneDistError(.argument, "\(url.path): a token file has no document boundaries; the minimum document "
                                     + "length (\(minDocumentTokens) tokens) needs a text or JSONL source")
            }
            let tokenizer = try require(tokenizer, for: url)
            let texts = try documents(url)
            documentTokens = tokenizer.encode(texts)
            guard documentTokens.contains(where: { !$0.isEmpty }) else {
                throw PruneDistError(.data, "\(url.path): no tokens; expected non-empty calibration data")
            }
            for ids in documentTokens { try checkRange(ids, tokenizer: tokenizer, url: url) }
            documentTokens = documentTokens.filter { $0.count >= minDocumentTokens }
            what = "tokens in documents of ≥ \(minDocumentTokens) tokens (\(documentTokens.count) of \(texts.count) documents)"
        } else {
            documentTokens = [try tokens(url: url, tokenizer: tokenizer)]
        }
        return try drawWindows(from: documentTokens, samples: samples, seqlen: seqlen, seed: seed,
                               source: url.path, what: what)
    }

    /// LLM-Pruner's own draw (its `get_examples`; BookCorpus rows there): for each sample, documents are picked with
    /// `random.randint(0, D − 1)` until one of at least `seqlen` tokens that was not picked before comes up, then
    /// the window starts at `random.randint(0, n − seqlen)` inside it. Documents are the pieces of Python's
    /// `text.split("\n\n")`, kept as they are (empty ones too, so D is the same), or a JSONL file's lines, each
    /// tokenized on its own without special tokens. Seed 0, 10 × 64 on calib.txt gives the windows LLM-Pruner's
    /// own code draws (CalibrationDataTests checks them). Returns [samples][seqlen].
    public static func documentDrawWindows(url: URL, tokenizer: Tokenizer, samples: Int, seqlen: Int,
                                           seed: UInt64) throws -> [[Int]] {
        guard samples > 0, seqlen > 0 else {
            throw PruneDistError(.argument, "calibration from \(url.path): samples (\(samples)) and seqlen (\(seqlen)) must be positive")
        }
        guard !isTokenFile(url) else {
            throw PruneDistError(.argument, "\(url.path): a token file has no documents; LLM-Pruner's document draw needs "
                                 + "a text or JSONL source (or draw windows from the token stream instead)")
        }
        let texts = isJSONL(url) ? try documents(url) : try readText(url).components(separatedBy: "\n\n")
        var tokenized = [Int: [Int]]()      // document index → its ids, as documents are first picked
        var eligibleLeft: Int?              // documents of ≥ seqlen tokens not yet used, once all are tokenized
        var used = Set<Int>()
        var random = PythonRandom(seed: seed)
        var windows = [[Int]]()
        for _ in 0..<samples {
            var ids: [Int]
            while true {
                if eligibleLeft == 0 || texts.isEmpty {
                    throw PruneDistError(.data, "\(url.path): \(samples) samples need as many documents of at least \(seqlen) "
                                         + "tokens; the \(texts.count) documents hold only \(used.count)")
                }
                let index = random.randbelow(texts.count)
                if let known = tokenized[index] { ids = known } else {
                    ids = tokenizer.encode(texts[index])
                    try checkRange(ids, tokenizer: tokenizer, url: url)
                    tokenized[index] = ids
                    if tokenized.count == texts.count {
                        eligibleLeft = tokenized.filter { $0.value.count >= seqlen && !used.contains($0.key) }.count
                    }
                }
                if ids.count >= seqlen, !used.contains(index) {
                    used.insert(index)
                    if let left = eligibleLeft { eligibleLeft = left - 1 }
                    break
                }
            }
            let start = random.randbelow(ids.count - seqlen + 1)
            windows.append(Array(ids[start..<(start + seqlen)]))
        }
        return windows
    }

    /// documents: [d][n_d] token ids; returns [samples][seqlen]
    public static func drawWindows(from documents: [[Int]], samples: Int, seqlen: Int, seed: UInt64,
                            source: String, what: String) throws -> [[Int]] {
        let available = documents.reduce(0) { $0 + $1.count }
        guard available >= samples * seqlen else {
            throw PruneDistError(.data, "\(source): \(available) \(what), too few for \(samples) samples × \(seqlen) "
                                 + "tokens = \(samples * seqlen)")
        }
        // startOffsets[d]: number of valid starts in documents before d (a start s needs s + seqlen < n_d).
        var startOffsets = [Int]()
        var totalStarts = 0
        for ids in documents {
            startOffsets.append(totalStarts)
            totalStarts += max(0, ids.count - seqlen)
        }
        guard totalStarts > 0 else {
            throw PruneDistError(.data, "\(source): no document has more than seqlen = \(seqlen) tokens; "
                                 + "expected at least \(seqlen + 1) in one document")
        }
        var random = PythonRandom(seed: seed)
        return (0..<samples).map { _ in
            let r = random.randbelow(totalStarts)
            // The last document whose first start is ≤ r (documents without starts are skipped over).
            var lo = 0, hi = startOffsets.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if startOffsets[mid] <= r { lo = mid } else { hi = mid - 1 }
            }
            while documents[lo].count - seqlen <= r - startOffsets[lo] { lo += 1 }
            let start = r - startOffsets[lo]
            return Array(documents[lo][start..<(start + seqlen)])
        }
    }

    // MARK: - Sources

    private static func isJSONL(_ url: URL) -> Bool { url.pathExtension.lowercased() == "jsonl" }

    /// Token-id files (`.u16`, `.json`) as opposed to text and JSONL.
    public static func isTokenFile(_ url: URL) -> Bool {
        ["u16", "json"].contains(url.pathExtension.lowercased())
    }

    private static func require(_ tokenizer: Tokenizer?, for url: URL) throws -> Tokenizer {
        guard let tokenizer else {
            throw PruneDistError(.argument, "\(url.path) is text; a tokenizer is needed to turn it into token ids")
        }
        return tokenizer
    }

    /// The documents of a text source: JSONL lines' "text" fields, or blank-line-separated stretches of plain
    /// text with surrounding whitespace removed. Empty documents are dropped.
    public static func documents(_ url: URL) throws -> [String] {
        let text = try readText(url)
        if isJSONL(url) {
            var documents = [String]()
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                if line.allSatisfy(\.isWhitespace) { continue }
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let document = object["text"] as? String else {
                    throw PruneDistError(.data, "\(url.path) line \(number + 1): expected a JSON object with a string "
                                         + "field \"text\"")
                }
                if !document.isEmpty { documents.append(document) }
            }
            return documents
        }
        // Blank lines separate documents; "\r\n" files are read the same way.
        return text.replacingOccurrences(of: "\r\n", with: "\n")
            .components(separatedBy: "\n\n")
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .filter { !$0.isEmpty }
    }

    private static func readText(_ url: URL) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw PruneDistError(.io, "cannot read calibration data \(url.path): \(error.localizedDescription)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw PruneDistError(.data, "\(url.path) is not valid UTF-8 text")
        }
        return text
    }

    /// ids: [n] token ids
    private static func checkRange(_ ids: [Int], tokenizer: Tokenizer?, url: URL) throws {
        guard let tokenizer, let largest = ids.max(), largest >= tokenizer.vocabularySize else { return }
        throw PruneDistError(.data, "\(url.path): token id \(largest) is outside the tokenizer's vocabulary of "
                             + "\(tokenizer.vocabularySize) ids")
    }
}
