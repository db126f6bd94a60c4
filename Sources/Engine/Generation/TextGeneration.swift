import Foundation

/// How `TextGeneration.generate` picks tokens.
public struct GenerationSettings: Sendable {
    /// Tokens generated at most (an end-of-sequence token ends earlier and is counted).
    public var maxNewTokens: Int
    /// 0 (the default) is greedy: the most probable token, the first of equals, as transformers' argmax.
    /// Above 0 the logits are divided by it and a token is drawn.
    public var temperature: Double
    /// Nucleus sampling: draw among the most probable tokens whose probabilities first reach this sum (1 = all).
    public var topP: Double
    /// Seeds the draws (SplitMix64): the same seed gives the same tokens on every machine.
    public var seed: UInt64
    /// Generation stops after any of these (generation_config.json's eos_token_id).
    public var endTokens: Set<Int>

    public init(maxNewTokens: Int, temperature: Double = 0, topP: Double = 1, seed: UInt64 = 0, endTokens: Set<Int> = []) {
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
        self.endTokens = endTokens
    }
}

/// Picks the next token from one position's logits, as transformers' greedy search or its
/// temperature + top-p sampling (TemperatureLogitsWarper, TopPLogitsWarper) do.
public struct TokenSampler {
    public let settings: GenerationSettings
    private var random: SplitMix64

    public init(_ settings: GenerationSettings) {
        self.settings = settings
        random = SplitMix64(seed: settings.seed)
    }

    /// The index of the largest logit, the first of equals (torch.argmax). NaN never wins.
    public static func argmax(_ logits: [Float]) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for (i, value) in logits.enumerated() where value > bestValue {
            best = i
            bestValue = value
        }
        return best
    }

    /// The tokens top-p keeps with their probabilities (renormalised): descending by probability, the
    /// smallest prefix whose probabilities sum to at least `topP` (at least one token).
    /// - logits: [vocab]
    public static func nucleus(_ logits: [Float], temperature: Double, topP: Double) -> [(token: Int, probability: Double)] {
        let scaled = logits.map { Double($0) / temperature }
        let maximum = scaled.max() ?? 0
        var weights = scaled.map { Foundation.exp($0 - maximum) }
        let sum = weights.reduce(0, +)
        for i in weights.indices { weights[i] /= sum }
        let order = weights.indices.sorted { weights[$0] != weights[$1] ? weights[$0] > weights[$1] : $0 < $1 }
        var kept: [(token: Int, probability: Double)] = []
        var cumulative = 0.0
        for token in order {
            kept.append((token, weights[token]))
            cumulative += weights[token]
            if cumulative >= topP { break }
        }
        let keptSum = kept.reduce(0) { $0 + $1.probability }
        return kept.map { ($0.token, $0.probability / keptSum) }
    }

    /// - logits: [vocab]
    public mutating func next(_ logits: [Float]) -> Int {
        guard settings.temperature > 0 else { return TokenSampler.argmax(logits) }
        let kept = TokenSampler.nucleus(logits, temperature: settings.temperature, topP: settings.topP)
        let u = random.nextUnit()
        var cumulative = 0.0
        for entry in kept {
            cumulative += entry.probability
            if u < cumulative { return entry.token }
        }
        return kept.last!.token
    }
}

public enum TextGeneration {
    /// Generates after `prompt`: the prompt goes through the model once, then each new token is one
    /// cached forward. `onToken` sees every token as soon as it is chosen (for streaming).
    /// - prompt: [n] token ids, n ≥ 1
    /// - Returns: the new tokens, ending with an end token when one was generated
    public static func generate(decoder: LlamaDecoder, prompt: [Int], settings: GenerationSettings,
                                onToken: (Int) throws -> Void = { _ in }) throws -> [Int] {
        guard !prompt.isEmpty else { throw PruneDistError(.argument, "generate: the prompt has no tokens") }
        guard settings.maxNewTokens >= 0 else { throw PruneDistError(.argument, "generate: --max-new-tokens must be ≥ 0") }
        decoder.reset()
        var sampler = TokenSampler(settings)
        var generated: [Int] = []
        guard settings.maxNewTokens > 0 else { return generated }
        var logits = try decoder.append(prompt)
        while true {
            let token = sampler.next(logits)
            generated.append(token)
            try onToken(token)
            if settings.endTokens.contains(token) || generated.count == settings.maxNewTokens { break }
            logits = try decoder.append([token])
        }
        return generated
    }
}

/// Turns generated ids into text as they come: each call returns only what the ids so far add to the
/// text, holding back a trailing incomplete UTF-8 character (a byte-level token may end mid-character).
public struct IncrementalDetokenizer {
    public let tokenizer: Tokenizer
    private var ids: [Int] = []
    private var emitted = ""

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The new text after `id` ("" while a character is incomplete).
    public mutating func push(_ id: Int) -> String {
        ids.append(id)
        let text = tokenizer.decode(ids)
        if text.hasSuffix("\u{FFFD}") { return "" }
        return advance(to: text)
    }

    /// Whatever is still held back (an incomplete character at the very end).
    public mutating func flush() -> String { advance(to: tokenizer.decode(ids)) }

    /// The scalars of `text` after those already emitted (compared scalar by scalar, not by grapheme, so a
    /// combining mark arriving in the next token is not lost). Decoding is not always prefix-stable; then
    /// what follows the common prefix is emitted.
    private mutating func advance(to text: String) -> String {
        let old = Array(emitted.unicodeScalars), new = Array(text.unicodeScalars)
        var common = 0
        while common < old.count, common < new.count, old[common] == new[common] { common += 1 }
        emitted = text
        var out = String.UnicodeScalarView()
        out.append(contentsOf: new[common...])
        return String(out)
    }
}
