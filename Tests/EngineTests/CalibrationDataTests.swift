import Foundation
import TestSupport
import XCTest
@testable import Engine

/// Calibration sources and windows: the protocol-R windows reproduced from the seed, text and token
/// sources agreeing, the document-length filter, and one precise error per kind of bad input.
final class CalibrationDataTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory("calibration") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func smol() throws -> Tokenizer {
        try Tokenizer(url: Fixtures.path("fixtures/smollm2-tokenizer/tokenizer.json"))
    }

    private func write(_ text: String, _ name: String) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    /// ids 0 ..< count as a JSON token file: a window's first id is its start.
    private func countingTokenFile(_ count: Int) throws -> URL {
        try write("[" + (0..<count).map(String.init).joined(separator: ",") + "]", "counting.json")
    }

    // MARK: - Token files

    func testTokenFileReadsU16AndJSON() throws {
        let ids = [0, 1, 255, 256, 40000, 65535]
        var bytes = [UInt8]()
        for id in ids { bytes += [UInt8(id & 0xFF), UInt8(id >> 8)] }
        let u16 = dir.appendingPathComponent("ids.u16")
        try Data(bytes).write(to: u16)
        XCTAssertEqual(try TokenFile.read(u16), ids)
        XCTAssertEqual(try TokenFile.read(write("[0, 1, 255, 256, 40000, 65535]", "ids.json")), ids)
    }

    // MARK: - Windows

    /// Seed 0, 128 × 512 over calib_tokens.u16 are exactly the windows every reference run used.
    func testSeedZeroReproducesProtocolRWindows() throws {
        let windows = try CalibrationData.windows(url: Fixtures.path("data/wiki/calib_tokens.u16"), tokenizer: nil,
                                                  samples: 128, seqlen: 512, seed: 0)
        let reference = try TokenFile.read(Fixtures.path("data/wiki/calib_windows_seed0_n128_L512.u16"))
        XCTAssertEqual(reference.count, 128 * 512)
        XCTAssertEqual(windows.count, 128)
        XCTAssertEqual(windows.flatMap { $0 }, reference)

        struct Starts: Decodable { let starts: [Int] }
        let starts = try JSONDecoder().decode(Starts.self, from: Data(contentsOf:
            Fixtures.path("data/wiki/calib_windows_seed0_n128_L512.json"))).starts
        let calib = try TokenFile.read(Fixtures.path("data/wiki/calib_tokens.u16"))
        for (window, start) in zip(windows, starts) {
            XCTAssertEqual(window, Array(calib[start..<(start + 512)]))
        }
    }

    /// Python's generator for seeds above 2³² and draws above 2³², against values Python printed:
    /// `random.seed(2**40+7); [random.randint(0, 999) for _ in range(5)]` and
    /// `random.seed(12345); [random.randint(0, 2**40) for _ in range(3)]`.
    func testPythonRandomMatchesCPython() {
        var a = PythonRandom(seed: 1 << 40 + 7)
        XCTAssertEqual((0..<5).map { _ in a.randbelow(1000) }, [628, 765, 834, 960, 967])
        var b = PythonRandom(seed: 12345)
        XCTAssertEqual((0..<3).map { _ in b.randbelow(1 << 40 + 1) }, [593_537_256_020, 960_208_693_573, 821_033_197_451])
    }

    func testWindowsAreDeterministicAndInRange() throws {
        let count = 5000, seqlen = 100
        let url = try countingTokenFile(count)
        let first = try CalibrationData.windows(url: url, tokenizer: nil, samples: 40, seqlen: seqlen, seed: 7)
        let again = try CalibrationData.windows(url: url, tokenizer: nil, samples: 40, seqlen: seqlen, seed: 7)
        let other = try CalibrationData.windows(url: url, tokenizer: nil, samples: 40, seqlen: seqlen, seed: 8)
        XCTAssertEqual(first, again)
        XCTAssertNotEqual(first, other)
        for window in first + other {
            let start = window[0]
            XCTAssertEqual(window, Array(start..<(start + seqlen)))
            XCTAssertLessThanOrEqual(start + seqlen, count - 1, "the last token is never inside a window (randint(0, N-L-1))")
        }
        // Starts spread over the whole range, not a corner of it.
        let starts = (first + other).map { $0[0] }
        XCTAssertLessThan(starts.min()!, count / 4)
        XCTAssertGreaterThan(starts.max()!, 3 * count / 4)
    }

    /// Text sources are tokenized as one encode() of the whole file: same windows as from its token file.
    func testTextSourceEqualsItsTokenFile() throws {
        let tokenizer = try smol()
        let fromText = try CalibrationData.windows(url: Fixtures.path("data/wiki/eval.txt"), tokenizer: tokenizer,
                                                   samples: 16, seqlen: 256, seed: 3)
        let fromIDs = try CalibrationData.windows(url: Fixtures.path("data/wiki/eval_tokens.u16"), tokenizer: nil,
                                                  samples: 16, seqlen: 256, seed: 3)
        XCTAssertEqual(fromText, fromIDs)
    }

    func testJSONLDocumentsAreJoinedWithBlankLine() throws {
        let tokenizer = try smol()
        let texts = ["First document.\nSecond line.", "Second \"quoted\" one", "Third: 42 ümlauts"]
        let lines = try texts.map { String(decoding: try JSONSerialization.data(withJSONObject: ["text": $0, "id": 1]),
                                           as: UTF8.self) }
        let url = try write(lines.joined(separator: "\n") + "\n\n", "docs.jsonl")
        XCTAssertEqual(try CalibrationData.tokens(url: url, tokenizer: tokenizer),
                       tokenizer.encode(texts.joined(separator: "\n\n")))
        XCTAssertEqual(try CalibrationData.documents(url), texts)
    }

    /// LLM-Pruner's loader reproduced: the windows Python's `random` and the Hugging Face tokenizer pick from
    /// calib.txt for seed 0, 10 × 64 (the LLM-Pruner reference runs' setting), made by scripts/golden/llm_pruner_draw.py.
    func testDocumentDrawEqualsLLMPrunersLoader() throws {
        struct Golden: Decodable { var seed: UInt64; var samples: Int; var seqlen: Int; var windows: [[Int]] }
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Golden/llm_pruner_draw_calib_seed0_n10_L64.json")
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
        let windows = try CalibrationData.documentDrawWindows(url: Fixtures.path("data/wiki/calib.txt"), tokenizer: smol(),
                                                              samples: golden.samples, seqlen: golden.seqlen, seed: golden.seed)
        XCTAssertEqual(windows, golden.windows)
        let otherSeed = try CalibrationData.documentDrawWindows(url: Fixtures.path("data/wiki/calib.txt"), tokenizer: smol(),
                                                                samples: golden.samples, seqlen: golden.seqlen, seed: 1)
        XCTAssertNotEqual(otherSeed, golden.windows)
    }

    /// Each document gives at most one window, and only documents of at least seqlen tokens count; asking
    /// for more windows than there are such documents is refused instead of looping forever.
    func testDocumentDrawTakesOneWindowPerLongDocument() throws {
        let tokenizer = try smol()
        let short = String(repeating: " dog", count: 20).dropFirst()
        let long = [" cat", " cow", " hen"].map { String(String(repeating: $0, count: 80).dropFirst()) }
        let url = try write(([String(short)] + long + [String(short), ""]).joined(separator: "\n\n"), "draw.txt")
        let windows = try CalibrationData.documentDrawWindows(url: url, tokenizer: tokenizer, samples: 3, seqlen: 64, seed: 5)
        let animals = long.map { Set(tokenizer.encode($0)) }
        XCTAssertEqual(Set(windows.map { window in animals.firstIndex { Set(window).isSubset(of: $0) } }), [0, 1, 2],
                       "one window from each long document")
        assertError(.data, containing: [url.path, "4 samples", "at least 64 tokens", "hold only 3"]) {
            _ = try CalibrationData.documentDrawWindows(url: url, tokenizer: tokenizer, samples: 4, seqlen: 64, seed: 5)
        }
        assertError(.argument, containing: ["calib_tokens.u16", "no documents"]) {
            _ = try CalibrationData.documentDrawWindows(url: Fixtures.path("data/wiki/calib_tokens.u16"), tokenizer: tokenizer,
                                                        samples: 1, seqlen: 64, seed: 0)
        }
    }

    /// Short "dog" documents and long "cat" and "cow" documents: with the filter every window lies inside
    /// one long document; without it some windows reach the short ones.
    func testMinimumDocumentLengthIsHonoured() throws {
        let tokenizer = try smol()
        let dogs = Array(repeating: String(repeating: " dog", count: 40).dropFirst(), count: 30).map(String.init)
        let cat = String(repeating: " cat", count: 300).dropFirst()
        let cow = String(repeating: " cow", count: 300).dropFirst()
        let documents = [dogs[0], String(cat)] + dogs[1..<15] + [String(cow)] + dogs[15...]
        let url = try write(documents.joined(separator: "\n\n"), "mixed.txt")
        XCTAssertEqual(try CalibrationData.documents(url).count, 32)

        let catIDs = Set(tokenizer.encode(String(cat))), cowIDs = Set(tokenizer.encode(String(cow)))
        let dogIDs = Set(tokenizer.encode(dogs[0]))
        XCTAssertTrue(catIDs.isDisjoint(with: dogIDs) && cowIDs.isDisjoint(with: dogIDs) && catIDs.isDisjoint(with: cowIDs))

        let filtered = try CalibrationData.windows(url: url, tokenizer: tokenizer, samples: 8, seqlen: 64, seed: 1,
                                                   minDocumentTokens: 100)
        var sawCat = false, sawCow = false
        for window in filtered {
            let ids = Set(window)
            XCTAssertTrue(ids.isSubset(of: catIDs) || ids.isSubset(of: cowIDs), "window outside one long document: \(tokenizer.decode(window))")
            sawCat = sawCat || ids.isSubset(of: catIDs)
            sawCow = sawCow || ids.isSubset(of: cowIDs)
        }
        XCTAssertTrue(sawCat && sawCow, "both long documents are drawn from")

        let unfiltered = try CalibrationData.windows(url: url, tokenizer: tokenizer, samples: 8, seqlen: 64, seed: 1)
        XCTAssertTrue(unfiltered.contains { !Set($0).isDisjoint(with: dogIDs) })

        // 2 long documents × ~300 tokens cannot give 20 × 64 tokens.
        assertError(.data, containing: [url.path, "too few", "20 samples × 64"]) {
            _ = try CalibrationData.windows(url: url, tokenizer: tokenizer, samples: 20, seqlen: 64, seed: 1,
                                            minDocumentTokens: 100)
        }
    }

    // MARK: - Errors

    func testErrors() throws {
        let tokenizer = try smol()

        let empty = try write("", "empty.txt")
        assertError(.data, containing: [empty.path, "no tokens"]) { _ = try CalibrationData.tokens(url: empty, tokenizer: tokenizer) }

        let short = try countingTokenFile(1000)
        assertError(.data, containing: [short.path, "1000 tokens", "too few", "8 samples × 128"]) {
            _ = try CalibrationData.windows(url: short, tokenizer: nil, samples: 8, seqlen: 128, seed: 0)
        }

        let odd = dir.appendingPathComponent("odd.u16")
        try Data([1, 0, 2]).write(to: odd)
        assertError(.data, containing: [odd.path, "3 bytes", "odd"]) { _ = try TokenFile.read(odd) }

        let malformed = try write("[1, 2,", "bad.json")
        assertError(.data, containing: [malformed.path, "JSON array"]) { _ = try TokenFile.read(malformed) }
        let negative = try write("[1, -2]", "negative.json")
        assertError(.data, containing: [negative.path, "element 1"]) { _ = try TokenFile.read(negative) }

        let jsonl = try write("{\"text\": \"fine\"}\n{\"title\": \"no text\"}\n", "bad.jsonl")
        assertError(.data, containing: [jsonl.path, "line 2", "\"text\""]) {
            _ = try CalibrationData.tokens(url: jsonl, tokenizer: tokenizer)
        }

        let text = try write("Some text.", "plain.txt")
        assertError(.argument, containing: [text.path, "tokenizer"]) { _ = try CalibrationData.tokens(url: text, tokenizer: nil) }

        let outOfRange = try write("[1, 60000]", "range.json")
        assertError(.data, containing: [outOfRange.path, "60000", "49152"]) {
            _ = try CalibrationData.tokens(url: outOfRange, tokenizer: tokenizer)
        }

        assertError(.argument, containing: [short.path, "document"]) {
            _ = try CalibrationData.windows(url: short, tokenizer: nil, samples: 1, seqlen: 8, seed: 0, minDocumentTokens: 10)
        }
    }
}
