import CEngineKernels

/// Element types of stored tensors, spelled as safetensors spells them. Model weights are F32, F16 or
/// BF16; the integer and F64 types appear in fixtures and reports. Computation is always in Float32
/// (Float64 for statistics and solves).
public enum DType: String, Codable, CaseIterable, Sendable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case f64 = "F64"
    case i64 = "I64"
    case i32 = "I32"
    case i16 = "I16"
    case i8 = "I8"
    case u64 = "U64"
    case u32 = "U32"
    case u16 = "U16"
    case u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// The types a model weight may be stored in (and that we write).
    public var isWeightType: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// The spelling config.json uses ("float32", "float16", "bfloat16").
    public var torchName: String {
        switch self {
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .f64: return "float64"
        default: return rawValue.lowercased()
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

/// Widens `count` elements of `dtype` stored at `src` (little-endian, any alignment) into Float32 at `dst`.
public func convertToFloat32(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .f32:
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
    case .f16:
        cengine_f16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .bf16:
        cengine_bf16_to_f32(src.assumingMemoryBound(to: UInt16.self), dst, count)
    case .f64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
    case .i64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
    case .u64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
    case .i32: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
    case .u32: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
    case .i16: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
    case .u16: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .i8: for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: Int8.self)) }
    case .u8, .bool: for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
    }
}

/// Narrows `count` Float32 values to a weight type (round to nearest even) and writes them at `dst`.
public func convertFromFloat32(_ src: UnsafePointer<Float>, count: Int, to dtype: DType, into dst: UnsafeMutableRawPointer) {
    switch dtype {
    case .f32:
        dst.copyMemory(from: src, byteCount: count * 4)
    case .f16:
        cengine_f32_to_f16(src, dst.assumingMemoryBound(to: UInt16.self), count)
    case .bf16:
        cengine_f32_to_bf16(src, dst.assumingMemoryBound(to: UInt16.self), count)
    case .f64:
        for i in 0..<count { dst.storeBytes(of: Double(src[i]), toByteOffset: 8 * i, as: Double.self) }
    default:
        preconditionFailure("convertFromFloat32: \(dtype) is not a floating-point type")
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
