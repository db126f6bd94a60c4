import CEngineKernels
import Engine
import Foundation

// `prune-dist-bench dequantize` (issue 15, target 5): GGUF block dequantisation, one thread, as GB/s of Float32
// output per core, on random blocks of every supported type (scales set to 1.0 so no block is NaN or denormal),
// and the whole per-tensor path of `convert` (dequantise, NaN/Inf check, narrow to bf16).

/// Random blocks of `type` holding `count` values; every f16 scale field is 1.0 (f16 and bf16: Gaussian values).
func randomBlocks(_ type: GGMLType, count: Int, seed: UInt64) -> [UInt8] {
    if type == .f16 || type == .bf16 { return encode(randomFloats(count, seed: seed), as: type == .f16 ? .f16 : .bf16) }
    var random = SplitMix64(seed: seed)
    let (elements, size) = type.block
    var bytes = (0..<(count / elements * size)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    // Offsets of the f16 scales in each block (ggml-common.h); 0x3C00 is 1.0.
    let scaleOffsets: [Int]
    switch type {
    case .q4_0, .q5_0, .q8_0: scaleOffsets = [0]
    case .q4_1, .q5_1, .q4_K, .q5_K: scaleOffsets = [0, 2]
    case .q6_K: scaleOffsets = [208]
    default: scaleOffsets = []
    }
    for block in stride(from: 0, to: bytes.count, by: size) {
        for offset in scaleOffsets { bytes[block + offset] = 0x00; bytes[block + offset + 1] = 0x3C }
    }
    return bytes
}

func runDequantizeBench(values: Int, repeats: Int) {
    print("dequantisation, one thread, \(values) values per type, CPU seconds best of \(repeats); GB/s of Float32 output")
    print("type".padding(toLength: 6, withPad: " ", startingAt: 0) + "  dequantise  + NaN check  + bf16 (convert's path)")
    let types: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .f16, .bf16]
    var slowest = Double.infinity
    for type in types {
        let blocks = randomBlocks(type, count: values, seed: 11)
        var output = [Float](repeating: 0, count: values)
        let dequantise = best(repeats) {
            blocks.withUnsafeBytes { src in
                output.withUnsafeMutableBufferPointer { dequantize(src.baseAddress!, type: type, count: values, into: $0.baseAddress!) }
            }
        }
        var bad = 0
        let checked = best(repeats) {
            blocks.withUnsafeBytes { src in
                output.withUnsafeMutableBufferPointer { dst in
                    dequantize(src.baseAddress!, type: type, count: values, into: dst.baseAddress!)
                    bad = cengine_first_nonfinite(dst.baseAddress!, values)
                }
            }
        }
        guard bad == values else { fatalError("\(type.name): random blocks with unit scales dequantised to \(output[bad]) at \(bad)") }
        let converted = best(repeats) {
            let floats = dequantize(blocks, type: type)
            _ = floats.withUnsafeBufferPointer { cengine_first_nonfinite($0.baseAddress!, values) }
            _ = encode(floats, as: .bf16)
        }
        let rate = { (seconds: Double) in Double(values * 4) / seconds / 1e9 }
        print(type.name.padding(toLength: 6, withPad: " ", startingAt: 0)
              + String(format: "  %10.2f  %11.2f  %22.2f", rate(dequantise), rate(checked), rate(converted)))
        if type != .f16 && type != .bf16 { slowest = min(slowest, rate(dequantise)) }
    }
    print(String(format: "slowest quantised type: %.2f GB/s per core (target ≥ 1)", slowest))
}
