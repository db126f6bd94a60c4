/// PEFT's lora_dropout, made reproducible: the mask of one linear's LoRA input in one example depends only on
/// (seed, optimizer step, the example's index in the whole training set, layer, linear), never on which rank
/// holds the example or how the batch is split, so the loss curve does not depend on the number of ranks.
public struct LoraDropout: Sendable {
    /// The probability of zeroing an element.
    public let probability: Double
    public let seed: UInt64
    public let step: Int

    public init(probability: Double, seed: UInt64, step: Int) {
        self.probability = probability
        self.seed = seed
        self.step = step
    }

    /// The multipliers of each element of one linear's input: 0 (dropped) or 1 / (1 − p) (kept, rescaled as
    /// torch's Dropout does), nil when p is 0.
    /// - examples: the global index of each sequence of the batch, in order
    /// - Returns: [examples.count·seqlen, features]
    public func mask(layer: Int, linear: LlamaLinear, examples: [Int], seqlen: Int, features: Int) -> [Float]? {
        guard probability > 0 else { return nil }
        let keep = Float(1 / (1 - probability))
        let linearIndex = LlamaLinear.allCases.firstIndex(of: linear)!
        let perExample = seqlen * features
        return [Float](unsafeUninitializedCapacity: examples.count * perExample) { mask, n in
            for (e, example) in examples.enumerated() {
                var random = SplitMix64(seed: LoraDropout.key([seed, UInt64(step), UInt64(example), UInt64(layer), UInt64(linearIndex)]))
                for i in 0..<perExample { mask[e * perExample + i] = random.nextUnit() < probability ? 0 : keep }
            }
            n = examples.count * perExample
        }
    }

    /// One 64-bit seed from several values (each folded in through a SplitMix64 step).
    static func key(_ values: [UInt64]) -> UInt64 {
        var key: UInt64 = 0x5EED_1DEA
        for value in values {
            var mix = SplitMix64(seed: key &+ value &* 0x9E37_79B9_7F4A_7C15)
            key = mix.next()
        }
        return key
    }
}

