import Engine
import Foundation

/// How windows are drawn from a calibration source.
enum CalibrationDraw: String, Sendable, CaseIterable {
    /// Windows anywhere in the token stream (SparseGPT's and Wanda's loaders)
    case stream
    /// One window per randomly picked document of at least seqlen tokens (LLM-Pruner's loader)
    case documents

    /// LLM-Pruner's draw where the source has documents, the stream draw for token files.
    static func defaultDraw(for url: URL) -> CalibrationDraw {
        CalibrationData.isTokenFile(url) ? .stream : .documents
    }
}

/// Where a run's calibration windows come from.
enum CalibrationSource {
    /// A JSON array of arrays is taken as the windows themselves (each `seqlen` long; used as given, e.g. to
    /// reproduce another tool's calibration set); anything else is a token stream or text that windows are drawn
    /// from with `seed`. Text needs the model's tokenizer.json.
    /// Every id is checked against `vocabSize` (the file and window are named) before any forward pass.
    static func windows(url: URL, modelDirectory: URL, vocabSize: Int, samples: Int, seqlen: Int, seed: Int,
                        draw: CalibrationDraw = .stream) throws -> [[Int]] {
        let windows = try drawnWindows(url: url, modelDirectory: modelDirectory, samples: samples, seqlen: seqlen, seed: seed, draw: draw)
        try Perplexity.checkVocabulary(windows, vocabSize: vocabSize, source: url.path)
        return windows
    }

    private static func drawnWindows(url: URL, modelDirectory: URL, samples: Int, seqlen: Int, seed: Int,
                                     draw: CalibrationDraw) throws -> [[Int]] {
        if draw == .documents, CalibrationData.isTokenFile(url) {
            throw PruneDistError(.argument, "\(url.path): a token file has no documents to draw from; "
                                 + "use --calib-draw stream or give the calibration text")
        }
        if url.pathExtension == "json", let explicit = try explicitWindows(url: url, seqlen: seqlen) {
            guard explicit.count >= samples else {
                throw PruneDistError(.data, "\(url.path): holds \(explicit.count) windows, --samples asks for \(samples)")
            }
            return Array(explicit.prefix(samples))
        }
        let tokenizer = CalibrationData.isTokenFile(url) ? nil : try Tokenizer.load(modelDirectory: modelDirectory)
        if draw == .documents, let tokenizer {
            return try CalibrationData.documentDrawWindows(url: url, tokenizer: tokenizer, samples: samples, seqlen: seqlen,
                                                           seed: UInt64(bitPattern: Int64(seed)))
        }
        return try CalibrationData.windows(url: url, tokenizer: tokenizer, samples: samples, seqlen: seqlen, seed: UInt64(bitPattern: Int64(seed)))
    }

    /// The windows of a JSON array of arrays of token ids, or nil when the file is a flat array.
    private static func explicitWindows(url: URL, seqlen: Int) throws -> [[Int]]? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [Any],
              let first = object.first, first is [Any] else { return nil }
        return try object.enumerated().map { index, row in
            guard let ids = row as? [NSNumber], ids.allSatisfy({ Int(exactly: $0.doubleValue) != nil && $0.intValue >= 0 }) else {
                throw PruneDistError(.data, "\(url.path): window \(index) is not an array of non-negative integer token ids")
            }
            guard ids.count == seqlen else {
                throw PruneDistError(.data, "\(url.path): window \(index) has \(ids.count) tokens, --seqlen is \(seqlen)")
            }
            return ids.map(\.intValue)
        }
    }
}
