import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// ggml element types this reader can dequantise, by their ids in a GGUF tensor info
/// (ggml.h `enum ggml_type`).
public enum GGMLType: UInt32, CaseIterable, Sendable {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case bf16 = 30

    /// Elements per block and bytes per block (ggml-common.h block structs).
    public var block: (elements: Int, bytes: Int) {
        switch self {
        case .f32: return (1, 4)
        case .f16, .bf16: return (1, 2)
        case .q4_0: return (32, 2 + 16)
        case .q4_1: return (32, 2 + 2 + 16)
        case .q5_0: return (32, 2 + 4 + 16)
        case .q5_1: return (32, 2 + 2 + 4 + 16)
        case .q8_0: return (32, 2 + 32)
        case .q4_K: return (256, 2 + 2 + 12 + 128)
        case .q5_K: return (256, 2 + 2 + 12 + 32 + 128)
        case .q6_K: return (256, 128 + 64 + 16 + 2)
        }
    }

    public var name: String { GGMLType.name(ofTypeID: rawValue) }

    /// ggml's name for any type id, including those we cannot read (for error messages).
    public static func name(ofTypeID id: UInt32) -> String {
        let names: [UInt32: String] = [
            0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2 (removed)", 5: "Q4_3 (removed)", 6: "Q5_0", 7: "Q5_1",
            8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
            16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
            23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
            34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return names[id] ?? "unknown"
    }
}

/// The value types of GGUF metadata (gguf.h `enum gguf_type`).
public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One metadata value. Arrays may nest (an array of arrays of strings is legal GGUF).
public indirect enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    /// The element type is kept so an empty array round-trips.
    case array(GGUFValueType, [GGUFValue])

    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Any integer type as Int (nil for other types or values beyond Int).
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// Any number as Double.
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var array: [GGUFValue]? { if case .array(_, let a) = self { return a } else { return nil } }
}

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: dimensions[0] is the fastest-varying (a row's length).
    public let dimensions: [Int]
    public let type: GGMLType
    /// Byte offset from the start of the data section.
    public let dataOffset: Int
    public let byteCount: Int

    public var count: Int { dimensions.reduce(1, *) }
    /// Row-major shape as PyTorch and safetensors spell it (ggml dimensions reversed).
    public var shape: [Int] { dimensions.reversed() }
}

/// A memory-mapped llama.cpp GGUF file (versions 2 and 3, little-endian). The header, all metadata and
/// every tensor info are parsed and checked when the file is opened (types known, offsets aligned, data
/// inside the file), so a bad file fails before any work; tensor bytes are read only when asked for.
///
/// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata entries (string key,
/// u32 value type, value); tensor infos (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type,
/// u64 offset); padding to `general.alignment` (default 32); the data section. Strings are a u64 byte
/// length and UTF-8 bytes; arrays a u32 element type, u64 count and the elements.
public final class GGUFFile: @unchecked Sendable {  // immutable after init; the mapping is read-only
    public let url: URL
    public let version: Int
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the data section in the file.
    public let dataStart: Int
    private let tensorIndex: [String: Int]
    private let file: MappedFile

    public static let defaultAlignment = 32

    public init(url: URL) throws {
        self.url = url
        file = try MappedFile(url: url, kind: "GGUF file")
        let header = try GGUFHeader.parse(file.bytes, path: url.path)
        version = header.version
        metadataKeys = header.keys
        metadata = header.metadata
        tensors = header.tensors
        alignment = header.alignment
        dataStart = header.dataStart
        tensorIndex = Dictionary(uniqueKeysWithValues: header.tensors.enumerated().map { ($1.name, $0) })
    }

    public func contains(_ name: String) -> Bool { tensorIndex[name] != nil }

    public func tensor(_ name: String) throws -> GGUFTensorInfo {
        guard let i = tensorIndex[name] else {
            throw PruneDistError(.missingTensor, "\(url.path): no tensor named \(name)")
        }
        return tensors[i]
    }

