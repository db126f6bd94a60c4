import Foundation

/// What an attack queries: a classifier giving every label a score for a text. The label with the highest
/// score is the prediction (the first of equal maxima, numpy's argmax); the softmax of the scores is the
/// probability an attack's goal function reads.
public protocol AttackVictim: AnyObject {
    var labelCount: Int { get }
    /// - Returns: [texts][labels], e.g. the log-likelihood of each label word after the text
    func scores(_ texts: [String]) throws -> [[Double]]
}

public enum AttackScores {
    /// argmax, the first of equal maxima.
    public static func prediction(_ scores: [Double]) -> Int {
        scores.indices.max { (scores[$0], -$0) < (scores[$1], -$1) }!
    }

    /// softmax over the labels' scores.
    public static func probabilities(_ scores: [Double]) -> [Double] {
        let top = scores.max() ?? 0
        let e = scores.map { Foundation.exp($0 - top) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }
}

/// A classification prompt in lm-evaluation-harness's form: each demonstration is its context followed by " " and
/// its label word, demonstrations are separated by a blank line, and the label words are scored after the
/// context of the text being classified.
public struct ClassificationPrompt: Sendable, Equatable {
    public enum Template: String, Sendable, CaseIterable {
        /// lm-evaluation-harness's SST-2 prompt (the one `eval zeroshot` uses)
        case harness
        /// "Review: … / Sentiment:"
        case review
        /// ChatML (SmolLM2-Instruct, Qwen2): the question as the user's turn, the label word as the assistant's answer
        case chat

        public func context(_ sentence: String) -> String {
            switch self {
            case .harness: return "\(sentence)\nQuestion: Is this sentence positive or negative?\nAnswer:"
            case .review: return "Review: \(sentence)\nSentiment:"
            case .chat:
                return "<|im_start|>user\nIs the sentiment of this movie review positive or negative? Answer with one word.\n\(sentence.trimmingCharacters(in: .whitespaces))<|im_end|>\n<|im_start|>assistant\n"
            }
        }

        /// Between the context and the label word (lm-evaluation-harness's target delimiter).
        public var delimiter: String { self == .chat ? "" : " " }
        /// Between demonstrations (the harness's few-shot delimiter, or the end of the assistant's turn).
        public var separator: String { self == .chat ? "<|im_end|>\n" : "\n\n" }
    }

    public var template: Template
    /// [labels]: the words scored, without the leading space
    public var labels: [String]
    /// Demonstrations (sentence, label), in prompt order.
    public var demonstrations: [(sentence: String, label: Int)]

    public init(template: Template = .harness, labels: [String] = ["negative", "positive"], demonstrations: [(sentence: String, label: Int)] = []) {
        self.template = template
        self.labels = labels
        self.demonstrations = demonstrations
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.template == b.template && a.labels == b.labels
            && a.demonstrations.map(\.sentence) == b.demonstrations.map(\.sentence) && a.demonstrations.map(\.label) == b.demonstrations.map(\.label)
    }

    /// What the model reads before a label word.
    public func context(_ sentence: String) -> String {
        let shots = demonstrations.map { template.context($0.sentence) + template.delimiter + labels[$0.label] }
        return (shots + [template.context(sentence)]).joined(separator: template.separator)
    }

    /// K demonstrations drawn with `seed` from `pool` (sentence, label): as balanced over labels as K allows
    /// (label l gets K / labels, the first K mod labels labels one more), each label's picks and then their
    /// order shuffled with SplitMix64.
    public static func drawDemonstrations(pool: [(sentence: String, label: Int)], count: Int, labelCount: Int, seed: UInt64) throws -> [(sentence: String, label: Int)] {
        guard count > 0 else { return [] }
        var random = SplitMix64(seed: seed)
        var picked: [(sentence: String, label: Int)] = []
        for label in 0..<labelCount {
            let want = count / labelCount + (label < count % labelCount ? 1 : 0)
            var members = pool.filter { $0.label == label }
            guard members.count >= want else {
                throw PruneDistError(.data, "the demonstration pool holds \(members.count) examples of label \(label), \(want) wanted for \(count) shots")
            }
            members.shuffle(using: &random)
            picked += members.prefix(want)
        }
        picked.shuffle(using: &random)
        return picked
    }
}

/// The language model as a classifier: the log-likelihood of each label word (" negative", " positive") after the
/// prompt, scored as `eval zeroshot` scores a choice (the harness's context/continuation split). Every block's
/// weights stay in memory, so the many small queries of an attack do not re-read the checkpoint. When every
/// label is one token after the same context, one forward of the context scores all labels at its last position.
public final class LanguageModelClassifier: AttackVictim {
    public let prompt: ClassificationPrompt
    public let tokenizer: Tokenizer
    let config: LlamaConfig
    let embedding: LlamaEmbedding
    let head: LlamaHead
    let blocks: [LlamaBlockWeights]
    let batchTokens: Int
    /// Forward passes run and tokens through them, for throughput reports.
    public private(set) var forwardTokens = 0

