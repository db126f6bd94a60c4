/// A stretch of text on its way to the model. `atTextStart` marks the piece that begins the whole input,
/// which Metaspace's `prepend_scheme: "first"` needs.
struct TextPiece {
    var scalars: ArraySlice<Unicode.Scalar>
    var atTextStart: Bool
}

/// How a split keeps the delimiters it finds (Hugging Face's SplitDelimiterBehavior).
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// Swift's Regex is an immutable value whose matching is thread-safe but which is not declared Sendable.
final class CompiledRegex: @unchecked Sendable {
    let pattern: String
    let regex: Regex<AnyRegexOutput>

    init(_ pattern: String) throws {
        self.pattern = pattern
        // Hugging Face (Oniguruma) matches per Unicode scalar, never per grapheme cluster.
        self.regex = try Regex(pattern).matchingSemantics(.unicodeScalar)
    }
}

/// What a Split pre-tokenizer looks for. The three regexes every byte-level BPE family uses are matched by
/// hand-written scanners (25 times faster than Swift's Regex on calib.txt, with identical matches); any
/// other regex goes to Swift's Regex.
enum SplitPattern: Sendable {
    case literal([Unicode.Scalar])
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// (LLaMA-3 with maxDigits 3, Qwen2 with 1).
    case llama3(maxDigits: Int)
    case regex(CompiledRegex)

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The pattern of a tokenizer.json Split: a known regex gets its scanner; others are compiled.
    static func fromRegex(_ pattern: String) throws -> SplitPattern {
        switch pattern {
        case gpt2Regex: return .gpt2
        case llama3Regex: return .llama3(maxDigits: 3)
        case qwen2Regex: return .llama3(maxDigits: 1)
        default: return .regex(try CompiledRegex(pattern))
        }
    }

    /// The matches of the pattern in `text`, in order, as index ranges of the slice (non-empty only).
    func matches(in text: ArraySlice<Unicode.Scalar>) -> [Range<Int>] {
        switch self {
        case .literal(let needle): return literalMatches(of: needle, in: text)
        case .gpt2: return scanWordPattern(text, llamaStyle: false, maxDigits: Int.max)
        case .llama3(let maxDigits): return scanWordPattern(text, llamaStyle: true, maxDigits: maxDigits)
        case .regex(let compiled): return regexMatches(of: compiled.regex, in: text)
        }
    }
}

/// Non-overlapping occurrences of `needle`, left to right.
/// needle: [m] scalars; text: [n] scalars
private func literalMatches(of needle: [Unicode.Scalar], in text: ArraySlice<Unicode.Scalar>) -> [Range<Int>] {
    guard !needle.isEmpty, text.count >= needle.count else { return [] }
    var found = [Range<Int>]()
    var i = text.startIndex
    while i + needle.count <= text.endIndex {
        if text[i] == needle[0] && text[i..<(i + needle.count)].elementsEqual(needle) {
            found.append(i..<(i + needle.count))
            i += needle.count
        } else {
            i += 1
        }
    }
    return found
}

/// Matches of a general regex; ranges are converted from String indices to scalar offsets in one pass.
/// text: [n] scalars
private func regexMatches(of regex: Regex<AnyRegexOutput>, in text: ArraySlice<Unicode.Scalar>) -> [Range<Int>] {
    var string = String()
    string.unicodeScalars.append(contentsOf: text)
    let scalars = string.unicodeScalars
    var found = [Range<Int>]()
    var lastIndex = scalars.startIndex
    var lastOffset = text.startIndex
    for match in string.matches(of: regex) where !match.range.isEmpty {
        let start = lastOffset + scalars.distance(from: lastIndex, to: match.range.lowerBound)
        let end = start + scalars.distance(from: match.range.lowerBound, to: match.range.upperBound)
        found.append(start..<end)
        lastIndex = match.range.upperBound
        lastOffset = end
    }
    return found
}

@inline(__always) private func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\n" || s == "\r" }

/// Length of the contraction suffix (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`) starting at `i`, or 0.
/// The LLaMA-3 regex compares case-insensitively with Unicode case folding (which folds ſ to s).
private func contractionLength(_ text: ArraySlice<Unicode.Scalar>, at i: Int, caseInsensitive: Bool) -> Int {
    func letter(_ k: Int) -> Unicode.Scalar? {
        guard k < text.endIndex else { return nil }
        let s = text[k]
        guard caseInsensitive else { return s }
        if s == "\u{017F}" { return "s" }
        if s.value >= 0x41 && s.value <= 0x5A { return Unicode.Scalar(s.value + 0x20)! }
        return s
    }
    switch letter(i) {
    case "s", "t", "m", "d": return 1
    case "r", "v": return letter(i + 1) == "e" ? 2 : 0
    case "l": return letter(i + 1) == "l" ? 2 : 0
    default: return 0
    }
}

