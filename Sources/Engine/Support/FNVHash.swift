import Foundation

/// FNV-1a, 64-bit, as 16 hex digits: detects changed inputs (run fingerprints, test snapshots); not a
/// defence against crafted collisions.
public func hashHex(_ data: Data) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    data.withUnsafeBytes { bytes in
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
    }
    return String(format: "%016llx", hash)
}
