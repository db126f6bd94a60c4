import Foundation

/// A text seen as words: maximal runs of letters, digits, `'`, `-` and `_` holding at least one letter or digit
/// (so SST-2's "'s" and "well-made" are one word each, "--" is punctuation), with everything between them (spaces, punctuation) kept exactly. Swapping a word rewrites
/// only that word's characters.
public struct AttackText: Sendable, Equatable {
    /// [words + 1]: the text before word 0, between words, after the last word
    public private(set) var gaps: [String]
    /// [words]
    public private(set) var words: [String]

    public init(_ text: String) {
        var gaps: [String] = [], words: [String] = []
        var gap = "", word = ""
        // A run without a letter or digit ("--", "'") is punctuation: it stays in the gap.
        func close() {
            if word.contains(where: { $0.isLetter || $0.isNumber }) {
                gaps.append(gap); words.append(word); gap = ""
            } else {
                gap += word
            }
            word = ""
        }
        for character in text {
            if AttackText.isWordCharacter(character) {
                word.append(character)
            } else {
                if !word.isEmpty { close() }
                gap.append(character)
            }
        }
        if !word.isEmpty { close() }
        gaps.append(gap)
        self.gaps = gaps
        self.words = words
    }

    static func isWordCharacter(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || character == "'" || character == "-" || character == "_"
    }

    public var text: String {
        var result = gaps[0]
        for (word, gap) in zip(words, gaps.dropFirst()) { result += word + gap }
        return result
    }

    /// The text with word `index` replaced by `replacement`.
    public func replacing(_ index: Int, with replacement: String) -> AttackText {
        var copy = self
        copy.words[index] = replacement
        return copy
    }

    /// The text without word `index` and one space beside it (punctuation stays), as TextFooler's deletion
    /// ranking reads it.
    public func deleting(_ index: Int) -> String {
        var before = gaps[index], after = gaps[index + 1]
        let atStart = index == 0 && before.isEmpty
        if (atStart || before.last?.isWhitespace == true), after.first?.isWhitespace == true {
            after.removeFirst()
        } else if after.isEmpty, before.last?.isWhitespace == true {
            before.removeLast()
        }
        var gaps = self.gaps, words = self.words
        words.remove(at: index)
        gaps.replaceSubrange(index...(index + 1), with: [before + after])
        var result = gaps[0]
        for (word, gap) in zip(words, gaps.dropFirst()) { result += word + gap }
        return result
    }

    /// Indices whose words differ from `original`'s (same word count).
    public func changedIndices(from original: AttackText) -> [Int] {
        words.indices.filter { words[$0] != original.words[$0] }
    }
}

/// The words an attack never replaces: English function words (articles, pronouns, prepositions, conjunctions,
/// auxiliaries, negations and the contractions SST-2 splits off), in the spirit of the lists TextAttack's
/// recipes use. Compared in lowercase.
public enum AttackStopWords {
    public static let english: Set<String> = Set("""
    a about above across after afterwards again against all almost alone along already also although am among amongst an and \
    another any anyhow anyone anything anyway anywhere are aren't around as at be became because been before beforehand \
    behind being below beside besides between beyond both but by can cannot could couldn't did didn't do does doesn't doing \
    don't done down during each either else elsewhere enough even ever every everyone everything everywhere except few for \
    from further had hadn't has hasn't have haven't having he hence her here hers herself him himself his how however i if in \
    into is isn't it it's its itself just least less many may me meanwhile might mine more moreover most mostly much must my \
    myself namely neither never nevertheless next no nobody none noone nor not nothing now nowhere of off often on once one \
    only onto or other others otherwise our ours ourselves out over own per perhaps please rather same several she should \
    shouldn't since so some somehow someone something sometime sometimes somewhere still such than that that's the their \
    theirs them themselves then thence there thereafter thereby therefore therein these they this those though through \
    throughout thru thus to together too toward towards under unless until up upon us very via was wasn't we were weren't \
    what whatever when whence whenever where whereas whereby wherein whether which while whither who whoever whole whom \
    whose why will with within without won't would wouldn't yet you your yours yourself yourselves \
    's 're 've 'd 'll 'm n't s t d ll m re ve o y ain aren couldn didn doesn don hadn hasn haven isn mightn mustn needn shan \
    shouldn wasn weren won wouldn
    """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
}
