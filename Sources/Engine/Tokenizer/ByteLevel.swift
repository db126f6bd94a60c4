/// GPT-2's reversible map between the 256 byte values and printable Unicode scalars. Byte-level BPE
/// vocabularies are written in these scalars: printable Latin-1 bytes stand for themselves, the other
/// 68 bytes (controls, space, DEL, NBSP, soft hyphen) are shifted to U+0100…U+0143 in byte order, so
/// that a space becomes "Ġ" (U+0120) and a newline "Ċ" (U+010A).
enum ByteLevelAlphabet {
    /// scalarForByte: [256], the symbol standing for each byte value.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// byteForScalarValue: [324], the byte a symbol stands for, or -1 for scalars outside the alphabet.
    static let byteForScalarValue: [Int16] = {
        var table = [Int16](repeating: -1, count: 256 + 68)
        for (byte, scalar) in scalarForByte.enumerated() { table[Int(scalar.value)] = Int16(byte) }
        return table
    }()

    /// The byte a symbol stands for, or nil when the scalar is not one of the 256 symbols.
    @inline(__always)
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let value = Int(scalar.value)
        guard value < byteForScalarValue.count else { return nil }
        let byte = byteForScalarValue[value]
        return byte < 0 ? nil : UInt8(byte)
    }

    /// Appends the byte-level symbols of the UTF-8 encoding of `scalars`.
    /// scalars: [n] text; symbols: grows by the UTF-8 length of the text
    static func appendSymbols(of scalars: ArraySlice<Unicode.Scalar>, to symbols: inout [Unicode.Scalar]) {
        for scalar in scalars {
            let value = scalar.value
            if value < 0x80 {
                symbols.append(scalarForByte[Int(value)])
            } else {
                for byte in UTF8.encode(scalar)! { symbols.append(scalarForByte[Int(byte)]) }
            }
        }
    }
}

/// The character classes the pre-tokenizer regexes distinguish: `\p{L}`, `\p{N}`, `\s` and the rest.
/// `\s` is Unicode White_Space (what Oniguruma and Rust's `char::is_whitespace` use); `\p{N}` is the
/// general categories Nd, Nl and No (also Rust's `char::is_numeric`).
enum ScalarClass: UInt8 {
    case letter, number, space, other

    @inline(__always)
    static func of(_ scalar: Unicode.Scalar) -> ScalarClass {
        let value = scalar.value
        if value < 0x80 {
            // Plain comparisons: cheaper than a table behind a lazily initialised global.
            if (value | 0x20) &- 0x61 < 26 { return .letter }
            if value &- 0x30 < 10 { return .number }
            if value == 0x20 || value &- 0x09 < 5 { return .space }
            return .other
        }
        let properties = scalar.properties
        if properties.isWhitespace { return .space }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }
}
