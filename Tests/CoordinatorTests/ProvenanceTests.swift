import Engine
import Foundation
import TestSupport
import XCTest
@testable import Coordinator

final class ProvenanceTests: XCTestCase {
    func testOptionNamesAndQuoting() {
        XCTAssertEqual(RunProvenance.snakeCase("outputDType"), "output_dtype")
        XCTAssertEqual(RunProvenance.snakeCase("reportURL"), "report_url")
        XCTAssertEqual(RunProvenance.snakeCase("krpRidgePerInput"), "krp_ridge_per_input")
        XCTAssertEqual(RunProvenance.shellQuoted("--seqlen"), "--seqlen")
        XCTAssertEqual(RunProvenance.shellQuoted("a b"), "'a b'")
        XCTAssertEqual(RunProvenance.shellQuoted("it's"), "'it'\\''s'")
        XCTAssertEqual(RunProvenance.shellQuoted(""), "''")
    }

    func testEverySettingIsRecorded() {
        struct Settings { var method = "krp"; var seqlen = 512; var reportURL: URL? = nil; var out = URL(fileURLWithPath: "/x/y")
            var blocks: ClosedRange<Int>? = 1...3; var outputLock: Int? = 3 }
        let values = RunProvenance.optionValues(Settings())
        XCTAssertEqual(values, ["method": "krp", "seqlen": "512", "report_url": "none", "out": "/x/y", "blocks": "1...3"])
    }

    /// HEAD read without git: a plain repository (loose and packed refs), a detached HEAD and a worktree.
    func testHeadIsReadWithoutGit() throws {
        let root = try Fixtures.temporaryDirectory("git")
        defer { try? FileManager.default.removeItem(at: root) }
        let commitA = String(repeating: "a", count: 40), commitB = String(repeating: "b", count: 40)
        let repo = root.appendingPathComponent("repo"), git = repo.appendingPathComponent(".git")
        try FileManager.default.createDirectory(at: git.appendingPathComponent("refs/heads"), withIntermediateDirectories: true)
        try "ref: refs/heads/main\n".write(to: git.appendingPathComponent("HEAD"), atomically: true, encoding: .utf8)
        try "# pack-refs\n\(commitB) refs/heads/main\n".write(to: git.appendingPathComponent("packed-refs"), atomically: true, encoding: .utf8)
        XCTAssertEqual(BuildInfo.readHead(root: repo), commitB, "packed ref")
        try "\(commitA)\n".write(to: git.appendingPathComponent("refs/heads/main"), atomically: true, encoding: .utf8)
        XCTAssertEqual(BuildInfo.readHead(root: repo), commitA, "loose ref first")
        // A worktree: .git is a file naming its git dir, whose commondir holds the refs.
        let worktree = root.appendingPathComponent("wt"), wtGit = git.appendingPathComponent("worktrees/wt")
        try FileManager.default.createDirectory(at: worktree, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: wtGit, withIntermediateDirectories: true)
        try "gitdir: \(wtGit.path)\n".write(to: worktree.appendingPathComponent(".git"), atomically: true, encoding: .utf8)
        try "../..\n".write(to: wtGit.appendingPathComponent("commondir"), atomically: true, encoding: .utf8)
        try "ref: refs/heads/main\n".write(to: wtGit.appendingPathComponent("HEAD"), atomically: true, encoding: .utf8)
        XCTAssertEqual(BuildInfo.readHead(root: worktree), commitA)
        try "\(commitB)\n".write(to: wtGit.appendingPathComponent("HEAD"), atomically: true, encoding: .utf8)
        XCTAssertEqual(BuildInfo.readHead(root: worktree), commitB, "detached")
        XCTAssertNil(BuildInfo.readHead(root: root.appendingPathComponent("nothing")))
    }

    func testFilesToCopyLeaveWeightsConfigAndFoldersOut() throws {
        let dir = try Fixtures.temporaryDirectory("companions")
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                     "pytorch_model.bin", "README.md", "prune-report.json", ".hidden", "tokenizer.json", "tokenizer_config.json",
                     "chat_template.jinja", "special_tokens_map.json", "added_tokens.json", "generation_config.json", "LICENSE",
                     "merges.txt", "vocab.json", "tokenizer.model"] {
            try Data("x".utf8).write(to: dir.appendingPathComponent(name))
        }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("original"), withIntermediateDirectories: true)
        XCTAssertEqual(try CheckpointCompanions.filesToCopy(from: dir),
                       ["LICENSE", "added_tokens.json", "chat_template.jinja", "generation_config.json", "merges.txt",
                        "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json"])
    }

    func testSparsityConfigFollowsCompressedTensors() {
        let nm = CheckpointCompanions.sparsityConfig(report: ["method": "sparsegpt", "pattern": "2:4", "overall_sparsity": 0.5])
        XCTAssertEqual(nm?["format"] as? String, "dense")
        XCTAssertEqual(nm?["sparsity_structure"] as? String, "2:4")
        XCTAssertEqual(nm?["global_sparsity"] as? Double, 0.5)
        XCTAssertEqual(nm?["targets"] as? [String], ["Linear"])
        XCTAssertEqual(nm?["ignore"] as? [String], ["lm_head"])
        let unstructured = CheckpointCompanions.sparsityConfig(report: ["method": "krp", "pattern": "unstructured 60%", "overall_sparsity": 0.6])
        XCTAssertEqual(unstructured?["sparsity_structure"] as? String, "unstructured")
        XCTAssertNil(CheckpointCompanions.sparsityConfig(report: ["method": "llm-pruner", "ratio": 0.2]), "structured: dense and smaller")
        // --ignore targets are not sparse, nor (under 2:4) a target overridden to another sparsity.
        let rules = CheckpointCompanions.sparsityConfig(report: ["method": "wanda", "pattern": "2:4", "overall_sparsity": 0.4,
                                                                  "ignore": ["re:.*down_proj", "lm_head"],
                                                                  "sparsity_overrides": ["model.layers.0.mlp.up_proj=0.3", "re:.*q_proj=2:4"]])
        XCTAssertEqual(rules?["ignore"] as? [String], ["lm_head", "re:.*down_proj", "model.layers.0.mlp.up_proj"])
    }
}