    /// The tensor's stored bytes (blocks as the file holds them), valid while this file is alive.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try tensor(name)
        return UnsafeRawBufferPointer(start: file.bytes.baseAddress.map { $0 + dataStart + info.dataOffset }, count: info.byteCount)
    }

    /// The tensor dequantised to Float32, in ggml order (row-major over the reversed dimensions).
    public func floats(_ name: String) throws -> [Float] {
        let info = try tensor(name)
        let bytes = try rawBytes(name)
        return [Float](unsafeUninitializedCapacity: info.count) { buffer, initialized in
            if let src = bytes.baseAddress, let dst = buffer.baseAddress {
                dequantize(src, type: info.type, count: info.count, into: dst)
            }
            initialized = info.count
        }
    }

    // MARK: typed metadata access, with messages naming the key

    public func value(_ key: String) throws -> GGUFValue {
        guard let v = metadata[key] else {
            throw PruneDistError(.format, "\(url.path): metadata key \(key) is missing")
        }
        return v
    }

    public func string(_ key: String) throws -> String {
        let v = try value(key)
        guard let s = v.string else { throw typeError(key, v, expected: "a string") }
        return s
    }

    public func int(_ key: String) throws -> Int {
        let v = try value(key)
        guard let n = v.int else { throw typeError(key, v, expected: "an integer") }
        return n
    }

    public func double(_ key: String) throws -> Double {
        let v = try value(key)
        guard let d = v.double else { throw typeError(key, v, expected: "a number") }
        return d
    }

    public func strings(_ key: String) throws -> [String] {
        let v = try value(key)
        guard let a = v.array else { throw typeError(key, v, expected: "an array of strings") }
        return try a.enumerated().map { i, e in
            guard let s = e.string else { throw typeError("\(key)[\(i)]", e, expected: "a string") }
            return s
        }
    }

    public func ints(_ key: String) throws -> [Int] {
        let v = try value(key)
        guard let a = v.array else { throw typeError(key, v, expected: "an array of integers") }
        return try a.enumerated().map { i, e in
            guard let n = e.int else { throw typeError("\(key)[\(i)]", e, expected: "an integer") }
            return n
        }
    }

    private func typeError(_ key: String, _ v: GGUFValue, expected: String) -> PruneDistError {
        PruneDistError(.format, "\(url.path): metadata \(key) should be \(expected), found a value of type \(v.type)")
    }
}

/// The parsed front part of a GGUF file (everything before the data section).
struct GGUFHeader {
    var version = 0
    var keys: [String] = []
    var metadata: [String: GGUFValue] = [:]
    var tensors: [GGUFTensorInfo] = []
    var alignment = GGUFFile.defaultAlignment
    var dataStart = 0

    /// ggml's limit on tensor rank.
    static let maxDimensions = 4
    /// Nested arrays deeper than this are refused (a corrupt file could otherwise recurse without bound).
    static let maxArrayDepth = 8

