import CEngineKernels

/// Dequantises `count` values of `type` stored at `src` (ggml's packed blocks, little-endian, any
/// alignment) into Float32 at `dst`. `count` must be a whole number of blocks (the GGUF reader checks
/// every tensor's rows are). The block loops are C (CEngineKernels/dequantize.c): they run once per
/// weight of the model and Swift's unoptimised builds would make a test conversion take minutes.
///
/// dst: [count]
public func dequantize(_ src: UnsafeRawPointer, type: GGMLType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    precondition(count % type.block.elements == 0, "dequantize: \(count) values are not whole \(type.name) blocks")
    let blocks = count / type.block.elements
    let bytes = src.assumingMemoryBound(to: UInt8.self)
    switch type {
    case .f32: convertToFloat32(src, dtype: .f32, count: count, into: dst)
    case .f16: convertToFloat32(src, dtype: .f16, count: count, into: dst)
    case .bf16: convertToFloat32(src, dtype: .bf16, count: count, into: dst)
    case .q4_0: cengine_dequantize_q4_0(bytes, blocks, dst)
    case .q4_1: cengine_dequantize_q4_1(bytes, blocks, dst)
    case .q5_0: cengine_dequantize_q5_0(bytes, blocks, dst)
    case .q5_1: cengine_dequantize_q5_1(bytes, blocks, dst)
    case .q8_0: cengine_dequantize_q8_0(bytes, blocks, dst)
    case .q4_K: cengine_dequantize_q4_K(bytes, blocks, dst)
    case .q5_K: cengine_dequantize_q5_K(bytes, blocks, dst)
    case .q6_K: cengine_dequantize_q6_K(bytes, blocks, dst)
    }
}

/// Dequantises whole blocks held in a byte array (tests and small tensors).
public func dequantize(_ bytes: [UInt8], type: GGMLType) -> [Float] {
    let count = bytes.count / type.block.bytes * type.block.elements
    precondition(bytes.count % type.block.bytes == 0, "dequantize: \(bytes.count) bytes are not whole \(type.name) blocks")
    return [Float](unsafeUninitializedCapacity: count) { out, initialized in
        bytes.withUnsafeBytes { src in
            if let s = src.baseAddress, let d = out.baseAddress { dequantize(s, type: type, count: count, into: d) }
        }
        initialized = count
    }
}
