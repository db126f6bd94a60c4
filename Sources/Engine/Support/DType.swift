import CEngineKernels

/// Element types of stored tensors. Computation is always in Float32 (or Float64 for statistics).
public enum DType: String, Codable, CaseIterable, Sendable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        }
    }

    /// The spelling config.json uses ("float32", "float16", "bfloat16").
    public var torchName: String {
        switch self {
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        }
    }

    public init?(torchName: String) {
        switch torchName.lowercased() {
        case "float32", "fp32", "f32": self = .f32
        case "float16", "fp16", "f16", "half": self = .f16
        case "bfloat16", "bf16": self = .bf16
        default: return nil
        }
    }
}

/// Widens `count` elements of `dtype` stored at `src` (little-endian) into Float32 at `dst`.
public func convertToFloat32(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        cengine_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .bf16:
        cengine_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    }
}

/// Narrows `count` Float32 values to `dtype` (round to nearest even) and writes them at `dst`.
public func convertFromFloat32(_ src: UnsafePointer<Float>, count: Int, to dtype: DType, into dst: UnsafeMutableRawPointer) {
    switch dtype {
    case .f32:
        dst.copyMemory(from: src, byteCount: count * 4)
    case .f16:
        cengine_f32_to_f16(src, dst.assumingMemoryBound(to: UInt16.self), count)
    case .bf16:
        cengine_f32_to_bf16(src, dst.assumingMemoryBound(to: UInt16.self), count)
    }
}

/// Encodes Float32 values as the bytes of `dtype`, little-endian.
public func encode(_ values: [Float], as dtype: DType) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: values.count * dtype.size)
    values.withUnsafeBufferPointer { src in
        bytes.withUnsafeMutableBytes { dst in
            guard let s = src.baseAddress, let d = dst.baseAddress else { return }
            convertFromFloat32(s, count: values.count, to: dtype, into: d)
        }
    }
    return bytes
}
