import Engine
import Foundation

/// What the runs write again and again on top of the raw collectives: the round-robin share of a list, and
/// Codable values sent as JSON (settings, windows, report entries, kept groups).
extension Communicator {
    /// The elements this rank takes when `items` are dealt round-robin: element i goes to rank i mod size. Every
    /// rank that passes the same list gets a disjoint share; together the shares are the list.
    public func shard<Element>(_ items: [Element]) -> [Element] {
        shardIndices(items.count).map { items[$0] }
    }

    /// The indices 0..<count this rank takes when they are dealt round-robin (i on rank i mod size), ascending.
    public func shardIndices(_ count: Int) -> [Int] {
        Array(stride(from: rank, to: count, by: size))
    }

    /// Root's `value` on every rank. Other ranks pass nil (or anything: only root's value is read).
    public func broadcast<Value: Codable>(_ value: Value?, root: Int) throws -> Value {
        var data = Data()
        if rank == root {
            guard let value else { throw communicationError("broadcast", "root \(root) has no value to send") }
            data = try CommunicatorCoding.encoder.encode(value)
        }
        try broadcast(&data, root: root)
        return try CommunicatorCoding.decode(Value.self, from: data, operation: "broadcast", comm: self)
    }

    /// Every rank's `value`, in rank order, on root; [] on the other ranks.
    public func gather<Value: Codable>(_ value: Value, root: Int) throws -> [Value] {
        let all = try gather(try CommunicatorCoding.encoder.encode(value), root: root)
        return try all.map { try CommunicatorCoding.decode(Value.self, from: $0, operation: "gather", comm: self) }
    }

    /// Every rank's `value`, in rank order, on every rank.
    public func allgather<Value: Codable>(_ value: Value) throws -> [Value] {
        let all = try allgather(try CommunicatorCoding.encoder.encode(value))
        return try all.map { try CommunicatorCoding.decode(Value.self, from: $0, operation: "allgather", comm: self) }
    }
}

/// JSON as the typed collectives send it. Infinite and NaN values (a collapsed trial's perplexity) travel as
/// strings, which plain JSON cannot carry as numbers; finite Doubles round-trip exactly.
enum CommunicatorCoding {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    static func decode<Value: Decodable>(_ type: Value.Type, from data: Data, operation: String, comm: Communicator) throws -> Value {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            return try decoder.decode(type, from: data)
        } catch {
            throw comm.communicationError(operation, "the \(data.count) bytes received are not a \(Value.self): \(error)")
        }
    }
}

/// Arrays of numbers gathered as their raw bytes (not JSON): the row bands of a linear solved by several ranks.
extension Communicator {
    /// Every rank's values concatenated in rank order, on every rank (counts may differ between ranks).
    public func allgatherDoubles(_ values: [Double]) throws -> [Double] {
        try allgather(values.withUnsafeBytes { Data($0) }).flatMap { try numbers(Double.self, from: $0, operation: "allgather") }
    }

    /// Every rank's values concatenated in rank order, on root; [] on the other ranks.
    public func gatherFloats(_ values: [Float], root: Int) throws -> [Float] {
        try gather(values.withUnsafeBytes { Data($0) }, root: root).flatMap { try numbers(Float.self, from: $0, operation: "gather") }
    }

    private func numbers<Number: BinaryFloatingPoint>(_ type: Number.Type, from data: Data, operation: String) throws -> [Number] {
        let size = MemoryLayout<Number>.size
        guard data.count % size == 0 else {
            throw communicationError(operation, "\(data.count) bytes received are not whole \(Number.self) values")
        }
        return [Number](unsafeUninitializedCapacity: data.count / size) { buffer, count in
            count = data.copyBytes(to: buffer) / size
        }
    }
}
