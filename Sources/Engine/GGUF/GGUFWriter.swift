import Foundation

/// Builds GGUF files byte by byte: test inputs (every metadata type, any tensor type, deliberately broken
/// headers) and small models. Tensors are given as their stored bytes.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        /// ggml order: dimensions[0] is a row's length.
        public var dimensions: [Int]
        /// A ggml type id (an unknown id is written as given).
        public var typeID: UInt32
        public var bytes: [UInt8]

        public init(name: String, dimensions: [Int], type: GGMLType, bytes: [UInt8]) {
            self.init(name: name, dimensions: dimensions, typeID: type.rawValue, bytes: bytes)
        }

        public init(name: String, dimensions: [Int], typeID: UInt32, bytes: [UInt8]) {
            self.name = name
            self.dimensions = dimensions
            self.typeID = typeID
            self.bytes = bytes
        }
    }

    public var version: UInt32 = 3
    public var metadata: [(key: String, value: GGUFValue)] = []
    public var tensors: [Tensor] = []
    /// Written into the header instead of `tensors.count` when set (to build inconsistent files).
    public var declaredTensorCount: UInt64?

    public init(version: UInt32 = 3) { self.version = version }

    /// `general.alignment` when present, else 32.
    public var alignment: Int {
        metadata.first { $0.key == "general.alignment" }?.value.int ?? GGUFFile.defaultAlignment
    }

    public func bytes() -> [UInt8] {
        var out: [UInt8] = Array("GGUF".utf8)
        append(&out, version)
        append(&out, declaredTensorCount ?? UInt64(tensors.count))
        append(&out, UInt64(metadata.count))
        for (key, value) in metadata {
            appendString(&out, key)
            append(&out, value.type.rawValue)
            appendValue(&out, value)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset = (offset + t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            appendString(&out, t.name)
            append(&out, UInt32(t.dimensions.count))
            for d in t.dimensions { append(&out, UInt64(d)) }
            append(&out, t.typeID)
            append(&out, UInt64(o))
        }
        let dataStart = (out.count + alignment - 1) / alignment * alignment
        out += [UInt8](repeating: 0, count: dataStart - out.count)
        for (t, o) in zip(tensors, offsets) {
            out += [UInt8](repeating: 0, count: dataStart + o - out.count)
            out += t.bytes
        }
        return out
    }

    public func write(to url: URL) throws {
        try Data(bytes()).write(to: url)
    }

    private func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }

    private func appendString(_ out: inout [UInt8], _ s: String) {
        append(&out, UInt64(s.utf8.count))
        out += Array(s.utf8)
    }

    private func appendValue(_ out: inout [UInt8], _ value: GGUFValue) {
        switch value {
        case .uint8(let v): append(&out, v)
        case .int8(let v): append(&out, v)
        case .uint16(let v): append(&out, v)
        case .int16(let v): append(&out, v)
        case .uint32(let v): append(&out, v)
        case .int32(let v): append(&out, v)
        case .uint64(let v): append(&out, v)
        case .int64(let v): append(&out, v)
        case .float32(let v): append(&out, v.bitPattern)
        case .float64(let v): append(&out, v.bitPattern)
        case .bool(let b): out.append(b ? 1 : 0)
        case .string(let s): appendString(&out, s)
        case .array(let type, let items):
            append(&out, type.rawValue)
            append(&out, UInt64(items.count))
            for item in items { appendValue(&out, item) }
        }
    }
}
