/// A token from tokenizer.json's `added_tokens`: matched verbatim in the text before any other step.
struct AddedToken: Sendable {
    let id: Int
    let content: [Unicode.Scalar]
    let special: Bool
    /// Also swallows the whitespace on its left / right.
    let leftStrip: Bool
    let rightStrip: Bool
    /// Only matches when not touching a word character on either side.
    let singleWord: Bool
    /// Matched in the normalized text rather than the raw text.
    let normalized: Bool
}

/// A stretch of the input: an added token's id, or text for the normalizer, pre-tokenizer and model.
enum AddedTokenSegment {
    case token(Int)
    case text(ArraySlice<Unicode.Scalar>, atTextStart: Bool)
}

/// Finds added tokens in text, leftmost first and longest at a given position (Hugging Face uses an
/// Aho-Corasick automaton with leftmost-longest semantics; with a few dozen tokens, candidates indexed
/// by their first scalar and tried longest first give the same matches).
struct AddedTokenMatcher: Sendable {
    let tokens: [AddedToken]
    /// Indices into `tokens` by first scalar, longest content first.
    private let candidates: [Unicode.Scalar: [Int]]

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        var candidates = [Unicode.Scalar: [Int]]()
        for (index, token) in tokens.enumerated() where !token.content.isEmpty {
            candidates[token.content[0], default: []].append(index)
        }
        for key in candidates.keys {
            candidates[key]!.sort { tokens[$0].content.count > tokens[$1].content.count }
        }
        self.candidates = candidates
    }

    var isEmpty: Bool { candidates.isEmpty }

    /// Cuts `text` into added tokens and the text between them (empty stretches dropped).
    /// text: [n] scalars
    func split(_ text: ArraySlice<Unicode.Scalar>, atTextStart: Bool) -> [AddedTokenSegment] {
        guard !candidates.isEmpty else { return text.isEmpty ? [] : [.text(text, atTextStart: atTextStart)] }
        var segments = [AddedTokenSegment]()
        var cursor = text.startIndex   // end of the last emitted segment
        var i = text.startIndex
        while i < text.endIndex {
            guard let match = longestMatch(in: text, at: i) else { i += 1; continue }
            let token = tokens[match]
            var start = i
            var end = i + token.content.count
            if token.leftStrip { while start > cursor && text[start - 1].properties.isWhitespace { start -= 1 } }
            if token.rightStrip { while end < text.endIndex && text[end].properties.isWhitespace { end += 1 } }
            if start > cursor {
                segments.append(.text(text[cursor..<start], atTextStart: atTextStart && cursor == text.startIndex))
            }
            segments.append(.token(token.id))
            cursor = end
            i = end
        }
        if cursor < text.endIndex {
            segments.append(.text(text[cursor...], atTextStart: atTextStart && cursor == text.startIndex))
        }
        return segments
    }

    private func longestMatch(in text: ArraySlice<Unicode.Scalar>, at i: Int) -> Int? {
        guard let indices = candidates[text[i]] else { return nil }
        for index in indices {
            let content = tokens[index].content
            let end = i + content.count
            guard end <= text.endIndex, text[i..<end].elementsEqual(content) else { continue }
            if tokens[index].singleWord {
                if i > text.startIndex && isWordCharacter(text[i - 1]) { continue }
                if end < text.endIndex && isWordCharacter(text[end]) { continue }
            }
            return index
        }
        return nil
    }
}

private func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
    scalar == "_" || ScalarClass.of(scalar) == .letter || ScalarClass.of(scalar) == .number
}
