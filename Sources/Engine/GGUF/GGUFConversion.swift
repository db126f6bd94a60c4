import CEngineKernels
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Turning a llama.cpp GGUF file into a Hugging Face model directory: tensor names, llama.cpp's rotary
/// row order, config.json and the tokenizer files, all from the file's metadata.
public enum GGUFConversion {
    /// Architectures we convert (`general.architecture`); both use the LLaMA block layout.
    public static let architectures = ["llama", "qwen2"]

    /// GGUF names inside block N (`blk.N.<gguf>`) and their Hugging Face names (`model.layers.N.<hf>`).
    static let blockNames: [(gguf: String, hf: String)] = [
        ("attn_norm", "input_layernorm"),
        ("attn_q", LlamaLinear.q.rawValue), ("attn_k", LlamaLinear.k.rawValue), ("attn_v", LlamaLinear.v.rawValue),
        ("attn_output", LlamaLinear.o.rawValue),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", LlamaLinear.gate.rawValue), ("ffn_up", LlamaLinear.up.rawValue), ("ffn_down", LlamaLinear.down.rawValue),
    ]

    /// One tensor to write: where it comes from, its Hugging Face name and shape, and the number of heads
    /// whose rotary rows llama.cpp interleaved (nil: copied as is).
    public struct TensorPlan: Sendable, Equatable {
        public let ggufName: String
        public let name: String
        public let shape: [Int]
        public let rotaryHeads: Int?
    }

    /// Everything a conversion writes besides the weights, decided before any weight is read.
    public struct Plan: Sendable {
        public let config: LlamaConfig
        public let tensors: [TensorPlan]
        public let tokenizerJSON: Data
        public let tokenizerConfigJSON: Data
        public let generationConfigJSON: Data
    }

    // MARK: rotary row order

    /// llama.cpp's converter stores q and k with each head's rows reordered so RoPE rotates adjacent
    /// pairs: llama.cpp row h*d + 2i + a holds Hugging Face row h*d + a*d/2 + i (a ∈ {0,1}, i < d/2).
    /// This undoes it. Biases are the same with `columns` 1.
    ///
    /// weights: [heads * headDim, columns] row-major, llama.cpp order. Returns the same shape, HF order.
    public static func unpermuteRotaryRows(_ weights: [Float], heads: Int, columns: Int) -> [Float] {
        reorderRotaryRows(weights, heads: heads, columns: columns, toLlamaCpp: false)
    }

    /// The permutation llama.cpp's converter applies (the inverse of `unpermuteRotaryRows`).
    ///
    /// weights: [heads * headDim, columns] row-major, HF order. Returns the same shape, llama.cpp order.
    public static func permuteRotaryRows(_ weights: [Float], heads: Int, columns: Int) -> [Float] {
        reorderRotaryRows(weights, heads: heads, columns: columns, toLlamaCpp: true)
    }

