import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte offset of the tensor's first byte from the start of the data section.
    public let dataOffset: Int
    public let byteCount: Int

    public var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file. The header is validated completely when the file is opened, so a
/// corrupt file is reported before any work starts; tensor bytes are touched only when asked for.
///
/// Layout: 8-byte little-endian header length n, n bytes of JSON
/// `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
/// then the data section, to which the offsets are relative.
public final class SafetensorsFile: @unchecked Sendable {  // immutable after init; the mapping is read-only
    public let url: URL
    public let metadata: [String: String]
    /// Tensor names in the order of their data in the file.
    public let names: [String]
    private let infos: [String: TensorInfo]
    private let file: MappedFile
    private let dataStart: Int

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        file = try MappedFile(url: url, kind: "safetensors file")
        guard file.bytes.count >= 8 else {
            throw PruneDistError(.format, "\(path): truncated safetensors file: \(file.bytes.count) bytes, but the header length alone takes 8")
        }
        let parsed = try SafetensorsFile.parseHeader(file.bytes, path: path)
        names = parsed.names
        infos = parsed.infos
        metadata = parsed.metadata
        dataStart = parsed.dataStart
    }

    static func parseHeader(_ file: UnsafeRawBufferPointer, path: String)
        throws -> (names: [String], infos: [String: TensorInfo], metadata: [String: String], dataStart: Int)
    {
        let headerLength = file.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(file.count - 8) else {
            throw PruneDistError(.format, "\(path): header length \(headerLength) bytes goes beyond the end of the file (\(file.count) bytes in all): the file is truncated or not safetensors")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = file.count - dataStart
        let headerBytes = Data(UnsafeRawBufferPointer(rebasing: file[8..<dataStart]))
        guard let json = try? JSONSerialization.jsonObject(with: headerBytes), let header = json as? [String: Any] else {
            throw PruneDistError(.format, "\(path): the \(headerLength)-byte header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var infos: [String: TensorInfo] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let entries = value as? [String: Any] else {
                    throw PruneDistError(.format, "\(path): __metadata__ is not an object of strings")
                }
                for (key, v) in entries {
                    guard let s = v as? String else {
                        throw PruneDistError(.format, "\(path): __metadata__[\(key)] is not a string")
                    }
                    metadata[key] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else {
                throw PruneDistError(.format, "\(path): tensor \(name): header entry is not an object")
            }
            guard let dtypeName = entry["dtype"] as? String else {
                throw PruneDistError(.format, "\(path): tensor \(name): missing dtype")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw PruneDistError(.dtype, "\(path): tensor \(name): unknown dtype \(dtypeName) (expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let shapeValues = entry["shape"] as? [Any], let shape = integers(shapeValues), shape.allSatisfy({ $0 >= 0 }) else {
                throw PruneDistError(.format, "\(path): tensor \(name): shape is not a list of non-negative integers")
            }
            guard let offsetValues = entry["data_offsets"] as? [Any], let offsets = integers(offsetValues), offsets.count == 2 else {
                throw PruneDistError(.format, "\(path): tensor \(name): data_offsets is not a pair of integers")
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw PruneDistError(.format, "\(path): tensor \(name): data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
            }
            let bytes = checkedProduct(shape + [dtype.size])
            guard bytes == end - begin else {
                throw PruneDistError(.shape, "\(path): tensor \(name): shape \(shape) × \(dtypeName) (\(dtype.size) bytes) needs \(bytes.map(String.init) ?? "an overflowing number of") bytes, but data_offsets [\(begin), \(end)] span \(end - begin)")
            }
            infos[name] = TensorInfo(name: name, dtype: dtype, shape: shape, dataOffset: begin, byteCount: end - begin)
        }
        let ordered = infos.values.sorted { ($0.dataOffset, $0.name) < ($1.dataOffset, $1.name) }
        var previousEnd = 0
        var previousName = ""
        for info in ordered where info.byteCount > 0 {
            guard info.dataOffset >= previousEnd else {
                throw PruneDistError(.format, "\(path): tensor \(info.name): data_offsets [\(info.dataOffset), \(info.dataOffset + info.byteCount)] overlap tensor \(previousName), which ends at \(previousEnd)")
            }
            previousEnd = info.dataOffset + info.byteCount
            previousName = info.name
        }
        return (ordered.map(\.name), infos, metadata, dataStart)
    }

    private static func integers(_ values: [Any]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            guard let n = v as? NSNumber, n.doubleValue == n.doubleValue.rounded(), abs(n.doubleValue) < 9.0e15 else { return nil }
            out.append(n.intValue)
        }
        return out
    }

    public func contains(_ name: String) -> Bool { infos[name] != nil }

    public func info(_ name: String) throws -> TensorInfo {
        guard let info = infos[name] else {
            throw PruneDistError(.missingTensor, "\(url.path): no tensor named \(name)")
        }
        return info
    }

    /// The tensor's bytes inside the mapping (valid while this file object lives).
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(start: file.bytes.baseAddress.map { $0 + dataStart + info.dataOffset }, count: info.byteCount)
    }

    /// The tensor widened to Float32 (from any dtype).
    public func floats(_ name: String) throws -> [Float] {
        let info = try info(name)
        let bytes = try rawBytes(name)
        return [Float](unsafeUninitializedCapacity: info.count) { buffer, initialized in
            if info.count > 0 { convertToFloat32(bytes.baseAddress!, dtype: info.dtype, count: info.count, into: buffer.baseAddress!) }
            initialized = info.count
        }
    }

    public func doubles(_ name: String) throws -> [Double] {
        let info = try info(name)
        if info.dtype == .f64 {
            let bytes = try rawBytes(name)
            return (0..<info.count).map { bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) }
        }
        return try floats(name).map(Double.init)
    }

    public func int64s(_ name: String) throws -> [Int64] {
        let info = try info(name)
        let bytes = try rawBytes(name)
        switch info.dtype {
        case .i64: return (0..<info.count).map { bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }
        case .i32: return (0..<info.count).map { Int64(bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        case .u8, .bool: return bytes.map { Int64($0) }
        default:
            throw PruneDistError(.dtype, "\(url.path): tensor \(name): expected an integer dtype, found \(info.dtype.rawValue)")
        }
    }

    /// A copy of the tensor's raw little-endian bytes.
    public func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try rawBytes(name))
    }
}
