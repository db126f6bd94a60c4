import Foundation
import TestSupport
import XCTest

/// `prune-dist generate` as a user runs it, against transformers' greedy goldens.
final class GenerateTests: XCTestCase {
    /// Token-id prompts on the tiny fixture (no tokenizer): the ids transformers' greedy generate gives.
    func testGenerateTinyFixtureEqualsTransformers() throws {
        let golden = try GenerationGoldens.load()
        let model = try Fixtures.path("fixtures/tiny-llama").path
        for item in golden.tiny {
            let result = try PruneDistBinary.run(["generate", "--model", model, "--prompt-ids", item.promptIds.map(String.init).joined(separator: ","),
                                                  "--max-new-tokens", String(golden.newTokens), "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            let object = try result.lastJSON()
            XCTAssertEqual(object["prompt_ids"] as? [Int], item.promptIds)
            XCTAssertEqual(object["generated_ids"] as? [Int], item.generatedIds)
        }
        // Streaming without a tokenizer prints the ids as they come.
        let item = golden.tiny[0]
        let streamed = try PruneDistBinary.run(["generate", "--model", model, "--prompt-ids", item.promptIds.map(String.init).joined(separator: ","),
                                                "--max-new-tokens", "5"])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        XCTAssertEqual(streamed.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) },
                       Array(item.generatedIds.prefix(5)))
    }

    /// `--chat` on SmolLM2: the chat template's prompt ids and 32 greedy tokens as transformers', streamed as text.
    func testGenerateChatSmolLM2EqualsTransformers() throws {
        guard let directory = GenerationGoldens.smolLM2Directory() else {
            throw XCTSkip("SmolLM2-135M-Instruct is not converted on this machine (~/.cache/prune-dist; scripts/demo.sh makes it): generate --chat not compared")
        }
        let golden = try GenerationGoldens.load()
        let long = try XCTUnwrap(golden.smollm2.first { $0.chat == true && $0.generatedIds.count == golden.newTokens })
        let json = try PruneDistBinary.run(["generate", "--model", directory.path, "--prompt", long.prompt!, "--chat",
                                            "--max-new-tokens", String(golden.newTokens), "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try json.lastJSON()
        XCTAssertEqual(object["prompt_ids"] as? [Int], long.promptIds)
        XCTAssertEqual(object["generated_ids"] as? [Int], long.generatedIds)
        XCTAssertEqual(object["text"] as? String, long.generatedText)

        // Streamed: the text of the tokens, the end token not printed, then a newline.
        let short = try XCTUnwrap(golden.smollm2.first { $0.chat == true && $0.generatedIds.count < golden.newTokens })
        let streamed = try PruneDistBinary.run(["generate", "--model", directory.path, "--prompt", short.prompt!, "--chat",
                                                "--max-new-tokens", String(golden.newTokens)])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        XCTAssertEqual(streamed.stdout, short.generatedText!.replacingOccurrences(of: "<|im_end|>", with: "") + "\n")
        XCTAssertTrue(streamed.stderr.contains("(end token)"), streamed.stderr)
    }

    func testGenerateRefusesContradictoryOptions() throws {
        let model = try Fixtures.path("fixtures/tiny-llama").path
        for (arguments, message) in [
            (["--prompt-ids", "1,2", "--top-p", "0.9"], "--top-p applies to sampling"),
            (["--prompt-ids", "1,2", "--chat"], "--chat needs --prompt"),
            (["--prompt-ids", "1,x"], "comma-separated token ids"),
            (["--prompt-ids", "1", "--temperature=-1"], "--temperature must be"),
            (["--prompt", "hi"], "no tokenizer.json"),
            (["--prompt-ids", "1", "--max-new-tokens", "5000"], "max_position_embeddings"),
        ] {
            let result = try PruneDistBinary.run(["generate", "--model", model] + arguments)
            XCTAssertNotEqual(result.status, 0, "\(arguments)")
            XCTAssertTrue(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
    }
}