    public var labelCount: Int { prompt.labels.count }

    public init(checkpoint: Checkpoint, tokenizer: Tokenizer, prompt: ClassificationPrompt, batchTokens: Int = 2048) throws {
        self.prompt = prompt
        self.tokenizer = tokenizer
        config = checkpoint.config
        embedding = try LlamaEmbedding(checkpoint: checkpoint)
        head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        blocks = try (0..<checkpoint.config.numHiddenLayers).map { try LlamaBlockWeights(checkpoint: checkpoint, layer: $0, checkFinite: true) }
        self.batchTokens = batchTokens
    }

    /// One forward sequence and the positions scored in it.
    struct Unit {
        var ids: [Int]
        /// (row, target token, text, label)
        var targets: [(row: Int, token: Int, text: Int, label: Int)]
    }

    func units(_ texts: [String]) throws -> [Unit] {
        var units: [Unit] = []
        for (t, text) in texts.enumerated() {
            let context = prompt.context(text)
            let pairs = prompt.labels.map { ScoredSequence(context: context, continuation: prompt.template.delimiter + $0, encode: tokenizer.encode) }
            for pair in pairs {
                guard pair.continuationStart >= 1, pair.ids.count > pair.continuationStart else {
                    throw PruneDistError(.data, "text \"\(text.prefix(60))\": a label encodes to no tokens or the context is empty")
                }
                guard pair.ids.count <= config.maxPositionEmbeddings else {
                    throw PruneDistError(.data, "text \"\(text.prefix(60))\" with its prompt is \(pair.ids.count) tokens, beyond the model's \(config.maxPositionEmbeddings) positions; use fewer --shots")
                }
            }
            let prefix = Array(pairs[0].ids[..<pairs[0].continuationStart])
            let shared = pairs.allSatisfy { $0.ids.count == $0.continuationStart + 1 && Array($0.ids[..<$0.continuationStart]) == prefix }
            if shared {
                units.append(Unit(ids: prefix, targets: pairs.enumerated().map { (prefix.count - 1, $0.element.ids.last!, t, $0.offset) }))
            } else {
                for (l, pair) in pairs.enumerated() {
                    units.append(Unit(ids: pair.ids, targets: (pair.continuationStart..<pair.ids.count).map { (position: Int) in
                        (row: position - 1, token: pair.ids[position], text: t, label: l)
                    }))
                }
            }
        }
        return units
    }

    public func scores(_ texts: [String]) throws -> [[Double]] {
        var result = [[Double]](repeating: [Double](repeating: 0, count: labelCount), count: texts.count)
        if texts.isEmpty { return result }
        let units = try units(texts)
        // Length-sorted batches, as eval zeroshot cuts them (the plan depends only on these texts).
        let plan = ZeroShotScoring.batches(sequences: units.map { ScoredSequence(ids: $0.ids, continuationStart: 1) }, batchTokens: batchTokens)
        let scratch = LlamaBlockScratch()
        for batch in plan {
            let width = batch.map { units[$0].ids.count }.max()!
            let rope = try RopeTable(config: config, positions: width)
            let padded = batch.flatMap { units[$0].ids + [Int](repeating: 0, count: width - units[$0].ids.count) }
            var hidden = try embedding.embed(padded)
            for weights in blocks {
                llamaBlockForward(&hidden, weights: weights, rope: rope, seqlen: width, scratch: scratch)
            }
            forwardTokens += padded.count
            var rows: [Int] = [], targets: [Int] = [], owners: [(Int, Int)] = []
            for (slot, u) in batch.enumerated() {
                for target in units[u].targets {
                    rows.append(slot * width + target.row)
                    targets.append(target.token)
                    owners.append((target.text, target.label))
                }
            }
            let logProbabilities = head.logProbabilities(hidden: hidden, rows: rows, targets: targets)
            for ((text, label), value) in zip(owners, logProbabilities) { result[text][label] += value }
        }
        return result
    }
}
