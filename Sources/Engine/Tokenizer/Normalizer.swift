import Foundation

/// tokenizer.json's `normalizer`, applied to each stretch of text between added tokens.
indirect enum Normalizer: Sendable {
    case sequence([Normalizer])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    /// Prepends a string to non-empty text (LLaMA-1/2's "▁").
    case prepend(String)
    case replace(ReplacePattern, with: String)
    case strip(left: Bool, right: Bool)

    func apply(_ text: String) -> String {
        switch self {
        case .sequence(let steps): return steps.reduce(text) { $1.apply($0) }
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case .prepend(let prefix): return text.isEmpty ? text : prefix + text
        case .replace(let pattern, let content): return pattern.replaceAll(in: text, with: content)
        case .strip(let left, let right):
            var scalars = Substring(text).unicodeScalars[...]
            if left { while let s = scalars.first, s.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let s = scalars.last, s.properties.isWhitespace { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        }
    }
}

/// The pattern of a Replace normalizer or decoder: a literal string or a regex.
enum ReplacePattern: Sendable {
    case literal(String)
    case regex(CompiledRegex)

    func replaceAll(in text: String, with content: String) -> String {
        switch self {
        case .literal(let needle):
            let matches = SplitPattern.literal(Array(needle.unicodeScalars)).matches(in: Array(text.unicodeScalars)[...])
            return substitute(matches, in: text, with: content)
        case .regex(let compiled):
            let matches = SplitPattern.regex(compiled).matches(in: Array(text.unicodeScalars)[...])
            return substitute(matches, in: text, with: content)
        }
    }

    /// matches: ranges of scalar offsets into text
    private func substitute(_ matches: [Range<Int>], in text: String, with content: String) -> String {
        guard !matches.isEmpty else { return text }
        let scalars = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var cursor = 0
        for m in matches {
            out.append(contentsOf: scalars[cursor..<m.lowerBound])
            out.append(contentsOf: content.unicodeScalars)
            cursor = m.upperBound
        }
        out.append(contentsOf: scalars[cursor...])
        return String(out)
    }
}