    static func parse(_ file: UnsafeRawBufferPointer, path: String) throws -> GGUFHeader {
        var reader = GGUFByteReader(file: file, path: path)
        var header = GGUFHeader()
        guard file.count >= 4 else {
            throw PruneDistError(.format, "\(path): not a GGUF file: \(file.count) bytes, too short for the 4-byte magic \"GGUF\"")
        }
        let magic = Array(UnsafeRawBufferPointer(rebasing: file[0..<4]))
        guard magic == Array("GGUF".utf8) else {
            let shown = magic.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            throw PruneDistError(.format, "\(path): not a GGUF file: magic is \"\(shown)\" (\(magic.map { String(format: "%02x", $0) }.joined(separator: " "))), expected \"GGUF\" (47 47 55 46)")
        }
        reader.offset = 4
        reader.context = "the version"
        let version = try reader.u32()
        guard version == 2 || version == 3 else {
            let hint = version.byteSwapped == 2 || version.byteSwapped == 3 ? " (a big-endian file, which is not supported)"
                : version == 1 ? " (GGUF v1 used 32-bit counts and is obsolete; re-convert with a current llama.cpp)" : ""
            throw PruneDistError(.unsupported, "\(path): unsupported GGUF version \(version)\(hint); supported versions are 2 and 3")
        }
        header.version = Int(version)
        reader.context = "the tensor count"
        let tensorCount = try reader.u64()
        reader.context = "the metadata count"
        let keyCount = try reader.u64()
        // Cheapest possible entries: a key (8-byte length) with a type (4) and a 1-byte value; a tensor info
        // with an empty name, no dimensions, a type and an offset (8 + 4 + 4 + 8), checked after the metadata
        // so that a truncated file is reported as truncated.
        let remaining = UInt64(file.count - reader.offset)
        guard keyCount <= remaining / 13 else {
            throw PruneDistError(.format, "\(path): truncated metadata: the header declares \(keyCount) metadata entries, but only \(remaining) bytes follow")
        }
        for k in 0..<Int(keyCount) {
            reader.context = "the key of metadata entry \(k) of \(keyCount)"
            let key = try reader.string()
            reader.context = "metadata \(key) (entry \(k) of \(keyCount))"
            let rawType = try reader.u32()
            let value = try reader.value(rawType: rawType, depth: 0)
            guard header.metadata.updateValue(value, forKey: key) == nil else {
                throw PruneDistError(.format, "\(path): metadata key \(key) appears twice")
            }
            header.keys.append(key)
        }
        let afterMetadata = UInt64(file.count - reader.offset)
        guard tensorCount <= afterMetadata / 24 else {
            throw PruneDistError(.format, "\(path): tensor count mismatch: the header declares \(tensorCount) tensors, but only \(afterMetadata) bytes follow the metadata (at most \(afterMetadata / 24) tensor infos)")
        }
        if let a = header.metadata["general.alignment"] {
            guard let n = a.int, n > 0, n & (n - 1) == 0 else {
                throw PruneDistError(.format, "\(path): general.alignment must be a positive power of two, found \(a)")
            }
            header.alignment = n
        }
        var names = Set<String>()
        for t in 0..<Int(tensorCount) {
            // A header that declares more tensors than the file lists makes the reader run into the
            // padding or the data; say so rather than only reporting the garbage it finds there.
            let name: String, dimensions: [Int], typeID: UInt32, offset: UInt64
            do {
                reader.context = "the name"
                name = try reader.string()
                reader.context = "tensor \(name)"
                let rank = try reader.u32()
                guard rank >= 1, rank <= maxDimensions else {
                    throw PruneDistError(.format, "tensor \(name): \(rank) dimensions, expected 1 to \(maxDimensions)")
                }
                var dims: [Int] = []
                for _ in 0..<rank {
                    let d = try reader.u64()
                    guard d <= UInt64(Int32.max) else {
                        throw PruneDistError(.format, "tensor \(name): dimension \(d) is implausibly large")
                    }
                    dims.append(Int(d))
                }
                dimensions = dims
                typeID = try reader.u32()
                offset = try reader.u64()
            } catch let error as PruneDistError {
                let detail = error.message.hasPrefix(path + ": ") ? String(error.message.dropFirst(path.count + 2)) : error.message
                throw PruneDistError(.format, "\(path): tensor info \(t) of the \(tensorCount) the header declares is unreadable (tensor count mismatch or truncated file): \(detail)")
            }
            guard let type = GGMLType(rawValue: typeID) else {
                let supported = GGMLType.allCases.map(\.name).joined(separator: ", ")
                throw PruneDistError(.unsupported, "\(path): tensor \(name) has ggml type id \(typeID) (\(GGMLType.name(ofTypeID: typeID))), which prune-dist cannot dequantise (supported: \(supported))")
            }
            guard dimensions[0] % type.block.elements == 0 else {
                throw PruneDistError(.shape, "\(path): tensor \(name): rows of \(dimensions[0]) elements are not a whole number of \(type.name) blocks of \(type.block.elements)")
            }
            // Each dimension is below 2^31, but four of them multiply past Int.max.
            guard let count = checkedProduct(dimensions), let byteCount = checkedProduct([count / type.block.elements, type.block.bytes]),
                  byteCount <= Int.max / 4 else {
                throw PruneDistError(.format, "\(path): tensor \(name): dimensions \(dimensions) (\(type.name)) describe more bytes than any file can hold")
            }
            guard offset <= UInt64(Int.max / 2), Int(offset) % header.alignment == 0 else {
                throw PruneDistError(.format, "\(path): tensor \(name): data offset \(offset) is not a multiple of the alignment \(header.alignment)")
            }
            guard names.insert(name).inserted else {
                throw PruneDistError(.format, "\(path): tensor \(name) is listed twice")
            }
            header.tensors.append(GGUFTensorInfo(name: name, dimensions: dimensions, type: type, dataOffset: Int(offset),
                                                 byteCount: byteCount))
        }
        let align = header.alignment
        header.dataStart = (reader.offset + align - 1) / align * align
        let dataSize = file.count - header.dataStart
        for info in header.tensors where info.dataOffset + info.byteCount > dataSize {
            throw PruneDistError(.format, "\(path): tensor \(info.name): data [\(info.dataOffset), \(info.dataOffset + info.byteCount)) (\(info.shape) \(info.type.name), \(info.byteCount) bytes) lies past the end of the \(max(dataSize, 0))-byte data section: the file is truncated")
        }
        // Tensors must not share bytes: sort by offset and compare neighbours.
        let ordered = header.tensors.filter { $0.byteCount > 0 }.sorted { $0.dataOffset < $1.dataOffset }
        for (a, b) in zip(ordered, ordered.dropFirst()) where a.dataOffset + a.byteCount > b.dataOffset {
            throw PruneDistError(.format, "\(path): tensor \(b.name) at data offset \(b.dataOffset) overlaps tensor \(a.name), which ends at \(a.dataOffset + a.byteCount)")
        }
        return header
    }
}