    private static func reorderRotaryRows(_ weights: [Float], heads: Int, columns: Int, toLlamaCpp: Bool) -> [Float] {
        let rows = weights.count / columns
        precondition(rows * columns == weights.count && rows % (2 * heads) == 0,
                     "rotary rows: \(rows) rows are not \(heads) heads of an even head dimension")
        let headDim = rows / heads, half = headDim / 2
        var out = [Float](repeating: 0, count: weights.count)
        weights.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for h in 0..<heads {
                    for a in 0..<2 {
                        for i in 0..<half {
                            let hfRow = h * headDim + a * half + i, llamaRow = h * headDim + 2 * i + a
                            let (from, to) = toLlamaCpp ? (hfRow, llamaRow) : (llamaRow, hfRow)
                            (dst.baseAddress! + to * columns).update(from: src.baseAddress! + from * columns, count: columns)
                        }
                    }
                }
            }
        }
        return out
    }

    /// One tensor dequantised, checked for NaN/Inf, put in Hugging Face row order and narrowed to `dtype`.
    private static func preparedTensor(_ t: TensorPlan, file: GGUFFile, gguf: URL, dtype: DType) throws -> [UInt8] {
        var values = try file.floats(t.ggufName)
        let bad = values.withUnsafeBufferPointer { cengine_first_nonfinite($0.baseAddress!, $0.count) }
        guard bad == values.count else {
            let info = try file.tensor(t.ggufName)
            throw PruneDistError(.nonFinite, "\(gguf.path): tensor \(t.ggufName) (\(info.type.name)) dequantises to \(values[bad]) at element \(bad) (block \(bad / info.type.block.elements)): the file is corrupt")
        }
        if let heads = t.rotaryHeads {
            values = unpermuteRotaryRows(values, heads: heads, columns: t.shape.count == 2 ? t.shape[1] : 1)
        }
        return try encodeChecked(values, as: dtype, tensor: t.name)
    }

    // MARK: plan

    /// Reads the metadata and tensor list and decides everything to write; fails on anything we cannot
    /// convert faithfully.
    public static func plan(_ file: GGUFFile) throws -> Plan {
        let path = file.url.path
        let arch = try file.string("general.architecture")
        guard architectures.contains(arch) else {
            throw PruneDistError(.unsupported, "\(path): architecture \"\(arch)\" is not supported (supported: \(architectures.joined(separator: ", ")))")
        }
        if file.contains("rope_freqs.weight") {
            throw PruneDistError(.unsupported, "\(path): tensor rope_freqs.weight (Llama 3.1-style RoPE scaling factors) cannot be expressed in config.json by this converter")
        }
        let layers = try file.int("\(arch).block_count")
        let hidden = try file.int("\(arch).embedding_length")
        let ffn = try file.int("\(arch).feed_forward_length")
        let heads = try file.int("\(arch).attention.head_count")
        let kvHeads = file.metadata["\(arch).attention.head_count_kv"] == nil ? heads : try file.int("\(arch).attention.head_count_kv")
        let headDim = file.metadata["\(arch).attention.key_length"] == nil ? (heads > 0 ? hidden / heads : 0)
            : try file.int("\(arch).attention.key_length")
        let eps = try decimal(file, "\(arch).attention.layer_norm_rms_epsilon")
        let theta = file.metadata["\(arch).rope.freq_base"] == nil ? 10000 : try decimal(file, "\(arch).rope.freq_base")
        let context = file.metadata["\(arch).context_length"] == nil ? 2048 : try file.int("\(arch).context_length")
        if let rotaryDims = file.metadata["\(arch).rope.dimension_count"]?.int, rotaryDims != headDim {
            throw PruneDistError(.unsupported, "\(path): \(arch).rope.dimension_count is \(rotaryDims) but heads have \(headDim) dimensions; partial rotary embeddings are not supported")
        }
        if let scaling = file.metadata["\(arch).rope.scaling.type"]?.string, scaling != "none" {
            throw PruneDistError(.unsupported, "\(path): RoPE scaling \"\(scaling)\" (\(arch).rope.scaling.type) is not supported by the converter")
        }
        let embedding = try file.tensor("token_embd.weight")
        guard embedding.shape.count == 2, embedding.shape[1] == hidden else {
            throw PruneDistError(.shape, "\(path): tensor token_embd.weight has shape \(embedding.shape), expected [vocab, \(hidden)]")
        }
        let vocab = embedding.shape[0]
        if let declared = file.metadata["\(arch).vocab_size"]?.int, declared != vocab {
            throw PruneDistError(.shape, "\(path): \(arch).vocab_size is \(declared) but token_embd.weight has \(vocab) rows")
        }

        let tied = !file.contains("output.weight")
        let biasNames = ["attn_q", "attn_k", "attn_v"].map { "blk.0.\($0).bias" }
        let attentionBias = biasNames.allSatisfy(file.contains)
        var config = LlamaConfig(vocabSize: vocab, hiddenSize: hidden, intermediateSize: ffn, numHiddenLayers: layers,
                                 numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: headDim,
                                 rmsNormEps: eps, ropeTheta: theta, maxPositionEmbeddings: context,
                                 tieWordEmbeddings: tied, attentionBias: attentionBias, modelType: arch)
        config.bosTokenId = file.metadata["tokenizer.ggml.bos_token_id"]?.int
        config.eosTokenId = file.metadata["tokenizer.ggml.eos_token_id"]?.int
        if arch == "qwen2" && !attentionBias {
            throw PruneDistError(.missingTensor, "\(path): qwen2 needs q, k and v biases; blk.0.attn_q.bias, attn_k.bias or attn_v.bias is missing")
        }
        try config.validate(source: path)

        // The tensors every block must hold, with the shapes the config implies.
        let qDim = heads * headDim, kvDim = kvHeads * headDim
        var expected: [(gguf: String, hf: String, shape: [Int], rotaryHeads: Int?)] = [
            ("token_embd.weight", LlamaTensorNames.embedding, [vocab, hidden], nil),
        ]
        let rotary = arch == "llama"
        for layer in 0..<layers {
            for (g, h) in blockNames {
                let shape: [Int]
                var rotaryHeads: Int? = nil
                switch g {
                case "attn_norm", "ffn_norm": shape = [hidden]
                case "attn_q": shape = [qDim, hidden]; rotaryHeads = rotary ? heads : nil
                case "attn_k": shape = [kvDim, hidden]; rotaryHeads = rotary ? kvHeads : nil
                case "attn_v": shape = [kvDim, hidden]
                case "attn_output": shape = [hidden, qDim]
                case "ffn_gate", "ffn_up": shape = [ffn, hidden]
                default: shape = [hidden, ffn]
                }
                expected.append(("blk.\(layer).\(g).weight", "model.layers.\(layer).\(h).weight", shape, rotaryHeads))
                if attentionBias, ["attn_q", "attn_k", "attn_v"].contains(g) {
                    expected.append(("blk.\(layer).\(g).bias", "model.layers.\(layer).\(h).bias", [shape[0]], rotaryHeads))
                }
            }
        }
        expected.append(("output_norm.weight", LlamaTensorNames.finalNorm, [hidden], nil))
        if !tied { expected.append(("output.weight", "lm_head.weight", [vocab, hidden], nil)) }

        var plans: [TensorPlan] = []
        for e in expected {
            guard file.contains(e.gguf) else {
                throw PruneDistError(.missingTensor, "\(path): tensor count mismatch: \(arch) with \(layers) blocks needs \(expected.count) tensors, the file holds \(file.tensors.count); \(e.gguf) is missing")
            }
            let info = try file.tensor(e.gguf)
            guard info.shape == e.shape else {
                throw PruneDistError(.shape, "\(path): tensor \(e.gguf) has shape \(info.shape), expected \(e.shape) from the metadata")
            }
            plans.append(TensorPlan(ggufName: e.gguf, name: e.hf, shape: e.shape, rotaryHeads: e.rotaryHeads))
        }
        let known = Set(expected.map(\.gguf))
        if let extra = file.tensors.first(where: { !known.contains($0.name) }) {
            throw PruneDistError(.unsupported, "\(path): tensor count mismatch: \(arch) with \(layers) blocks has \(expected.count) tensors, the file holds \(file.tensors.count); \(extra.name) has no Hugging Face counterpart")
        }

        let tokenizer = try GGUFTokenizer(file)
        return Plan(config: config, tensors: plans,
                    tokenizerJSON: try tokenizer.tokenizerJSON(), tokenizerConfigJSON: tokenizer.tokenizerConfigJSON(contextLength: context),
                    generationConfigJSON: generationConfig(config))
    }

    /// A number from the metadata; a float32 is read as the shortest decimal that rounds to it, the value
    /// the converter started from (1e-5 is stored as 9.99999974e-06, which config.json should not show).
    static func decimal(_ file: GGUFFile, _ key: String) throws -> Double {
        if case .float32(let f) = try file.value(key) { return Double("\(f)")! }
        return try file.double(key)
    }

    static func generationConfig(_ config: LlamaConfig) -> Data {
        var fields: [(String, OrderedJSON)] = []
        if let b = config.bosTokenId { fields.append(("bos_token_id", .int(b))) }
        if let e = config.eosTokenId { fields.append(("eos_token_id", .int(e))) }
        return Data(OrderedJSON.object(fields).serialized(pretty: true).utf8)
    }

    // MARK: conversion

    public struct Summary: Sendable {
        public let config: LlamaConfig
        public let tensors: Int
        public let parameters: Int
        public let files: [String]
    }

    /// Converts `gguf` into a Hugging Face directory at `out` (absent or empty), weights in `dtype`. `threads`
    /// tensors are dequantised and narrowed at a time, each on its own thread, and written in file order as soon
    /// as their turn comes (memory: about `threads` tensors in flight). Everything is written into a hidden folder beside `out`, renamed
    /// when complete and removed on any error, so a failed conversion leaves no output directory.
    public static func convert(gguf: URL, out: URL, dtype: DType = .bf16,
                               maxShardBytes: Int = CheckpointWriter.defaultMaxShardBytes, threads: Int = 1,
                               progress: ((String) -> Void)? = nil) throws -> Summary {
        guard dtype.isWeightType else {
            throw PruneDistError(.argument, "output dtype must be F32, F16 or BF16, got \(dtype.rawValue)")
        }
        try OutputFolder.checkFresh(OutputFolder.Argument("--out", out), inputs: [OutputFolder.Argument("--gguf", gguf)])
        let file = try GGUFFile(url: gguf)
        let plan = try plan(file)
        let lock = try OutputLock.acquire(partial: OutputFolder.partialFolder(for: out), out: out)
        let temporary = lock.partial
        try lock.clearPartialFolder()
        var keepPartial = false
        defer { if !keepPartial { lock.removePartialFolder() } }
        // An interrupted conversion cannot be resumed: SIGINT/SIGTERM remove the partial folder too.
        let interruption = InterruptCleanup.install(message: "convert interrupted; removed \(temporary.path)") { lock.removePartialFolder() }
        defer { interruption.uninstall() }

        let entries = plan.tensors.map { SafetensorsWriter.Entry(name: $0.name, dtype: dtype, shape: $0.shape) }
        let writer = try CheckpointWriter(directory: temporary, tensors: entries, maxShardBytes: maxShardBytes)
        var parameters = 0
        var first = 0
        while first < plan.tensors.count {
            let batch = Array(plan.tensors[first..<min(first + max(threads, 1), plan.tensors.count)])
            var prepared = [Result<[UInt8], Error>](repeating: .success([]), count: batch.count)
            forEachConcurrently(&prepared, threads: batch.count) { i, _, result in
                result = Result { try preparedTensor(batch[i], file: file, gguf: gguf, dtype: dtype) }
            }
            for (t, result) in zip(batch, prepared) {
                let bytes = try result.get()
                try bytes.withUnsafeBytes { try writer.append(t.name, bytes: $0) }
                parameters += t.shape.reduce(1, *)
                first += 1
                if first % 50 == 0 || first == plan.tensors.count { progress?("converted \(first)/\(plan.tensors.count) tensors") }
            }
        }
        try writer.finish()
        var config = plan.config
        config.dtype = dtype
        try writeFileAtomically(config.jsonData(), to: temporary.appendingPathComponent("config.json"))
        try writeFileAtomically(plan.generationConfigJSON, to: temporary.appendingPathComponent("generation_config.json"))
        try writeFileAtomically(plan.tokenizerJSON, to: temporary.appendingPathComponent("tokenizer.json"))
        try writeFileAtomically(plan.tokenizerConfigJSON, to: temporary.appendingPathComponent("tokenizer_config.json"))
        interruption.uninstall()
        keepPartial = true  // moved into place, or kept where the error says when --out is no longer empty
        try OutputFolder.moveIntoPlace(temporary, out: out)
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? []).sorted()
        return Summary(config: config, tensors: plan.tensors.count, parameters: parameters, files: files)
    }
}

