/// One value for each of a block's seven linears. Where every linear always has a value (weights, owners,
/// shapes), this replaces a `[LlamaLinear: T]` dictionary: the subscript is total, so no force-unwrap, and a
/// missing linear is a compile error rather than a crash.
public struct PerLinear<T> {
    public var q: T, k: T, v: T, o: T, gate: T, up: T, down: T

    public init(q: T, k: T, v: T, o: T, gate: T, up: T, down: T) {
        (self.q, self.k, self.v, self.o, self.gate, self.up, self.down) = (q, k, v, o, gate, up, down)
    }

    /// The value `body` gives each linear, called in `LlamaLinear.allCases` order.
    public init(_ body: (LlamaLinear) throws -> T) rethrows {
        self.init(q: try body(.q), k: try body(.k), v: try body(.v), o: try body(.o),
                  gate: try body(.gate), up: try body(.up), down: try body(.down))
    }

    /// The same value for every linear.
    public init(repeating value: T) {
        self.init(q: value, k: value, v: value, o: value, gate: value, up: value, down: value)
    }

    public subscript(linear: LlamaLinear) -> T {
        get {
            switch linear {
            case .q: return q
            case .k: return k
            case .v: return v
            case .o: return o
            case .gate: return gate
            case .up: return up
            case .down: return down
            }
        }
        set {
            switch linear {
            case .q: q = newValue
            case .k: k = newValue
            case .v: v = newValue
            case .o: o = newValue
            case .gate: gate = newValue
            case .up: up = newValue
            case .down: down = newValue
            }
        }
    }

    /// Runs `body` on one linear's value in place (no copy-on-write copy, unlike `values[linear] += …` through the
    /// subscript's get and set).
    public mutating func update<R>(_ linear: LlamaLinear, _ body: (inout T) throws -> R) rethrows -> R {
        switch linear {
        case .q: return try body(&q)
        case .k: return try body(&k)
        case .v: return try body(&v)
        case .o: return try body(&o)
        case .gate: return try body(&gate)
        case .up: return try body(&up)
        case .down: return try body(&down)
        }
    }

    public func map<U>(_ transform: (T) throws -> U) rethrows -> PerLinear<U> {
        try PerLinear<U> { try transform(self[$0]) }
    }

    /// (linear, value) pairs in `LlamaLinear.allCases` order.
    public var all: [(linear: LlamaLinear, value: T)] { LlamaLinear.allCases.map { ($0, self[$0]) } }
}

extension PerLinear: Equatable where T: Equatable {}
extension PerLinear: Hashable where T: Hashable {}
extension PerLinear: Sendable where T: Sendable {}

/// Coded as an object keyed by the linears' names ("self_attn.q_proj", …).
extension PerLinear: Codable where T: Codable {
    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        try self.init { try container.decode(T.self, forKey: Key(stringValue: $0.rawValue)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (linear, value) in all { try container.encode(value, forKey: Key(stringValue: linear.rawValue)) }
    }
}