/// A bounds-checked little-endian cursor over the mapped file. `context` says what is being read, for the
/// truncation message.
struct GGUFByteReader {
    let file: UnsafeRawBufferPointer
    let path: String
    var offset = 0
    var context = ""

    init(file: UnsafeRawBufferPointer, path: String) {
        self.file = file
        self.path = path
    }

    private mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, n <= file.count - offset else {
            throw PruneDistError(.format, "\(path): truncated metadata: reading \(context) needs \(n) bytes at offset \(offset), but the file ends at \(file.count)")
        }
        defer { offset += n }
        return offset
    }

    mutating func u8() throws -> UInt8 { file[try take(1)] }
    mutating func u16() throws -> UInt16 { UInt16(littleEndian: file.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self)) }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: file.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: file.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self)) }

    mutating func string() throws -> String {
        let length = try u64()
        guard length <= UInt64(file.count - offset) else {
            throw PruneDistError(.format, "\(path): truncated metadata: reading \(context): a string of \(length) bytes at offset \(offset), but the file ends at \(file.count)")
        }
        let start = try take(Int(length))
        let bytes = UnsafeRawBufferPointer(rebasing: file[start..<start + Int(length)])
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw PruneDistError(.format, "\(path): reading \(context): the string at offset \(start) is not valid UTF-8")
        }
        return s
    }

    mutating func value(rawType: UInt32, depth: Int) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw PruneDistError(.format, "\(path): reading \(context): unknown metadata value type \(rawType) at offset \(offset - 4) (expected 0 to 12)")
        }
        switch type {
        case .uint8: return .uint8(try u8())
        case .int8: return .int8(Int8(bitPattern: try u8()))
        case .uint16: return .uint16(try u16())
        case .int16: return .int16(Int16(bitPattern: try u16()))
        case .uint32: return .uint32(try u32())
        case .int32: return .int32(Int32(bitPattern: try u32()))
        case .uint64: return .uint64(try u64())
        case .int64: return .int64(Int64(bitPattern: try u64()))
        case .float32: return .float32(Float(bitPattern: try u32()))
        case .float64: return .float64(Double(bitPattern: try u64()))
        case .bool:
            let b = try u8()
            guard b <= 1 else {
                throw PruneDistError(.format, "\(path): reading \(context): boolean byte \(b) at offset \(offset - 1) is neither 0 nor 1")
            }
            return .bool(b == 1)
        case .string: return .string(try string())
        case .array:
            guard depth < GGUFHeader.maxArrayDepth else {
                throw PruneDistError(.format, "\(path): reading \(context): arrays nested deeper than \(GGUFHeader.maxArrayDepth) levels")
            }
            let elementRaw = try u32()
            guard let elementType = GGUFValueType(rawValue: elementRaw) else {
                throw PruneDistError(.format, "\(path): reading \(context): unknown array element type \(elementRaw) at offset \(offset - 4)")
            }
            let count = try u64()
            // Every element takes at least one byte: a count beyond the rest of the file is truncation.
            guard count <= UInt64(file.count - offset) else {
                throw PruneDistError(.format, "\(path): truncated metadata: reading \(context): an array of \(count) elements at offset \(offset), but only \(file.count - offset) bytes remain")
            }
            var elements: [GGUFValue] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                elements.append(try value(rawType: elementRaw, depth: depth + 1))
            }
            return .array(elementType, elements)
        }
    }
}