/// Scanner equivalent to the GPT-2 regex (llamaStyle false) or the LLaMA-3/Qwen2 regex (llamaStyle true):
/// at every position the first alternative that matches wins, as in a backtracking regex engine.
/// Every scalar belongs to some match, so the matches tile the text.
/// text: [n] scalars
private func scanWordPattern(_ text: ArraySlice<Unicode.Scalar>, llamaStyle: Bool, maxDigits: Int) -> [Range<Int>] {
    var found = [Range<Int>]()
    found.reserveCapacity(text.count / 4 + 1)
    let end = text.endIndex
    var i = text.startIndex
    @inline(__always) func cls(_ k: Int) -> ScalarClass { ScalarClass.of(text[k]) }
    @inline(__always) func runEnd(from k: Int, _ c: ScalarClass) -> Int {
        var k = k
        while k < end && cls(k) == c { k += 1 }
        return k
    }
    while i < end {
        let c = text[i]
        let first = cls(i)
        let nextClass: ScalarClass? = i + 1 < end ? cls(i + 1) : nil
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == "'" {
            let n = contractionLength(text, at: i + 1, caseInsensitive: llamaStyle)
            if n > 0 { found.append(i..<(i + 1 + n)); i += 1 + n; continue }
        }
        // GPT-2 ` ?\p{L}+`; LLaMA-3 `[^\r\n\p{L}\p{N}]?\p{L}+`
        if first == .letter {
            let k = runEnd(from: i, .letter); found.append(i..<k); i = k; continue
        }
        if nextClass == .letter {
            let prefixAllowed = llamaStyle ? (first != .number && !isNewline(c)) : c == " "
            if prefixAllowed {
                let k = runEnd(from: i + 1, .letter); found.append(i..<k); i = k; continue
            }
        }
        // GPT-2 ` ?\p{N}+`; LLaMA-3 `\p{N}{1,maxDigits}`
        if first == .number {
            var k = i
            while k < end && k - i < maxDigits && cls(k) == .number { k += 1 }
            found.append(i..<k); i = k; continue
        }
        if !llamaStyle && c == " " && nextClass == .number {
            let k = runEnd(from: i + 1, .number); found.append(i..<k); i = k; continue
        }
        // ` ?[^\s\p{L}\p{N}]+`, LLaMA-3 followed by `[\r\n]*`
        if first == .other || (c == " " && nextClass == .other) {
            var k = runEnd(from: first == .other ? i : i + 1, .other)
            if llamaStyle { while k < end && isNewline(text[k]) { k += 1 } }
            found.append(i..<k); i = k; continue
        }
        // Only whitespace remains.
        let spaceEnd = runEnd(from: i, .space)
        // LLaMA-3 `\s*[\r\n]+`: up to and including the run's last newline.
        if llamaStyle, let lastNewline = text[i..<spaceEnd].lastIndex(where: isNewline) {
            found.append(i..<(lastNewline + 1)); i = lastNewline + 1; continue
        }
        // `\s+(?!\S)` leaves the run's last space to the word that follows; `\s+` takes a lone space.
        let k = (spaceEnd == end || spaceEnd - i == 1) ? spaceEnd : spaceEnd - 1
        found.append(i..<k); i = k
    }
    return found
}

/// Cuts `piece` at `matches` and keeps the delimiters as `behavior` says (Hugging Face's split()).
/// matches: ordered, non-overlapping ranges inside piece.scalars
func splitPiece(_ piece: TextPiece, at matches: [Range<Int>], behavior: SplitBehavior, invert: Bool) -> [TextPiece] {
    let text = piece.scalars
    // Tile the piece into (range, isMatch) parts.
    var parts = [(range: Range<Int>, isMatch: Bool)]()
    var cursor = text.startIndex
    for m in matches {
        if m.lowerBound > cursor { parts.append((cursor..<m.lowerBound, invert)) }
        parts.append((m, !invert))
        cursor = m.upperBound
    }
    if cursor < text.endIndex { parts.append((cursor..<text.endIndex, invert)) }

    var ranges = [Range<Int>]()
    switch behavior {
    case .removed:
        ranges = parts.filter { !$0.isMatch }.map(\.range)
    case .isolated:
        ranges = parts.map(\.range)
    case .mergedWithPrevious:
        var previousMatch = false
        for part in parts {
            if part.isMatch && !previousMatch, let last = ranges.last {
                ranges[ranges.count - 1] = last.lowerBound..<part.range.upperBound
            } else {
                ranges.append(part.range)
            }
            previousMatch = part.isMatch
        }
    case .mergedWithNext:
        var previousMatch = false
        for part in parts.reversed() {
            if part.isMatch && !previousMatch, let last = ranges.last {
                ranges[ranges.count - 1] = part.range.lowerBound..<last.upperBound
            } else {
                ranges.append(part.range)
            }
            previousMatch = part.isMatch
        }
        ranges.reverse()
    case .contiguous:
        var previousMatch: Bool? = nil
        for part in parts {
            if part.isMatch == previousMatch, let last = ranges.last {
                ranges[ranges.count - 1] = last.lowerBound..<part.range.upperBound
            } else {
                ranges.append(part.range)
            }
            previousMatch = part.isMatch
        }
    }
    return ranges.filter { !$0.isEmpty }.map { range in
        TextPiece(scalars: text[range], atTextStart: piece.atTextStart && range.lowerBound == text.startIndex)
    }
}

