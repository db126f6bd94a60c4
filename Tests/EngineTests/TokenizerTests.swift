import Foundation
import TestSupport
import XCTest
@testable import Engine

/// The tokenizer against the Hugging Face tokenizers library: its recorded ids for 33 hand-picked texts
/// and for the whole calibration and evaluation text, plus hand-built SentencePiece-style files.
final class TokenizerTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory("tokenizer") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    struct GoldenCase: Decodable {
        let text: String
        let ids: [Int]
        let decoded: String
        let roundtrip: Bool
        let ids_without_digit_split: [Int]?
    }

    private func goldens() throws -> [GoldenCase] {
        struct File: Decodable { let cases: [GoldenCase] }
        let url = try Fixtures.path("fixtures/tokenizer-goldens.json")
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }

    private func smolURL() throws -> URL { try Fixtures.path("fixtures/smollm2-tokenizer/tokenizer.json") }

    /// The SmolLM2 tokenizer.json as a JSON object, to derive variants from.
    private func smolJSON() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: smolURL())) as! [String: Any]
    }

    private func write(_ object: Any, _ name: String = "tokenizer.json") throws -> URL {
        let url = dir.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        return url
    }

    private func readU16(_ relative: String) throws -> [Int] {
        let data = try Data(contentsOf: Fixtures.path(relative))
        let bytes = [UInt8](data)
        var ids = [Int](repeating: 0, count: bytes.count / 2)
        for i in ids.indices { ids[i] = Int(bytes[2 * i]) | Int(bytes[2 * i + 1]) << 8 }
        return ids
    }

    /// Index of the first difference, with a window of both sequences around it, for failure messages.
    private func firstDifference(_ ours: [Int], _ reference: [Int], _ tokenizer: Tokenizer) -> String? {
        guard ours != reference else { return nil }
        let i = (0..<min(ours.count, reference.count)).first { ours[$0] != reference[$0] } ?? min(ours.count, reference.count)
        let lo = max(0, i - 5)
        return "lengths \(ours.count) vs \(reference.count); first difference at \(i): "
            + "ours \(ours[lo..<min(ours.count, i + 5)]) \"\(tokenizer.decode(Array(ours[lo..<min(ours.count, i + 5)])))\" "
            + "reference \(reference[lo..<min(reference.count, i + 5)])"
    }

    // MARK: - SmolLM2 against tokenizers 0.23.3

    func testGoldenCasesEncodeAndDecodeAsHuggingFace() throws {
        let tokenizer = try Tokenizer(url: smolURL())
        XCTAssertEqual(tokenizer.vocabularySize, 49152)
        let cases = try goldens()
        XCTAssertEqual(cases.count, 33)
        for c in cases {
            let ids = tokenizer.encode(c.text)
            XCTAssertEqual(ids, c.ids, "encode \(c.text.debugDescription)")
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, "decode of \(c.text.debugDescription)")
            XCTAssertEqual(tokenizer.decode(c.ids) == c.text, c.roundtrip, "round trip of \(c.text.debugDescription)")
        }
    }

    /// The file as transformers' GGUF converter wrote it, without the Digits step: only non-ASCII
    /// numerals after a space tokenize differently, and the goldens record how.
    func testWithoutDigitSplitMatchesUnpatchedTokenizer() throws {
        var json = try smolJSON()
        json["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let tokenizer = try Tokenizer(url: write(json))
        var differing = 0
        for c in try goldens() {
            if c.ids_without_digit_split != nil { differing += 1 }
            XCTAssertEqual(tokenizer.encode(c.text), c.ids_without_digit_split ?? c.ids, c.text.debugDescription)
        }
        XCTAssertEqual(differing, 1)
    }

    /// The same pre-tokenization spelled as LLaMA-3/Qwen2 files spell theirs — a Split with the regex, then
    /// ByteLevel without its own regex — and with a regex no scanner knows (Swift's regex engine runs it):
    /// the Hugging Face ids must not change.
    func testSplitRegexThenByteLevelGivesSameIDs() throws {
        var json = try smolJSON()
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Digits", "individual_digits": true],
            ["type": "Split", "pattern": ["Regex": "(?:" + SplitPattern.gpt2Regex + ")"], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]]
        let tokenizer = try Tokenizer(url: write(json))
        guard case .sequence(let steps)? = tokenizer.preTokenizer, case .split(.regex, _, _) = steps[1] else {
            return XCTFail("the wrapped pattern should go to the general regex engine")
        }
        for c in try goldens() {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids, c.text.debugDescription)
        }
        let text = try String(contentsOf: Fixtures.path("data/wiki/eval.txt"), encoding: .utf8)
        XCTAssertNil(firstDifference(tokenizer.encode(text), try readU16("data/wiki/eval_tokens.u16"), tokenizer))
    }

    /// Older files spell merges "a b"; ids must not change.
    func testMergesAsSpaceSeparatedStrings() throws {
        var json = try smolJSON()
        var model = json["model"] as! [String: Any]
        let pairs = model["merges"] as! [[String]]
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        json["model"] = model
        let tokenizer = try Tokenizer(url: write(json))
        for c in try goldens() {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids, c.text.debugDescription)
        }
    }

    func testEvalTextMatchesReferenceIDs() throws {
        let tokenizer = try Tokenizer(url: smolURL())
        let text = try String(contentsOf: Fixtures.path("data/wiki/eval.txt"), encoding: .utf8)
        let reference = try readU16("data/wiki/eval_tokens.u16")
        XCTAssertEqual(reference.count, 16488)
        let ids = tokenizer.encode(text)
        XCTAssertNil(firstDifference(ids, reference, tokenizer))
    }

    /// The whole 4.8 MB calibration text, and the rate, which the issue asks to report.
    func testCalibrationTextMatchesReferenceIDs() throws {
        let tokenizer = try Tokenizer(url: smolURL())
        let text = try String(contentsOf: Fixtures.path("data/wiki/calib.txt"), encoding: .utf8)
        let reference = try readU16("data/wiki/calib_tokens.u16")
        XCTAssertEqual(reference.count, 1_051_850)
        let start = Date()
        let ids = tokenizer.encode(text)
        let seconds = Date().timeIntervalSince(start)
        print(String(format: "calib.txt: %d bytes → %d ids in %.2f s (%.2f MB/s)", text.utf8.count, ids.count,
                     seconds, Double(text.utf8.count) / seconds / 1e6))
        XCTAssertNil(firstDifference(ids, reference, tokenizer))
    }

    /// Hugging Face decodes with from_utf8_lossy: a lone continuation byte becomes U+FFFD.
    func testDecodeOfInvalidUTF8ByteIsReplacementCharacter() throws {
        let tokenizer = try Tokenizer(url: smolURL())
        XCTAssertEqual(tokenizer.decode([tokenizer.model.singleScalarIDs[ByteLevelAlphabet.scalarForByte[0xA9]]!]),
                       "\u{FFFD}")
    }

    /// Long words go through the priority queue; it must merge exactly as the all-pairs scan does.
    func testQueueMergeEqualsScanningMerge() throws {
        let model = try Tokenizer(url: smolURL()).model
        let letters = Array("etaoinshrdlucmfwyp".unicodeScalars)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func nextRandom() -> Int {   // SplitMix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int(truncatingIfNeeded: (z ^ (z >> 31)) >> 1)
        }
        var merged = 0
        for length in [2, 3, 5, 8, 13, 40, 64, 65, 100, 300, 1000] {
            for _ in 0..<20 {
                let word = (0..<length).map { _ in letters[nextRandom() % letters.count] }
                let start = word.map { model.singleScalarIDs[$0]! }
                var scanned = start, queued = start
                model.mergePairsByScanning(&scanned)
                model.mergePairsWithQueue(&queued)
                XCTAssertEqual(queued, scanned, "length \(length)")
                merged += start.count - scanned.count
            }
        }
        XCTAssertGreaterThan(merged, 1000)
        // A 200 000-letter word: linear-logarithmic, and decodes back.
        let tokenizer = try Tokenizer(url: smolURL())
        let long = String(String.UnicodeScalarView((0..<200_000).map { _ in letters[nextRandom() % letters.count] }))
        let started = Date()
        let ids = tokenizer.encode(long)
        XCTAssertLessThan(Date().timeIntervalSince(started), 20)
        XCTAssertEqual(tokenizer.decode(ids), long)
    }

    // MARK: - Pre-tokenizer regexes: hand-written scanners against Swift's regex engine

    private func assertScannerAgreesWithRegex(_ pattern: String, texts: [String],
                                              file: StaticString = #filePath, line: UInt = #line) throws {
        let scanner = try SplitPattern.fromRegex(pattern)
        if case .regex = scanner { return XCTFail("no scanner for \(pattern)", file: file, line: line) }
        let general = SplitPattern.regex(try CompiledRegex(pattern))
        var total = 0
        defer { XCTAssertGreaterThan(total, 3000, "the texts should give thousands of matches", file: file, line: line) }
        for text in texts {
            let scalars = Array(text.unicodeScalars)[...]
            let expected = general.matches(in: scalars)
            let found = scanner.matches(in: scalars)
            total += expected.count
            // The matches tile the text: every scalar belongs to exactly one word.
            XCTAssertEqual(expected.map(\.count).reduce(0, +), scalars.count, file: file, line: line)
            if found != expected {
                let i = (0..<min(found.count, expected.count)).first { found[$0] != expected[$0] } ?? min(found.count, expected.count)
                let show = { (r: [Range<Int>]) in r[i..<min(r.count, i + 3)].map { String(String.UnicodeScalarView(scalars[$0])).debugDescription } }
                XCTFail("\(pattern): match \(i) differs: scanner \(show(found)) regex \(show(expected))", file: file, line: line)
            }
        }
    }

    func testScannersMatchRegexEngine() throws {
        var texts = try goldens().map(\.text)
        texts += ["'S 'T 'RE 'Ve 'LL 'D 'x 'ſ", "a  \n\n  b\r\n\t c   ", " \u{00A0}\u{3000}x", "(hello [world] ...\n\n",
                  "١٢٣٤ 12345 ½¾ Ⅻ", "x\u{2028}y\u{0085}z", "  \n  ", "\n", "'", "   ", "end  "]
        let eval = try String(contentsOf: Fixtures.path("data/wiki/eval.txt"), encoding: .utf8)
        texts.append(String(eval.prefix(20_000)))
        try assertScannerAgreesWithRegex(SplitPattern.gpt2Regex, texts: texts)
        try assertScannerAgreesWithRegex(SplitPattern.llama3Regex, texts: texts)
        try assertScannerAgreesWithRegex(SplitPattern.qwen2Regex, texts: texts)
    }

    func testSplitBehaviors() {
        let text = Array("a-b--c".unicodeScalars)[...]
        let piece = TextPiece(scalars: text, atTextStart: true)
        let dashes = SplitPattern.literal(["-"]).matches(in: text)
        func pieces(_ behavior: SplitBehavior, invert: Bool = false) -> [String] {
            splitPiece(piece, at: dashes, behavior: behavior, invert: invert).map { String(String.UnicodeScalarView($0.scalars)) }
        }
        XCTAssertEqual(pieces(.removed), ["a", "b", "c"])
        XCTAssertEqual(pieces(.isolated), ["a", "-", "b", "-", "-", "c"])
        XCTAssertEqual(pieces(.mergedWithPrevious), ["a-", "b-", "-", "c"])
        XCTAssertEqual(pieces(.mergedWithNext), ["a", "-b", "-", "-c"])
        XCTAssertEqual(pieces(.contiguous), ["a", "-", "b", "--", "c"])
        XCTAssertEqual(pieces(.removed, invert: true), ["-", "-", "-"])
        XCTAssertEqual(pieces(.contiguous, invert: true), ["a", "-", "b", "--", "c"])
    }

    // MARK: - SentencePiece-style BPE (LLaMA-1/2) on a hand-built file

    /// A LLaMA-2-shaped tokenizer.json: <unk> <s> </s>, 256 byte tokens, then "▁", letters and merges.
    private func sentencePieceJSON(legacy: Bool) -> [String: Any] {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "</s>": 2]
        for byte in 0..<256 { vocab[String(format: "<0x%02X>", byte)] = 3 + byte }
        let pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "ll", "▁h", "he", "llo", "▁he", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"]
        for (i, piece) in pieces.enumerated() { vocab[piece] = 259 + i }
        let merges = ["l l", "▁ h", "h e", "▁h e", "ll o", "▁he llo", "▁ w", "o r", "▁w or", "l d", "▁wor ld"]
        let special: [[String: Any]] = ["<unk>", "<s>", "</s>"].enumerated().map { id, content in
            ["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        var json: [String: Any] = [
            "version": "1.0", "added_tokens": special,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": "<unk>", "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": true, "byte_fallback": true,
                      "vocab": vocab, "merges": merges] as [String: Any],
        ]
        if legacy {
            json["normalizer"] = ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "▁"],
                ["type": "Replace", "pattern": ["String": " "], "content": "▁"]]]
            json["pre_tokenizer"] = NSNull()
            json["decoder"] = ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "▁"], "content": " "],
                ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0]]]
        } else {
            json["normalizer"] = NSNull()
            json["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false]
            json["decoder"] = ["type": "Sequence", "decoders": [
                ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false],
                ["type": "ByteFallback"], ["type": "Fuse"]]]
        }
        return json
    }

    func testSentencePieceByteFallbackAndMetaspace() throws {
        for legacy in [true, false] {
            let tokenizer = try Tokenizer(url: write(sentencePieceJSON(legacy: legacy), "sp-\(legacy).json"))
            let id = { (piece: String) in 259 + ["▁", "h", "e", "l", "o", "w", "r", "d", "ll", "▁h", "he", "llo", "▁he",
                                                   "▁hello", "▁w", "or", "▁wor", "ld", "▁world"].firstIndex(of: piece)! }
            // "▁hello▁world": ▁+h → ▁h, then l+l, h... ranks decide: "▁h e" (3) before "ll o" (4).
            XCTAssertEqual(tokenizer.encode("hello world"), [id("▁hello"), id("▁world")], "legacy \(legacy)")
            // "é" (C3 A9) is not in the vocabulary: its bytes; "z" likewise: <0x7A>.
            XCTAssertEqual(tokenizer.encode("hé z"), [id("▁h"), 3 + 0xC3, 3 + 0xA9, id("▁"), 3 + 0x7A], "legacy \(legacy)")
            // Special tokens in text; the text after one is not at the start of the input.
            let withSpecial = tokenizer.encode("<s>hello</s>")
            XCTAssertEqual(withSpecial.first, 1)
            XCTAssertEqual(withSpecial.last, 2)
            XCTAssertEqual(tokenizer.decode([id("▁hello"), id("▁world")]), "hello world")
            XCTAssertEqual(tokenizer.decode(tokenizer.encode("hé z")), "hé z")
            // A lone continuation byte decodes to U+FFFD, as Hugging Face's ByteFallback does.
            XCTAssertEqual(tokenizer.decode([id("▁h"), 3 + 0xA9]), "h\u{FFFD}")
            XCTAssertEqual(tokenizer.vocabularySize, 259 + 19)
        }
        // Legacy files prepend "▁" to every stretch between special tokens, the Metaspace "first" scheme
        // only at the very start: "<s>hello" differs exactly there.
        let legacy = try Tokenizer(url: write(sentencePieceJSON(legacy: true), "a.json"))
        let modern = try Tokenizer(url: write(sentencePieceJSON(legacy: false), "b.json"))
        let heID = 259 + 10, lloID = 259 + 11, prefixedHello = 259 + 13
        XCTAssertEqual(legacy.encode("<s>hello"), [1, prefixedHello])
        XCTAssertEqual(modern.encode("<s>hello"), [1, heID, lloID])
    }

    func testUnknownCharacterWithoutByteFallbackUsesFusedUnk() throws {
        var json = sentencePieceJSON(legacy: false)
        var model = json["model"] as! [String: Any]
        model["byte_fallback"] = false
        json["model"] = model
        let tokenizer = try Tokenizer(url: write(json))
        // "▁h" then two unknown characters fused into one <unk>.
        XCTAssertEqual(tokenizer.encode("hzz"), [259 + 9, 0])
    }

    /// LLaMA-3's ignore_merges: a word that is in the vocabulary is taken whole even if no merge builds it.
    func testIgnoreMerges() throws {
        for ignore in [false, true] {
            var json = sentencePieceJSON(legacy: false)
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Int]
            vocab["▁wd"] = 500
            model["vocab"] = vocab
            model["ignore_merges"] = ignore
            json["model"] = model
            let tokenizer = try Tokenizer(url: write(json))
            XCTAssertEqual(tokenizer.encode("wd"), ignore ? [500] : [259 + 14, 259 + 7], "ignore_merges \(ignore)")
            XCTAssertEqual(tokenizer.vocabularySize, 501)
        }
    }

    func testAddedTokenStripping() throws {
        var json = try smolJSON()
        var added = json["added_tokens"] as! [[String: Any]]
        added.append(["id": 49152, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true,
                      "normalized": false, "special": true])
        json["added_tokens"] = added
        let tokenizer = try Tokenizer(url: write(json))
        XCTAssertEqual(tokenizer.vocabularySize, 49153)
        XCTAssertEqual(tokenizer.encode("a  <mask>  b"), tokenizer.encode("a") + [49152] + tokenizer.encode("b"))
        XCTAssertEqual(tokenizer.decode([49152]), "<mask>")
    }

    // MARK: - Errors

    func testErrorsNameFileAndField() throws {
        let broken = dir.appendingPathComponent("broken.json")
        try Data("{\"model\": ".utf8).write(to: broken)
        assertError(.format, containing: [broken.path, "JSON"]) { _ = try Tokenizer(url: broken) }

        var json = try smolJSON()
        var model = json["model"] as! [String: Any]
        model["type"] = "Unigram"
        json["model"] = model
        let unigram = try write(json, "unigram.json")
        assertError(.unsupported, containing: [unigram.path, "model.type", "Unigram"]) { _ = try Tokenizer(url: unigram) }

        json = try smolJSON()
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true],
                                                                      ["type": "BertPreTokenizer"]]]
        let bert = try write(json, "bert.json")
        assertError(.unsupported, containing: [bert.path, "pre_tokenizer.pretokenizers[1]", "BertPreTokenizer"]) {
            _ = try Tokenizer(url: bert)
        }

        json = try smolJSON()
        model = json["model"] as! [String: Any]
        model["merges"] = [["Ġ", "t"], ["no-such", "token"]]
        json["model"] = model
        let badMerge = try write(json, "merge.json")
        assertError(.format, containing: [badMerge.path, "model.merges[1]", "no-such"]) { _ = try Tokenizer(url: badMerge) }

        json = try smolJSON()
        json["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "[a-"], "behavior": "Isolated", "invert": false]
        let badRegex = try write(json, "regex.json")
        assertError(.unsupported, containing: [badRegex.path, "pre_tokenizer.pattern.Regex", "[a-"]) {
            _ = try Tokenizer(url: badRegex)
        }

        assertError(.io, containing: [dir.path]) { _ = try Tokenizer.load(modelDirectory: dir.appendingPathComponent("none")) }
    }

    func testLoadFromModelDirectory() throws {
        let tokenizer = try Tokenizer.load(modelDirectory: smolURL().deletingLastPathComponent())
        XCTAssertEqual(tokenizer.encode("Hello, world!"), [19556, 28, 905, 17])
    }
}
