import Foundation

/// tokenizer.json's `decoder`: turns the token strings of a sequence of ids back into text.
/// Each step maps a list of strings to a list of strings, as in Hugging Face's decode_chain.
indirect enum TokenDecoder: Sendable {
    case sequence([TokenDecoder])
    /// Byte-level symbols back to bytes, then UTF-8 with invalid sequences replaced by U+FFFD. A token
    /// holding any scalar outside the byte alphabet (an added token such as "<|im_start|>" may) contributes
    /// its own UTF-8 bytes instead.
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme)
    case replace(ReplacePattern, with: String)
    /// Runs of "<0xXX>" tokens become the text their bytes encode (one U+FFFD per byte if not valid UTF-8).
    case byteFallback
    case fuse
    /// Removes up to `start` leading and `stop` trailing `content` characters from each token.
    case strip(content: Character, start: Int, stop: Int)

    /// tokens: [t] token strings in order
    func decode(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let steps):
            return steps.reduce(tokens) { $1.decode($0) }

        case .byteLevel:
            var bytes = [UInt8]()
            for token in tokens {
                let mapped = token.unicodeScalars.compactMap(ByteLevelAlphabet.byte(for:))
                if mapped.count == token.unicodeScalars.count {
                    bytes.append(contentsOf: mapped)
                } else {
                    bytes.append(contentsOf: token.utf8)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]

        case .metaspace(let replacement, let prepend):
            return tokens.enumerated().map { index, token in
                var out = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar != replacement {
                        out.append(scalar)
                    } else if !(index == 0 && prepend != .never) {
                        out.append(" ")
                    }
                }
                return String(out)
            }

        case .replace(let pattern, let content):
            return tokens.map { pattern.replaceAll(in: $0, with: content) }

        case .byteFallback:
            var out = [String]()
            var pending = [UInt8]()
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(bytes: pending, encoding: .utf8) {
                    out.append(text)
                } else {
                    out.append(contentsOf: Array(repeating: "\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = byteFallbackValue(token) {
                    pending.append(byte)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out

        case .fuse:
            return [tokens.joined()]

        case .strip(let content, let start, let stop):
            return tokens.map { token in
                var chars = Substring(token)
                var removed = 0
                while removed < start, chars.first == content { chars.removeFirst(); removed += 1 }
                removed = 0
                while removed < stop, chars.last == content { chars.removeLast(); removed += 1 }
                return String(chars)
            }
        }
    }
}

/// The byte of a "<0xXX>" token, or nil for any other token.
private func byteFallbackValue(_ token: String) -> UInt8? {
    let utf8 = Array(token.utf8)
    guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
    return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
}
