import CEngineKernels
import Foundation

/// The whole model run block by block over a batch of sequences: only one block's weights are
/// materialised at a time, next to the embedding (and an untied head).
public struct LlamaForwardResult: Sendable {
    /// [sequences·seqlen, hidden] each: the embedding output, then every block's output (when kept)
    public var hiddenStates: [[Float]]
    /// [sequences·seqlen, hidden]: the last block's output
    public var lastHidden: [Float]
}

/// Runs every block over whole sequences.
/// - ids: [sequences·seqlen]
/// - keepHiddenStates: keep the embedding and each block's output (tests, analysis); otherwise only the last
/// - onBlock: called after each block with its index (progress reporting)
public func llamaForward(checkpoint: Checkpoint, embedding: LlamaEmbedding, ids: [Int], seqlen: Int,
                         keepHiddenStates: Bool = false, onBlock: ((Int) -> Void)? = nil) throws -> LlamaForwardResult {
    guard seqlen > 0, ids.count % seqlen == 0 else {
        throw PruneDistError(.argument, "llamaForward: \(ids.count) token ids are not whole sequences of \(seqlen)")
    }
    let rope = try RopeTable(config: checkpoint.config, positions: seqlen)
    var hidden = try embedding.embed(ids)
    var states: [[Float]] = keepHiddenStates ? [hidden] : []
    let scratch = LlamaBlockScratch()
    for layer in 0..<checkpoint.config.numHiddenLayers {
        let weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
        llamaBlockForward(&hidden, weights: weights, rope: rope, seqlen: seqlen, scratch: scratch)
        if keepHiddenStates { states.append(hidden) }
        onBlock?(layer)
    }
    return LlamaForwardResult(hiddenStates: states, lastHidden: hidden)
}

/// Perplexity over non-overlapping windows of a token stream.
public enum Perplexity {
    /// Consecutive, non-overlapping windows of `seqlen` tokens; a shorter tail is dropped.
    public static func windows(tokens: [Int], seqlen: Int, maxWindows: Int? = nil) throws -> [[Int]] {
        guard seqlen >= 2 else { throw PruneDistError(.argument, "--seqlen must be at least 2 (got \(seqlen))") }
        var count = tokens.count / seqlen
        if let maxWindows { count = min(count, maxWindows) }
        guard count > 0 else {
            throw PruneDistError(.data, "\(tokens.count) tokens do not fill one window of \(seqlen) tokens")
        }
        return (0..<count).map { Array(tokens[($0 * seqlen)..<(($0 + 1) * seqlen)]) }
    }

    /// Each window's mean next-token NLL, layer by layer over all windows so each block is read once.
    /// Each window goes through a block and the head on its own: GEMM rounding depends on the row count,
    /// so this makes a window's value the same bits whichever other windows (or ranks) are evaluated.
    /// - windows: [windows][seqlen] token ids
    /// - Returns: [windows]
    /// - windowNumbers: each window's number in the whole evaluation, for messages (default 0, 1, …)
    /// - Throws: `.nonFinite` naming the window and the first block whose output is not finite, when a
    ///   window's NLL is NaN or infinite (a forward that overflowed Float32 must not print a perplexity)
    public static func windowMeanNLL(checkpoint: Checkpoint, windows: [[Int]], seqlen: Int, windowNumbers: [Int]? = nil,
                                     onBlock: ((Int) -> Void)? = nil) throws -> [Double] {
        if windows.isEmpty { return [] }
        for (w, window) in windows.enumerated() where window.count != seqlen {
            throw PruneDistError(.argument, "perplexity window \(w) holds \(window.count) tokens, not \(seqlen)")
        }
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let rope = try RopeTable(config: checkpoint.config, positions: seqlen)
        var hidden = try windows.map { try embedding.embed($0) }
        var firstNonFiniteBlock = [Int?](repeating: nil, count: windows.count)
        let scratch = LlamaBlockScratch()
        for layer in 0..<checkpoint.config.numHiddenLayers {
            let weights = try LlamaBlockWeights(checkpoint: checkpoint, layer: layer, checkFinite: true)
            for w in hidden.indices {
                llamaBlockForward(&hidden[w], weights: weights, rope: rope, seqlen: seqlen, scratch: scratch)
                if firstNonFiniteBlock[w] == nil, !allFinite(hidden[w]) { firstNonFiniteBlock[w] = layer }
            }
            onBlock?(layer)
        }
        let values = zip(windows, hidden).map { window, last in
            head.nextTokenNLL(hidden: last, ids: window, seqlen: seqlen).reduce(0, +) / Double(seqlen - 1)
        }
        if let w = values.firstIndex(where: { !$0.isFinite }) {
            let number = windowNumbers?[w] ?? w
            let cause = firstNonFiniteBlock[w].map { "block \($0) is the first whose output is not finite (Float32 overflow in the forward pass)" }
                ?? "every block's output is finite; the head's logits are not"
            throw PruneDistError(.nonFinite, "perplexity window \(number) (tokens \(number * seqlen)..<\((number + 1) * seqlen)): the mean NLL is \(values[w]); \(cause). The model's weights are too large for this input")
        }
        return values
    }

    private static func allFinite(_ values: [Float]) -> Bool {
        values.withUnsafeBufferPointer { cengine_first_nonfinite($0.baseAddress!, $0.count) == $0.count }
    }

    /// Refuses a token id outside the vocabulary before any forward pass, naming the file the ids came from,
    /// the window and the position in it.
    public static func checkVocabulary(_ windows: [[Int]], vocabSize: Int, source: String, windowNumbers: [Int]? = nil) throws {
        for (w, window) in windows.enumerated() {
            if let position = window.firstIndex(where: { $0 < 0 || $0 >= vocabSize }) {
                throw PruneDistError(.data, "\(source): token id \(window[position]) in window \(windowNumbers?[w] ?? w) (position \(position)) is outside the model's vocabulary of \(vocabSize)")
            }
        }
    }

    /// exp of the mean over windows of each window's mean NLL.
    public static func perplexity(windowMeanNLL: [Double]) -> Double {
        Foundation.exp(windowMeanNLL.reduce(0, +) / Double(windowMeanNLL.count))
    }
}
