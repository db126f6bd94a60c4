import Engine
import Foundation

// `prune-dist-bench make-gguf` (issue 15, target 5): a LLaMA GGUF of any size with random K-quant blocks (the
// Q4_K_M mix: Q6_K embedding and down_proj, Q4_K elsewhere, F32 norms), the metadata and tokenizer of a real
// file, for timing `convert` on a model larger than the bundled one without downloading it. With `gaussian`
// (issue 15, target 6: timing `prune` on a wide model) the linears are BF16 N(0, 1/inputs) instead, so activations
// stay at the scale of a trained model's (random K-quant blocks with unit scales have weights up to ±945).

func makeLargeGGUF(from source: URL, to out: URL, layers: Int, hidden: Int, ffn: Int, heads: Int, kvHeads: Int,
                   gaussian: Bool = false) throws {
    let file = try GGUFFile(url: source)
    let arch = try file.string("general.architecture")
    var writer = GGUFWriter()
    let sizes: [String: Int] = ["\(arch).block_count": layers, "\(arch).embedding_length": hidden, "\(arch).feed_forward_length": ffn,
                                "\(arch).attention.head_count": heads, "\(arch).attention.head_count_kv": kvHeads,
                                "\(arch).rope.dimension_count": hidden / heads]
    for key in file.metadataKeys where key != "\(arch).attention.key_length" && key != "\(arch).attention.value_length" {
        writer.metadata.append((key, sizes[key].map { .uint32(UInt32($0)) } ?? file.metadata[key]!))
    }
    guard case .array(_, let tokens) = file.metadata["tokenizer.ggml.tokens"]! else { fatalError("\(source.path): no token list") }
    var seed: UInt64 = 1
    func tensor(_ name: String, _ rowLength: Int, _ rows: Int, _ quantised: GGMLType) {
        seed += 1
        let type = quantised == .f32 ? .f32 : gaussian ? .bf16 : quantised
        let bytes: [UInt8]
        switch type {
        case .f32: bytes = encode([Float](repeating: 1, count: rowLength * rows), as: .f32)
        case .bf16: bytes = encode(randomFloats(rowLength * rows, seed: seed).map { $0 / Float(rowLength).squareRoot() }, as: .bf16)
        default: bytes = randomBlocks(type, count: rowLength * rows, seed: seed)
        }
        writer.tensors.append(.init(name: name, dimensions: rows == 1 ? [rowLength] : [rowLength, rows], type: type, bytes: bytes))
    }
    let headDim = hidden / heads
    tensor("token_embd.weight", hidden, tokens.count, .q6_K)
    for l in 0..<layers {
        tensor("blk.\(l).attn_norm.weight", hidden, 1, .f32)
        tensor("blk.\(l).attn_q.weight", hidden, heads * headDim, .q4_K)
        tensor("blk.\(l).attn_k.weight", hidden, kvHeads * headDim, .q4_K)
        tensor("blk.\(l).attn_v.weight", hidden, kvHeads * headDim, .q4_K)
        tensor("blk.\(l).attn_output.weight", heads * headDim, hidden, .q4_K)
        tensor("blk.\(l).ffn_norm.weight", hidden, 1, .f32)
        tensor("blk.\(l).ffn_gate.weight", hidden, ffn, .q4_K)
        tensor("blk.\(l).ffn_up.weight", hidden, ffn, .q4_K)
        tensor("blk.\(l).ffn_down.weight", ffn, hidden, .q6_K)
    }
    tensor("output_norm.weight", hidden, 1, .f32)
    try writer.write(to: out)
    let parameters = writer.tensors.reduce(0) { $0 + $1.dimensions.reduce(1, *) }
    print("wrote \(out.path): \(layers) blocks, hidden \(hidden), FFN \(ffn), \(heads)/\(kvHeads) heads, vocab \(tokens.count), \(parameters) parameters")
}
