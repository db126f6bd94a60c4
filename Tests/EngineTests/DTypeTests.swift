import XCTest
@testable import Engine

final class DTypeTests: XCTestCase {
    /// Every finite half and bfloat16 value must survive widening and narrowing unchanged.
    func testHalfAndBFloatRoundTripEveryBitPattern() {
        for dtype in [DType.f16, DType.bf16] {
            let all = (0...0xFFFF).map { UInt16($0) }
            var wide = [Float](repeating: 0, count: all.count)
            all.withUnsafeBytes { src in
                wide.withUnsafeMutableBufferPointer { convertToFloat32(src.baseAddress!, dtype: dtype, count: all.count, into: $0.baseAddress!) }
            }
            let narrow = encode(wide, as: dtype)
            for (i, bits) in all.enumerated() {
                let back = UInt16(narrow[2 * i]) | UInt16(narrow[2 * i + 1]) << 8
                if wide[i].isNaN {
                    XCTAssertTrue(back & 0x7FFF > (dtype == .f16 ? 0x7C00 : 0x7F80), "\(dtype) NaN \(bits)")
                } else {
                    XCTAssertEqual(back, bits, "\(dtype) pattern \(String(bits, radix: 16))")
                }
            }
        }
    }

    /// Narrowing rounds to nearest even, as torch does.
    func testRoundingToNearestEven() {
        // 1 + 2^-8 is exactly halfway between two bfloat16 values (1 and 1 + 2^-7): ties go to even (1).
        let halfway = Float(bitPattern: 0x3F80_8000)
        let above = Float(bitPattern: 0x3F80_8001)
        let bytes = encode([halfway, above, 65520, 1e-8], as: .bf16)
        XCTAssertEqual(UInt16(bytes[0]) | UInt16(bytes[1]) << 8, 0x3F80)
        XCTAssertEqual(UInt16(bytes[2]) | UInt16(bytes[3]) << 8, 0x3F81)
        let half = encode([65520, 2049, 6e-8], as: .f16)
        XCTAssertEqual(UInt16(half[0]) | UInt16(half[1]) << 8, 0x7C00)  // overflows to +Inf
        XCTAssertEqual(UInt16(half[2]) | UInt16(half[3]) << 8, 0x6800)  // 2049 → 2048 (even)
        XCTAssertEqual(UInt16(half[4]) | UInt16(half[5]) << 8, 0x0001)  // smallest subnormal
    }
}