/// When Metaspace puts its replacement character in front of a piece.
enum PrependScheme: String, Sendable {
    case always, first, never
}

/// tokenizer.json's `pre_tokenizer`.
indirect enum PreTokenizer: Sendable {
    case sequence([PreTokenizer])
    /// Optionally prefix a space, split with the GPT-2 regex, then spell every byte as its byte-level symbol.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(SplitPattern, behavior: SplitBehavior, invert: Bool)
    /// Numbers apart from the rest; one piece per numeric character when `individual`.
    case digits(individual: Bool)
    /// SentencePiece spaces: every " " becomes `replacement`, prepended per `prepend`, split before each.
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
    case whitespaceSplit

    /// pieces: [p] stretches of text; returns the finer pieces in order
    func apply(_ pieces: [TextPiece]) -> [TextPiece] {
        switch self {
        case .sequence(let steps):
            return steps.reduce(pieces) { $1.apply($0) }

        case .byteLevel(let addPrefixSpace, let useRegex):
            // All words' symbols go into one buffer, sliced once it is complete (one allocation, not one per word).
            var symbols = [Unicode.Scalar]()
            var words = [(range: Range<Int>, atTextStart: Bool)]()
            // Most text is ASCII: one symbol per scalar, plus room for some multi-byte characters.
            let scalarCount = pieces.reduce(0) { $0 + $1.scalars.count }
            symbols.reserveCapacity(scalarCount + scalarCount / 8 + 16)
            for var piece in pieces {
                if addPrefixSpace && piece.scalars.first != " " {
                    piece.scalars = ArraySlice([" "] + piece.scalars)
                }
                let pieceWords = useRegex
                    ? splitPiece(piece, at: SplitPattern.gpt2.matches(in: piece.scalars), behavior: .isolated, invert: false)
                    : [piece]
                for word in pieceWords {
                    let start = symbols.count
                    ByteLevelAlphabet.appendSymbols(of: word.scalars, to: &symbols)
                    words.append((start..<symbols.count, word.atTextStart))
                }
            }
            return words.map { TextPiece(scalars: symbols[$0.range], atTextStart: $0.atTextStart) }

        case .split(let pattern, let behavior, let invert):
            return pieces.flatMap { splitPiece($0, at: pattern.matches(in: $0.scalars), behavior: behavior, invert: invert) }

        case .digits(let individual):
            return pieces.flatMap { piece -> [TextPiece] in
                let numeric = piece.scalars.indices.filter { ScalarClass.of(piece.scalars[$0]) == .number }
                return splitPiece(piece, at: numeric.map { $0..<($0 + 1) }, behavior: individual ? .isolated : .contiguous,
                             invert: false)
            }

        case .metaspace(let replacement, let prepend, let splitWords):
            return pieces.flatMap { piece -> [TextPiece] in
                var scalars = piece.scalars.map { $0 == " " ? replacement : $0 }
                let wantsPrefix = prepend == .always || (prepend == .first && piece.atTextStart)
                if wantsPrefix && scalars.first != replacement { scalars.insert(replacement, at: 0) }
                let replaced = TextPiece(scalars: scalars[...], atTextStart: piece.atTextStart)
                guard splitWords else { return [replaced] }
                let marks = scalars.indices.filter { scalars[$0] == replacement }.map { $0..<($0 + 1) }
                return splitPiece(replaced, at: marks, behavior: .mergedWithNext, invert: false)
            }

        case .whitespaceSplit:
            return pieces.flatMap { piece -> [TextPiece] in
                let spaces = piece.scalars.indices.filter { piece.scalars[$0].properties.isWhitespace }
                return splitPiece(piece, at: spaces.map { $0..<($0 + 1) }, behavior: .removed, invert: false)
            }
        }
    }
}
