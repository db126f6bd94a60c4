import Foundation

/// A file of token ids: raw little-endian uint16 when the name ends in `.u16`, else a JSON array of integers.
public enum TokenFile {
    public static func read(_ url: URL) throws -> [Int] {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw PruneDistError(.io, "cannot read token file \(url.path): \(error.localizedDescription)")
        }
        if url.pathExtension.lowercased() == "u16" {
            guard data.count % 2 == 0 else {
                throw PruneDistError(.data, "\(url.path): \(data.count) bytes is an odd length; a .u16 token file "
                                     + "holds 2-byte little-endian ids")
            }
            return data.withUnsafeBytes { raw in
                let bytes = raw.bindMemory(to: UInt8.self)
                return (0..<(bytes.count / 2)).map { Int(bytes[2 * $0]) | Int(bytes[2 * $0 + 1]) << 8 }
            }
        }
        let expected = "expected a JSON array of non-negative integer token ids"
        guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
            throw PruneDistError(.data, "\(url.path): not a JSON array; \(expected)")
        }
        return try array.enumerated().map { index, value in
            guard let id = jsonInt(value), id >= 0 else {
                throw PruneDistError(.data, "\(url.path): element \(index) is \(value); \(expected)")
            }
            return id
        }
    }
}
