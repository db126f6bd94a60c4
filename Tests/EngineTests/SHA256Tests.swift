import Engine
import Foundation
import TestSupport
import XCTest

final class SHA256Tests: XCTestCase {
    /// FIPS 180-2's published examples (one block, two blocks at the 56-byte padding boundary, a million "a").
    func testPublishedVectors() {
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Fed in uneven pieces or read from a file, every length around the block boundaries gives the one-shot digest.
    func testChunkedAndFileDigestsAgree() throws {
        var random = Engine.SplitMix64(seed: 5)
        let dir = try Fixtures.temporaryDirectory("sha")
        defer { try? FileManager.default.removeItem(at: dir) }
        for length in [1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let whole = SHA256.hex(bytes)
            var pieces = SHA256()
            var start = 0
            while start < length {
                let n = min(length - start, 1 + Int(random.next() % 70))
                pieces.update(bytes[start..<(start + n)])
                start += n
            }
            XCTAssertEqual(pieces.hexDigest(), whole, "length \(length)")
            let url = dir.appendingPathComponent("f\(length)")
            try Data(bytes).write(to: url)
            let file = try SHA256.file(url)
            XCTAssertEqual(file.hex, whole)
            XCTAssertEqual(file.bytes, length)
        }
    }
}
