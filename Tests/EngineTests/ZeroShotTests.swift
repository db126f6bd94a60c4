import Engine
import Foundation
import TestSupport
import XCTest

final class ZeroShotTests: XCTestCase {
    private func goldens() throws -> (ids: [Int], nll: [Float]) {
        let reference = try SafetensorsFile(url: Fixtures.path("fixtures/tiny-llama-reference.safetensors"))
        return (try reference.int64s("input_ids").map(Int.init), try reference.floats("nll_per_token"))
    }

    /// Continuation log-likelihoods equal minus the golden per-token NLLs, whatever the batching and padding.
    func testLogLikelihoodsMatchGoldenNLLUnderAnyBatching() throws {
        let (ids, nll) = try goldens()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        // Prefixes of both golden sequences, of different lengths and continuation starts.
        var sequences: [ScoredSequence] = []
        var expected: [Double] = []
        for (row, length, start) in [(0, 16, 5), (1, 16, 1), (0, 9, 3), (1, 12, 11), (0, 2, 1), (1, 7, 2)] {
            sequences.append(ScoredSequence(ids: Array(ids[(row * 16)..<(row * 16 + length)]), continuationStart: start))
            expected.append(-nll[(row * 15 + start - 1)..<(row * 15 + length - 1)].reduce(0.0) { $0 + Double($1) })
        }
        for (batchTokens, budget) in [(4096, 1 << 20), (20, 40), (16, 16)] {
            let scores = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head,
                                                            sequences: sequences, batchTokens: batchTokens, groupTokenBudget: budget)
            for i in sequences.indices {
                XCTAssertEqual(scores[i], expected[i], accuracy: 2e-4, "sequence \(i), batch \(batchTokens)")
            }
        }
        XCTAssertThrowsError(try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head,
                                                                sequences: [ScoredSequence(ids: [1, 2], continuationStart: 0)]))
    }

    func testHarnessPairSplitMovesContextSpacesIntoContinuation() {
        // A character-level "tokenizer" makes the split visible.
        let encode: (String) -> [Int] = { $0.unicodeScalars.map { Int($0.value) } }
        let pair = ScoredSequence(context: "Answer: ", continuation: "yes", encode: encode)
        XCTAssertEqual(pair.ids, encode("Answer: yes"))
        XCTAssertEqual(pair.continuationStart, 7, "the trailing space is scored with the continuation")
    }

    func testTaskFormatsFollowTheHarness() throws {
        let folder = try Fixtures.path("data/tasks")
        let boolq = try ZeroShotTask.boolq.documents(url: folder.appendingPathComponent(ZeroShotTask.boolq.fileName), limit: 3)
        XCTAssertEqual(boolq.count, 3)
        XCTAssertTrue(boolq[0].contexts[0].hasSuffix("\nQuestion: does ethanol take more energy make that produces?\nAnswer:"))
        XCTAssertEqual(boolq[0].continuations, [" no", " yes"])
        XCTAssertEqual(boolq[0].gold, 0)

        let hellaswag = try ZeroShotTask.hellaswag.documents(url: folder.appendingPathComponent(ZeroShotTask.hellaswag.fileName), limit: 1)
        XCTAssertEqual(hellaswag[0].contexts[0], "Roof shingle removal: A man is sitting on a roof. He")
        XCTAssertEqual(hellaswag[0].continuations[3], " starts pulling up roofing on a roof.")
        XCTAssertEqual(hellaswag[0].gold, 3)
        XCTAssertEqual(ZeroShotTask.hellaswagClean(" a [title] b [step] c  d"), "a. b c d", "Python: strip, replace, re.sub, replace(\"  \", \" \")")

        let winogrande = try ZeroShotTask.winogrande.documents(url: folder.appendingPathComponent(ZeroShotTask.winogrande.fileName), limit: 1)
        XCTAssertEqual(winogrande[0].contexts, ["Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"])
        XCTAssertEqual(winogrande[0].continuations, [" always got the easier cases.", " always got the easier cases."])
        XCTAssertEqual(winogrande[0].gold, 1)

        let openbook = try ZeroShotTask.openbookqa.documents(url: folder.appendingPathComponent(ZeroShotTask.openbookqa.fileName), limit: 1)
        XCTAssertFalse(openbook[0].contexts[0].hasPrefix("Question:"), "OpenBookQA reads the stem alone")
        let sst2 = try ZeroShotTask.sst2.documents(url: folder.appendingPathComponent(ZeroShotTask.sst2.fileName), limit: 1)
        XCTAssertEqual(sst2[0].contexts[0], "it 's a charming and often affecting journey . \nQuestion: Is this sentence positive or negative?\nAnswer:")
        XCTAssertEqual(sst2[0].gold, 1)
        for task in ZeroShotTask.allCases {
            let documents = try task.documents(url: folder.appendingPathComponent(task.fileName), limit: 300)
            XCTAssertEqual(documents.count, 300, task.rawValue)
            for d in documents {
                XCTAssertTrue(d.contexts.indices.contains(d.gold), task.rawValue)
                XCTAssertEqual(d.contexts.count, d.continuations.count)
            }
        }
    }

    func testAccuracyUsesLengthNormalisationForAccNorm() {
        let document = ZeroShotDocument(contexts: ["q", "q"], continuations: [" a", " bbbb"], normalisationLengths: [1, 4], gold: 1)
        // Choice 0 wins on the sum (−2 > −4), choice 1 on the per-character mean (−1 > −2).
        let result = ZeroShotScoring.accuracy(documents: [document], logLikelihoods: [[-2, -4]])
        XCTAssertEqual(result.acc, 0)
        XCTAssertEqual(result.accNorm, 1)
    }

    func testMalformedTaskLineNamesFileAndLine() throws {
        let folder = try Fixtures.temporaryDirectory("tasks")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("piqa.validation.jsonl")
        try Data("{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 0}\n{\"goal\": \"g\", \"sol1\": \"a\"}\n".utf8).write(to: file)
        XCTAssertThrowsError(try ZeroShotTask.piqa.documents(url: file)) { error in
            XCTAssertTrue("\(error)".contains("line 2") && "\(error)".contains("sol2") && "\(error)".contains(file.path), "\(error)")
        }
    }

    /// Writes `contents` as a task file and returns the error reading it gives.
    private func taskError(_ task: ZeroShotTask, _ contents: String) throws -> (file: String, message: String) {
        let folder = try Fixtures.temporaryDirectory("bad-task")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent(task.fileName)
        try Data(contents.utf8).write(to: file)
        do {
            _ = try task.documents(url: file)
        } catch let error as PruneDistError {
            XCTAssertEqual(error.kind, .data)
            return (file.path, error.message)
        }
        XCTFail("\(task.rawValue): no error for \(contents)")
        return (file.path, "")
    }

    func testMissingFieldIsNamedWithFileAndLine() throws {
        let good = "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": \"1\"}"
        // Line 3 lacks option2; the blank line 2 still counts.
        let (file, message) = try taskError(.winogrande, good + "\n\n{\"sentence\": \"a _ b\", \"option1\": \"x\", \"answer\": \"2\"}\n")
        XCTAssertEqual(message, "\(file): line 3: field \"option2\" missing (task winogrande)")
    }

    func testWrongLabelTypeIsNamedWithFileAndLine() throws {
        let row = { (label: String) in "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": \(label)}" }
        var (file, message) = try taskError(.piqa, row("0") + "\n" + row("true") + "\n")
        XCTAssertEqual(message, "\(file): line 2: field \"label\" is the boolean true, expected an integer (task piqa)")
        (file, message) = try taskError(.piqa, row("1") + "\n" + row("1") + "\n" + row("\"one\"") + "\n")
        XCTAssertEqual(message, "\(file): line 3: field \"label\" is the string \"one\", expected an integer (task piqa)")
        // BoolQ's answer is a JSON boolean; a number is refused rather than read as true.
        (file, message) = try taskError(.boolq, "{\"question\": \"q\", \"passage\": \"p\", \"answer\": 1}\n")
        XCTAssertEqual(message, "\(file): line 1: field \"answer\" is the number 1, expected true or false (task boolq)")
        // A label outside the choices.
        (file, message) = try taskError(.arcEasy, "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n")
        XCTAssertEqual(message, "\(file): line 1: answer index 2 outside 2 choices (task arc_easy)")
    }

    func testEmptyFileIsNamed() throws {
        for contents in ["", "\n\n  \n"] {
            let (file, message) = try taskError(.hellaswag, contents)
            XCTAssertTrue(message.hasPrefix("\(file): line 1: the file holds no documents"), message)
        }
        let (file, message) = try taskError(.sst2, "{\"sentence\": \"fine\", \"label\": 1}\nnot json\n")
        XCTAssertEqual(message, "\(file): line 2 is not a JSON object (task sst2)")
    }

    /// lm-eval's _encode_pair: all trailing whitespace moves, and the model reads the context's own tokens
    /// followed by the whole encoding's tail (they differ when a token would straddle the boundary).
    func testHarnessPairSplitUsesContextTokensThenTheWholeEncodingsTail() {
        // A "tokenizer" that merges "ab" into one token (id 1000) wherever it appears.
        let encode: (String) -> [Int] = { text in
            var ids: [Int] = [], scalars = Array(text.unicodeScalars), i = 0
            while i < scalars.count {
                if scalars[i] == "a", i + 1 < scalars.count, scalars[i + 1] == "b" { ids.append(1000); i += 2 } else { ids.append(Int(scalars[i].value)); i += 1 }
            }
            return ids
        }
        let pair = ScoredSequence(context: "xa", continuation: "bc", encode: encode)
        // whole = [x, ab, c]; context = [x, a]; continuation = whole[2...] = [c].
        XCTAssertEqual(pair.ids, [120, 97, 99])
        XCTAssertEqual(pair.continuationStart, 2)
        let newline = ScoredSequence(context: "q\n", continuation: "yes", encode: encode)
        XCTAssertEqual(newline.ids, encode("q\nyes"))
        XCTAssertEqual(newline.continuationStart, 1, "a trailing newline is scored with the continuation, as rstrip() moves it")
    }

    /// Batches of one plan scored on different "ranks" give the same bits as all batches scored together.
    func testBatchesScoredSeparatelyEqualOneCall() throws {
        let (ids, _) = try goldens()
        let checkpoint = try Checkpoint(directory: Fixtures.path("fixtures/tiny-llama"))
        let embedding = try LlamaEmbedding(checkpoint: checkpoint)
        let head = try LlamaHead(checkpoint: checkpoint, embedding: embedding)
        let sequences = (2...16).map { ScoredSequence(ids: Array(ids[0..<$0]), continuationStart: $0 / 2) }
        let plan = ZeroShotScoring.batches(sequences: sequences, batchTokens: 40)
        XCTAssertGreaterThan(plan.count, 3)
        XCTAssertEqual(plan.flatMap { $0 }.sorted(), Array(sequences.indices))
        let all = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head, sequences: sequences, batchTokens: 40)
        var summed = [Double](repeating: 0, count: sequences.count)
        for rank in 0..<3 {
            let mine = plan.indices.filter { $0 % 3 == rank }.map { plan[$0] }
            let part = try ZeroShotScoring.logLikelihoods(checkpoint: checkpoint, embedding: embedding, head: head,
                                                          sequences: sequences, batches: mine, batchTokens: 40)
            for i in summed.indices { summed[i] += part[i] }
        }
        XCTAssertEqual(summed, all)
    }
}
