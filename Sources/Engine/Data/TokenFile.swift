import Foundation

/// A file of token ids: a JSON array of integers, or raw little-endian uint16 when the name ends in `.u16`.
public enum TokenFile {
    public static func read(_ url: URL) throws -> [Int] {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw PruneDistError(.io, "\(url.path): cannot read token file (\(error.localizedDescription))")
        }
        if url.pathExtension == "u16" {
            guard data.count % 2 == 0 else {
                throw PruneDistError(.data, "\(url.path): \(data.count) bytes is not a whole number of uint16 token ids")
            }
            return data.withUnsafeBytes { raw in
                (0..<(data.count / 2)).map { Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
            }
        }
        guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
            throw PruneDistError(.data, "\(url.path): expected a JSON array of token ids (or a .u16 file of raw little-endian uint16)")
        }
        return try array.enumerated().map { index, value in
            guard let number = value as? NSNumber, let id = Int(exactly: number.doubleValue), id >= 0 else {
                throw PruneDistError(.data, "\(url.path): element \(index) is \(value), expected a non-negative integer token id")
            }
            return id
        }
    }
}