/// The Hugging Face tokenizer files rebuilt from `tokenizer.ggml.*`: llama.cpp's "gpt2" vocabularies
/// (byte-level BPE, with the pre-tokenizer llama.cpp selects by `tokenizer.ggml.pre`) and "llama" ones
/// (SentencePiece BPE with byte fallback, as LLaMA-1/2 ship), written as transformers' GGUF converter
/// writes them.
public struct GGUFTokenizer: Sendable {
    /// `tokenizer.ggml.model`: "gpt2" or "llama".
    public let model: String
    public let tokens: [String]
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    public let tokenTypes: [Int]
    /// SentencePiece scores (higher merges first); empty for gpt2 vocabularies.
    public let scores: [Float]
    public let merges: [(String, String)]
    public let pre: String
    public let bosId: Int?, eosId: Int?, unknownId: Int?, paddingId: Int?
    public let addBos: Bool, addEos: Bool
    /// SentencePiece: a "▁" is put before the text (tokenizer.ggml.add_space_prefix).
    public let addSpacePrefix: Bool
    public let chatTemplate: String?

    public init(_ file: GGUFFile) throws {
        let path = file.url.path
        model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" || model == "llama" else {
            throw PruneDistError(.unsupported, "\(path): tokenizer.ggml.model \"\(model)\" is not supported (supported: gpt2 = byte-level BPE, llama = SentencePiece BPE)")
        }
        tokens = try file.strings("tokenizer.ggml.tokens")
        tokenTypes = file.metadata["tokenizer.ggml.token_type"] == nil
            ? [Int](repeating: 1, count: tokens.count) : try file.ints("tokenizer.ggml.token_type")
        guard tokenTypes.count == tokens.count else {
            throw PruneDistError(.format, "\(path): tokenizer.ggml.token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        if model == "llama" {
            let values = try file.value("tokenizer.ggml.scores").array ?? []
            scores = try values.enumerated().map { i, v in
                guard let d = v.double else {
                    throw PruneDistError(.format, "\(path): tokenizer.ggml.scores[\(i)] should be a number, found a value of type \(v.type)")
                }
                return Float(d)
            }
            guard scores.count == tokens.count else {
                throw PruneDistError(.format, "\(path): tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
            }
        } else {
            scores = []
        }
        let mergeStrings = file.metadata["tokenizer.ggml.merges"] == nil ? [] : try file.strings("tokenizer.ggml.merges")
        let listed = try mergeStrings.enumerated().map { i, m in
            // Byte-level symbols never contain a space (it is "Ġ"), so the first space separates the pair.
            guard let space = m.firstIndex(of: " ") else {
                throw PruneDistError(.format, "\(path): tokenizer.ggml.merges[\(i)] \"\(m)\" is not two symbols separated by a space")
            }
            return (String(m[..<space]), String(m[m.index(after: space)...]))
        }
        merges = model == "llama" && listed.isEmpty ? GGUFTokenizer.sentencePieceMerges(tokens: tokens, scores: scores) : listed
        pre = file.metadata["tokenizer.ggml.pre"]?.string ?? "default"
        let tokenCount = tokens.count
        func id(_ key: String) throws -> Int? {
            guard let v = file.metadata[key] else { return nil }
            guard let n = v.int, n >= 0, n < tokenCount else {
                throw PruneDistError(.format, "\(path): \(key) is \(v), not a token id below \(tokenCount)")
            }
            return n
        }
        bosId = try id("tokenizer.ggml.bos_token_id")
        eosId = try id("tokenizer.ggml.eos_token_id")
        unknownId = try id("tokenizer.ggml.unknown_token_id")
        paddingId = try id("tokenizer.ggml.padding_token_id")
        // llama.cpp's defaults when the keys are absent: SentencePiece vocabularies add BOS and a space prefix.
        addBos = file.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? (model == "llama")
        addEos = file.metadata["tokenizer.ggml.add_eos_token"]?.bool ?? false
        addSpacePrefix = file.metadata["tokenizer.ggml.add_space_prefix"]?.bool ?? (model == "llama")
        chatTemplate = file.metadata["tokenizer.chat_template"]?.string
        if model == "gpt2" { _ = try GGUFTokenizer.preTokenizer(pre, path: path) }
    }

    /// SentencePiece BPE files list no merges; like transformers' GGUF converter we derive them from the
    /// vocabulary: every split of a token into two tokens is a merge, ranked by the merged token's score
    /// (higher first), the splits of one token by their pieces' scores (higher first); ties keep id order.
    static func sentencePieceMerges(tokens: [String], scores: [Float]) -> [(String, String)] {
        var scoreOf: [String: Float] = [:]
        for (token, score) in zip(tokens, scores) where scoreOf[token] == nil { scoreOf[token] = score }
        var merges: [(left: String, right: String, score: Float, order: Int)] = []
        for (token, score) in zip(tokens, scores) {
            let scalars = Array(token.unicodeScalars)
            guard scalars.count > 1 else { continue }
            var local: [(left: String, right: String, leftScore: Float, rightScore: Float)] = []
            for cut in 1..<scalars.count {
                var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
                left.append(contentsOf: scalars[..<cut])
                right.append(contentsOf: scalars[cut...])
                let l = String(left), r = String(right)
                if let ls = scoreOf[l], let rs = scoreOf[r] { local.append((l, r, ls, rs)) }
            }
            // Stable: equal piece scores keep the order of the cuts.
            let sorted = local.enumerated().sorted { a, b in
                (a.element.leftScore, a.element.rightScore, -a.offset) > (b.element.leftScore, b.element.rightScore, -b.offset)
            }
            for (_, m) in sorted { merges.append((m.left, m.right, score, merges.count)) }
        }
        merges.sort { ($0.score, -$0.order) > ($1.score, -$1.order) }
        return merges.map { ($0.left, $0.right) }
    }

    /// llama.cpp's pre-tokenizer regexes (llama-vocab.cpp) as tokenizers pre-tokenizers. The GPT-2 regex is
    /// ByteLevel's own (`use_regex`); llama.cpp's leading `\p{N}` expression for smollm, starcoder and refact
    /// is Digits(individual_digits).
    static func preTokenizer(_ pre: String, path: String) throws -> OrderedJSON {
        func byteLevel(useRegex: Bool, trimOffsets: Bool = true) -> OrderedJSON {
            .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)),
                     ("trim_offsets", .bool(trimOffsets)), ("use_regex", .bool(useRegex))])
        }
        func split(_ regex: String) -> OrderedJSON {
            .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(regex))])),
                     ("behavior", .string("Isolated")), ("invert", .bool(false))])
        }
        func sequence(_ items: [OrderedJSON]) -> OrderedJSON {
            .object([("type", .string("Sequence")), ("pretokenizers", .array(items))])
        }
        let contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
        switch pre {
        case "default", "gpt2", "gpt-2", "phi-2", "roberta-bpe", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v2-code":
            return byteLevel(useRegex: true)
        case "smollm", "starcoder", "refact":
            return sequence([.object([("type", .string("Digits")), ("individual_digits", .bool(true))]), byteLevel(useRegex: true)])
        case "llama3", "llama-v3", "llama-bpe", "falcon3":
            return sequence([split(contractions + #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#),
                             byteLevel(useRegex: false)])
        case "qwen2", "deepseek-r1-qwen":
            return sequence([split(contractions + #"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#),
                             byteLevel(useRegex: false, trimOffsets: false)])
        default:
            throw PruneDistError(.unsupported, "\(path): pre-tokenizer \"\(pre)\" (tokenizer.ggml.pre) is not supported (supported: default, gpt2, smollm, starcoder, refact, llama-bpe, qwen2)")
        }
    }

    /// Ids of the tokens tokenizers treats as added tokens: control and unknown ones are special,
    /// user-defined ones are not.
    var addedTokenIds: [(id: Int, special: Bool)] {
        tokenTypes.enumerated().compactMap { id, type in
            switch type {
            case 2, 3: return (id, true)
            case 4: return (id, false)
            default: return nil
            }
        }
    }

    public func tokenizerJSON() throws -> Data {
        let added: [OrderedJSON] = addedTokenIds.map { t in
            .object([("id", .int(t.id)), ("content", .string(tokens[t.id])), ("single_word", .bool(false)),
                     ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)),
                     ("special", .bool(t.special))])
        }
        func sequence(_ id: String, typeId: Int) -> OrderedJSON {
            .object([("Sequence", .object([("id", .string(id)), ("type_id", .int(typeId))]))])
        }
        func special(_ tokenId: Int, typeId: Int) -> OrderedJSON {
            .object([("SpecialToken", .object([("id", .string(tokens[tokenId])), ("type_id", .int(typeId))]))])
        }
        var single: [OrderedJSON] = [], pair: [OrderedJSON] = []
        var specialIds: [Int] = []
        let bos = addBos ? bosId : nil, eos = addEos ? eosId : nil
        for (part, typeId) in [("A", 0), ("B", 1)] {
            if let bos { pair.append(special(bos, typeId: typeId)); if part == "A" { single.append(special(bos, typeId: 0)) } }
            pair.append(sequence(part, typeId: typeId))
            if part == "A" { single.append(sequence("A", typeId: 0)) }
            if let eos { pair.append(special(eos, typeId: typeId)); if part == "A" { single.append(special(eos, typeId: 0)) } }
        }
        if let bos { specialIds.append(bos) }
        if let eos, eos != bos { specialIds.append(eos) }
        let specialTokens = OrderedJSON.object(specialIds.map { id in
            (tokens[id], .object([("id", .string(tokens[id])), ("ids", .array([.int(id)])), ("tokens", .array([.string(tokens[id])]))]))
        })
        let postProcessor = OrderedJSON.object([("type", .string("TemplateProcessing")), ("single", .array(single)),
                                                ("pair", .array(pair)), ("special_tokens", specialTokens)])
        let vocab = OrderedJSON.object(tokens.enumerated().map { ($1, .int($0)) })
        let mergeList = OrderedJSON.array(merges.map { .array([.string($0.0), .string($0.1)]) })
        let normalizer: OrderedJSON, preTokenizer: OrderedJSON, decoder: OrderedJSON, bpe: OrderedJSON
        if model == "llama" {
            // SentencePiece: spaces become "▁" (one before the text), no pre-tokenizer, unknown bytes fall
            // back to the <0xNN> tokens; decoding undoes each step.
            let replaceSpace = OrderedJSON.object([("type", .string("Replace")), ("pattern", .object([("String", .string(" "))])), ("content", .string("▁"))])
            normalizer = .object([("type", .string("Sequence")), ("normalizers", .array(
                (addSpacePrefix ? [.object([("type", .string("Prepend")), ("prepend", .string("▁"))])] : []) + [replaceSpace]))])
            preTokenizer = .null
            decoder = .object([("type", .string("Sequence")), ("decoders", .array([
                .object([("type", .string("Replace")), ("pattern", .object([("String", .string("▁"))])), ("content", .string(" "))]),
                .object([("type", .string("ByteFallback"))]), .object([("type", .string("Fuse"))]),
            ] + (addSpacePrefix ? [.object([("type", .string("Strip")), ("content", .string(" ")), ("start", .int(1)), ("stop", .int(0))])] : [])))])
            bpe = .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", unknownId.map { .string(tokens[$0]) } ?? .null),
                ("continuing_subword_prefix", .null), ("end_of_word_suffix", .null),
                ("fuse_unk", .bool(true)), ("byte_fallback", .bool(true)), ("ignore_merges", .bool(false)),
                ("vocab", vocab), ("merges", mergeList),
            ])
        } else {
            normalizer = pre == "qwen2" ? .object([("type", .string("NFC"))]) : .null
            preTokenizer = try GGUFTokenizer.preTokenizer(pre, path: "")
            decoder = .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)),
                               ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])
            // llama.cpp looks a whole pre-token up in the vocabulary before merging for LLaMA-3 (ignore_merges).
            let ignoreMerges = ["llama3", "llama-v3", "llama-bpe", "falcon3"].contains(pre)
            bpe = .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null),
                ("continuing_subword_prefix", .string("")), ("end_of_word_suffix", .string("")),
                ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)), ("ignore_merges", .bool(ignoreMerges)),
                ("vocab", vocab), ("merges", mergeList),
            ])
        }
        let root = OrderedJSON.object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null),
            ("added_tokens", .array(added)), ("normalizer", normalizer), ("pre_tokenizer", preTokenizer),
            ("post_processor", postProcessor), ("decoder", decoder), ("model", bpe),
        ])
        return Data(root.serialized(pretty: false).utf8)
    }

    public func tokenizerConfigJSON(contextLength: Int) -> Data {
        var fields: [(String, OrderedJSON)] = [
            ("add_bos_token", .bool(addBos)), ("add_eos_token", .bool(addEos)),
            ("added_tokens_decoder", .object(addedTokenIds.map { t in
                (String(t.id), .object([("content", .string(tokens[t.id])), ("lstrip", .bool(false)), ("normalized", .bool(false)),
                                        ("rstrip", .bool(false)), ("single_word", .bool(false)), ("special", .bool(t.special))]))
            })),
        ]
        if let b = bosId { fields.append(("bos_token", .string(tokens[b]))) }
        if let c = chatTemplate { fields.append(("chat_template", .string(c))) }
        fields.append(("clean_up_tokenization_spaces", .bool(false)))
        if let e = eosId { fields.append(("eos_token", .string(tokens[e]))) }
        fields.append(("model_max_length", .int(contextLength)))
        if let p = paddingId { fields.append(("pad_token", .string(tokens[p]))) }
        fields.append(("tokenizer_class", .string("PreTrainedTokenizerFast")))
        if let u = unknownId { fields.append(("unk_token", .string(tokens[u]))) }
        return Data(OrderedJSON.object(fields).serialized(pretty: true).utf8)
    }
}

/// JSON with keys kept in the order given (tokenizer.json reads best in tokenizers' own order, vocabulary
/// by id).
indirect enum OrderedJSON: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case string(String)
    case array([OrderedJSON])
    case object([(String, OrderedJSON)])

    func serialized(pretty: Bool) -> String {
        var out = ""
        write(into: &out, pretty: pretty, indent: 0)
        return out
    }

    private func write(into out: inout String, pretty: Bool, indent: Int) {
        let newline = pretty ? "\n" + String(repeating: "  ", count: indent + 1) : ""
        let close = pretty ? "\n" + String(repeating: "  ", count: indent) : ""
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let n): out += String(n)
        case .string(let s): out += jsonString(s)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                out += newline
                item.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            out += close + "]"
        case .object(let fields):
            if fields.isEmpty { out += "{}"; return }
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                out += newline + jsonString(key) + (pretty ? ": " : ":")
                value.write(into: &out, pretty: pretty, indent: indent + 1)
            }
            out += close + "}"
        }
    }
}
