import Engine
import Foundation
import TestSupport
import XCTest

/// `finetune`'s data: text packed into windows with every prediction counted, Alpaca instructions and prompt-completion
/// pairs with the loss on the response only, and clear errors for files that are neither.
final class TrainingDataTests: XCTestCase {
    private var scratch: URL!
    private var tokenizer: Tokenizer!
    private let eos = 2

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("training-data")
        tokenizer = try Tokenizer(url: Fixtures.path("fixtures/smollm2-tokenizer/tokenizer.json"))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    private func file(_ name: String, _ text: String) throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    private func load(_ urls: [URL], seqlen: Int) throws -> TrainingSet {
        try TrainingSet.load(urls, tokenizer: tokenizer, seqlen: seqlen, eos: eos, vocabSize: tokenizer.vocabularySize)
    }

    func testTextIsCutIntoConsecutiveWindowsWithEveryPredictionCounted() throws {
        let text = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 20)
        let ids = tokenizer.encode(text)
        let set = try load([try file("a.txt", text)], seqlen: 16)
        XCTAssertEqual(set.format, .text)
        XCTAssertEqual(set.examples.count, ids.count / 16)
        XCTAssertEqual(set.examples[1].ids, Array(ids[16..<32]))
        XCTAssertEqual(set.examples[0].counted, (0..<16).map { $0 != 15 })
        let jsonl = try load([try file("b.jsonl", "{\"text\": \"\(text)\"}\n")], seqlen: 16)
        XCTAssertEqual(jsonl.format, .text)
        XCTAssertEqual(jsonl.examples.first?.ids, Array(ids[0..<16]))
    }

    func testAlpacaCountsOnlyTheResponseAndItsEOS() throws {
        let lines = """
        {"instruction": "Give the capital of France.", "input": "", "output": "Paris."}
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
        """
        let set = try load([try file("alpaca.jsonl", lines)], seqlen: 96)
        XCTAssertEqual(set.format, .alpaca)
        XCTAssertEqual(set.examples.count, 2)
        for (example, (instruction, input, output)) in zip(set.examples, [("Give the capital of France.", "", "Paris."), ("Add the numbers.", "2 and 3", "5")]) {
            let prompt = TrainingSet.alpacaPrompt(instruction: instruction, input: input)
            let full = tokenizer.encode(prompt + output) + [eos]
            XCTAssertEqual(Array(example.ids.prefix(full.count)), full)
            XCTAssertTrue(example.ids[full.count...].allSatisfy { $0 == eos }, "padding is EOS")
            let targets = example.counted.indices.filter { example.counted[$0] }.map { example.ids[$0 + 1] }
            XCTAssertEqual(tokenizer.decode(Array(targets.dropLast())), output)
            XCTAssertEqual(targets.last, eos)
        }
        XCTAssertTrue(TrainingSet.alpacaPrompt(instruction: "I", input: "X").contains("### Input:\nX\n\n### Response:\n"))
        // Alpaca's own alpaca_data.json is a JSON array of such objects
        let array = try load([try file("alpaca.json", "[{\"instruction\": \"Say hi.\", \"output\": \"Hi.\"}]")], seqlen: 96)
        XCTAssertEqual(array.format, .alpaca)
        XCTAssertEqual(array.examples.count, 1)
    }

    /// The prompt as it is (no template), the loss on the completion and EOS only: a classifier learns its label word
    /// after the exact prompt it is scored with.
    func testPromptCompletionCountsOnlyTheCompletionAfterTheUntemplatedPrompt() throws {
        let pairs = [("Review: a gorgeous, witty film\nSentiment:", " positive"), ("Review: dull and overlong\nSentiment:", " negative")]
        let lines = pairs.map { "{\"prompt\": \"\($0.0.replacingOccurrences(of: "\n", with: "\\n"))\", \"completion\": \"\($0.1)\"}" }.joined(separator: "\n")
        let set = try load([try file("sst2.jsonl", lines)], seqlen: 32)
        XCTAssertEqual(set.format, .promptCompletion)
        XCTAssertEqual(set.examples.count, 2)
        for (example, (prompt, completion)) in zip(set.examples, pairs) {
            let full = tokenizer.encode(prompt + completion) + [eos]
            XCTAssertEqual(Array(example.ids.prefix(full.count)), full, "the prompt carries no template")
            XCTAssertTrue(example.ids[full.count...].allSatisfy { $0 == eos }, "padding is EOS")
            let targets = example.counted.indices.filter { example.counted[$0] }.map { example.ids[$0 + 1] }
            XCTAssertEqual(tokenizer.decode(Array(targets.dropLast())), completion)
            XCTAssertEqual(targets.last, eos)
            XCTAssertEqual(example.counted.filter { $0 }.count, full.count - tokenizer.encode(prompt).count)
        }
        let array = try load([try file("pairs.json", "[{\"prompt\": \"Q: 2+2?\\nA:\", \"completion\": \" 4\"}]")], seqlen: 32)
        XCTAssertEqual(array.format, .promptCompletion)
        XCTAssertEqual(array.examples.count, 1)
        // One kind per run: pairs next to Alpaca instructions are refused.
        let alpaca = try file("i.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}")
        XCTAssertThrowsError(try load([alpaca, try file("p.jsonl", lines)], seqlen: 32)) { error in
            XCTAssertTrue("\(error)".contains("is prompt-completion data, the files before it are alpaca"), "\(error)")
        }
    }

    func testLongExamplesAreCutAndPromptOnlyExamplesLeftOut() throws {
        let long = String(repeating: "word ", count: 200)
        let lines = """
        {"instruction": "Short.", "output": "\(long)"}
        {"instruction": "\(long)", "output": "x"}
        {"instruction": "Short.", "output": "ok"}
        """
        let set = try load([try file("long.jsonl", lines)], seqlen: 64)
        XCTAssertEqual(set.examples.count, 2)
        XCTAssertEqual(set.truncated, 1)
        XCTAssertEqual(set.dropped, 1)
        XCTAssertTrue(set.examples.allSatisfy { $0.ids.count == 64 && $0.counted.count == 64 && !$0.counted[63] })
        XCTAssertTrue(set.examples[0].counted[62], "a cut example is counted up to its end")
    }

    func testBadFilesAreRefusedWithFileLineAndWhatWasExpected() throws {
        func message(_ urls: [URL], seqlen: Int = 16) -> String {
            do { _ = try load(urls, seqlen: seqlen); return "no error" } catch { return "\(error)" }
        }
        let empty = try file("empty.txt", "")
        XCTAssertTrue(message([empty]).contains("empty.txt: no tokens"), message([empty]))
        let missing = try file("bad.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\"}\n")
        XCTAssertTrue(message([missing]).contains("bad.jsonl line 2: expected string fields \"instruction\" and \"output\""), message([missing]))
        let short = try file("short.txt", "Two words")
        XCTAssertTrue(message([short]).contains("fewer than one sequence of --seqlen 16"), message([short]))
        let mixed = [try file("t.txt", String(repeating: "text ", count: 40)), try file("i.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}")]
        XCTAssertTrue(message(mixed, seqlen: 32).contains("give one kind"), message(mixed, seqlen: 32))
        let incomplete = try file("p.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n")
        XCTAssertTrue(message([incomplete]).contains("p.jsonl line 2: expected string fields \"prompt\" and \"completion\""), message([incomplete]))
        let notJSON = try file("n.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\nnot json\n")
        XCTAssertTrue(message([notJSON]).contains("n.jsonl line 2: expected a JSON object"), message([notJSON]))
    }
}
