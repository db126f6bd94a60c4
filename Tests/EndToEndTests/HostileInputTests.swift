import Engine
import Foundation
import TestSupport
import XCTest

/// A careless or hostile user (issue 14): every bad input is built from the tiny fixture at test time, and
/// each refusal is checked for its exit code, its message, and that nothing on disk changed (a snapshot of
/// the scratch folder, which holds the input model's copy, the data files and the output's parent).
final class HostileInputTests: XCTestCase {
    private var scratch: URL!
    private var model: URL!
    private var calib: URL!

    override func setUpWithError() throws {
        scratch = try Fixtures.temporaryDirectory("hostile")
        model = try copyFixtureModel(named: "model")
        calib = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 3)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    // MARK: helpers

    /// A writable copy of tiny-llama in the scratch folder.
    private func copyFixtureModel(named name: String) throws -> URL {
        let copy = scratch.appendingPathComponent(name)
        try FileManager.default.copyItem(at: try Fixtures.path("fixtures/tiny-llama"), to: copy)
        for item in [copy.path] + (try FileManager.default.contentsOfDirectory(atPath: copy.path)).map({ copy.appendingPathComponent($0).path }) {
            try FileManager.default.setAttributes([.posixPermissions: item == copy.path ? 0o755 : 0o644], ofItemAtPath: item)
        }
        return copy
    }

    /// Runs the binary (bounded: a hang fails the test instead of stalling it).
    private func run(_ arguments: [String], environment: [String: String] = [:], seconds: Double = 120) throws -> (status: Int32?, stderr: String) {
        let process = try BackgroundProcess(PruneDistBinary.executable, arguments, environment: environment)
        let status = process.wait(seconds: seconds)
        return (status, process.stderr)
    }

    /// Runs `arguments` and checks the exit code, that stderr holds every fragment and no trap, and that
    /// nothing under the scratch folder changed.
    private func assertRefused(_ arguments: [String], status: Int32, _ fragments: [String], seconds: Double = 120,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let before = DirectorySnapshot([scratch])
        let result = try run(arguments, seconds: seconds)
        XCTAssertEqual(result.status, status, "\(arguments): \(result.stderr)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(result.stderr.contains(fragment), "\(arguments): stderr should mention \"\(fragment)\":\n\(result.stderr)", file: file, line: line)
        }
        XCTAssertFalse(result.stderr.contains("Fatal error") || result.stderr.contains("Stack dump"), result.stderr, file: file, line: line)
        XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [], "\(arguments) changed files", file: file, line: line)
    }

    private func prune(out: String, _ extra: [String]) -> [String] {
        ["prune", "--model", model.path, "--out", out, "--calib", calib.path, "--samples", "8", "--seqlen", "32",
         "--log-level", "warning"] + extra
    }

    private func path(_ name: String) -> String { scratch.appendingPathComponent(name).path }

    /// Rewrites config.json of `folder` through `change`.
    private func editConfig(_ folder: URL, _ change: (inout [String: Any]) -> Void) throws {
        let url = folder.appendingPathComponent("config.json")
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        change(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }

    /// Overwrites `values` at the start of an F32 tensor of `folder`'s model.safetensors, in place.
    private func setFloats(_ folder: URL, tensor: String, _ values: [Float]) throws {
        let url = folder.appendingPathComponent("model.safetensors")
        let offset = try safetensorsDataStart(url) + SafetensorsFile(url: url).info(tensor).dataOffset
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        handle.write(values.withUnsafeBytes { Data($0) })
    }

    private func safetensorsDataStart(_ url: URL) throws -> Int {
        let prefix = try Data(contentsOf: url).prefix(8)
        return 8 + Int(prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    private func writeGGUF(_ writer: GGUFWriter, _ name: String) throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try writer.write(to: url)
        return url
    }

    // MARK: 1. no user file is deleted or overwritten

    func testOutputOrReportOnAUserFileOrAnInputIsRefused() throws {
        let notes = scratch.appendingPathComponent("notes.txt")
        try Data("mine".utf8).write(to: notes)
        let full = scratch.appendingPathComponent("full")
        try FileManager.default.createDirectory(at: full, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: full.appendingPathComponent("keep.txt"))
        let magnitude = ["--method", "magnitude", "--sparsity", "0.5"]
        let cases: [([String], [String])] = [
            (prune(out: model.appendingPathComponent("model.safetensors").path, magnitude), ["--out", "is inside --model"]),
            (prune(out: model.path, magnitude), ["is the same path as --model"]),
            (prune(out: calib.path, magnitude), ["is the same path as --calib"]),
            (prune(out: notes.path, magnitude), ["--out \(notes.path): exists and is not a folder"]),
            (prune(out: full.path, magnitude), ["folder exists and is not empty"]),
            (prune(out: path("o"), magnitude + ["--report", model.appendingPathComponent("config.json").path]), ["--report", "is inside --model"]),
            (prune(out: path("o"), magnitude + ["--report", notes.path]), ["is not a prune-dist JSON report"]),
            (prune(out: path("o"), magnitude + ["--report", full.path]), ["--report \(full.path): is a folder"]),
            (prune(out: path("o"), magnitude + ["--report", path("o/run.json")]), ["is inside --out"]),
            (prune(out: path("o"), magnitude + ["--report", path("absent/run.json")]), ["does not exist"]),
            (["report", model.appendingPathComponent("config.json").path, "--out", notes.path], ["is not a prune-dist HTML report"]),
        ]
        for (arguments, fragments) in cases { try assertRefused(arguments, status: 64, fragments) }
    }

    func testConvertOntoAFileOrItsOwnInputIsRefused() throws {
        let gguf = try writeGGUF(ConvertTests.tinyModel(), "tiny.gguf")
        let notes = scratch.appendingPathComponent("notes.txt")
        try Data("mine".utf8).write(to: notes)
        try assertRefused(["convert", "--gguf", gguf.path, "--out", notes.path], status: 1, ["--out \(notes.path): exists and is not a folder"])
        try assertRefused(["convert", "--gguf", gguf.path, "--out", gguf.path], status: 1, ["is the same path as --gguf"])
    }

    /// The test process holds the output's lock, as a running prune-dist would: a second writer stops at once,
    /// names the holder, and leaves the holder's partial folder alone.
    func testASecondRunOnTheSameOutputStopsAtOnceNamingTheFirst() throws {
        let out = scratch.appendingPathComponent("o")
        let lock = try OutputLock.acquire(partial: OutputFolder.partialFolder(for: out), out: out)
        try Data("first run's work".utf8).write(to: lock.partial.appendingPathComponent("journal.jsonl"))
        let holder = "another prune-dist run (pid \(getpid()), host "
        try assertRefused(prune(out: out.path, ["--method", "wanda", "--sparsity", "0.5"]), status: 1, [holder, out.path])
        try assertRefused(prune(out: out.path, ["--method", "llm-pruner", "--ratio", "0.3", "--block-start", "0", "--block-end", "1"]),
                          status: 1, [holder])
        let gguf = try writeGGUF(ConvertTests.tinyModel(), "tiny.gguf")
        try assertRefused(["convert", "--gguf", gguf.path, "--out", out.path], status: 1, [holder])
        withExtendedLifetime(lock) {}
    }

    /// The last step cannot replace a folder that filled up during the run: the error names --out and the
    /// reason, the user's file stays, and the finished output is kept where the message says.
    func testFinishedOutputIsNotMovedOntoAFolderThatFilledUp() throws {
        let out = scratch.appendingPathComponent("o"), partial = OutputFolder.partialFolder(for: out)
        try FileManager.default.createDirectory(at: partial, withIntermediateDirectories: true)
        try Data("weights".utf8).write(to: partial.appendingPathComponent("model.safetensors"))
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("written meanwhile".utf8).write(to: out.appendingPathComponent("user.txt"))
        XCTAssertThrowsError(try OutputFolder.moveIntoPlace(partial, out: out)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("--out \(out.path)") && message.contains("not empty") && message.contains(partial.path), message)
        }
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("user.txt"), encoding: .utf8), "written meanwhile")
        XCTAssertEqual(try String(contentsOf: partial.appendingPathComponent("model.safetensors"), encoding: .utf8), "weights")
    }

    // MARK: 2 and 3. no trap, no hang, no unbounded allocation

    func testHostileNumbersOnTheCommandLineAreRefusedByName() throws {
        let magnitude = ["--method", "magnitude", "--sparsity", "0.5"]
        let plan = ["plan", "--config", model.appendingPathComponent("config.json").path]
        let cases: [([String], [String])] = [
            (prune(out: path("o"), magnitude) + ["--samples", "4000000000000000000"], ["--samples must be a positive integer no larger than", "4000000000000000000"]),
            (prune(out: path("o"), magnitude) + ["--samples", "-1"], ["--samples must be a positive integer", "got -1"]),
            (prune(out: path("o"), magnitude) + ["--seqlen", "99999999999"], ["--seqlen must be"]),
            (plan + ["--ranks", "1000000000000", "--mem-per-rank", "64G"], ["--ranks must be a positive integer no larger than 1048576"]),
            (plan + ["--ranks", "2", "--mem-per-rank", "99999999999999999T"], ["--mem-per-rank 99999999999999999T is beyond the limit"]),
            (["comm-check", "--megabytes", "100000000000000"], ["--megabytes must be a non-negative integer no larger than 65536"]),
            (["eval", "perplexity", "--model", model.path, "--tokens", calib.path, "--seqlen", "4000000000000"], ["--seqlen must be"]),
        ]
        for (arguments, fragments) in cases { try assertRefused(arguments, status: 64, fragments) }
    }

    func testHostileConfigSizesAreRefusedBeforeAnyLoop() throws {
        let cases: [(String, Any, String)] = [
            ("hidden_size", 1 << 40, "hidden_size is 1099511627776, beyond the limit"),
            ("vocab_size", 1 << 62, "vocab_size is 4611686018427387904, beyond the limit"),
            ("num_hidden_layers", 1_000_000_000_000_000, "num_hidden_layers is 1000000000000000, beyond the limit"),
            ("num_hidden_layers", 4, "num_hidden_layers is 4, but the weights hold 3 blocks"),
            ("head_dim", 15, "head_dim 15 is odd"),
        ]
        for (key, value, fragment) in cases {
            let folder = try copyFixtureModel(named: "bad-\(key)-\(value)")
            try editConfig(folder) { $0[key] = value }
            let config = folder.appendingPathComponent("config.json").path
            try assertRefused(["inspect", "--model", folder.path], status: 1, [config, fragment], seconds: 30)
            try assertRefused(prune(out: path("o"), ["--method", "magnitude", "--sparsity", "0.5"]).map { $0 == model.path ? folder.path : $0 },
                              status: 1, [fragment], seconds: 30)
            if key != "num_hidden_layers" || (value as? Int) != 4 {  // plan --config reads no weights to compare with
                try assertRefused(["plan", "--config", config, "--ranks", "2", "--mem-per-rank", "64G"], status: 1, [fragment], seconds: 30)
            }
        }
    }

    func testIntegerWeightsAreRefusedOnOpen() throws {
        let folder = try copyFixtureModel(named: "int-weights")
        let url = folder.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: url)
        let header = String(decoding: bytes.prefix(try safetensorsDataStart(url)), as: UTF8.self)
        // Same width, so every offset stays valid: the weight now claims to be 32-bit integers.
        let key = "\"model.layers.0.self_attn.q_proj.weight\":{\"dtype\":\"F32\""
        let at = try XCTUnwrap(header.range(of: key)).upperBound
        let index = header.utf8.distance(from: header.utf8.startIndex, to: at) - 4
        bytes.replaceSubrange(index..<(index + 3), with: Data("I32".utf8))
        try bytes.write(to: url)
        try assertRefused(prune(out: path("o"), ["--method", "magnitude", "--sparsity", "0.5"]).map { $0 == model.path ? folder.path : $0 },
                          status: 1, ["model.layers.0.self_attn.q_proj.weight is stored as I32", "must be floating point"])
    }

    func testHostileGGUFHeadersAreRefusedWithoutTrapOrAllocation() throws {
        var overflowing = ConvertTests.tinyModel()
        overflowing.tensors[1].dimensions = [2_147_483_647, 2_147_483_647, 2_147_483_647, 2_147_483_647]
        var blocks = ConvertTests.tinyModel()
        blocks.metadata[2] = (key: "llama.block_count", value: .uint32(4_000_000_000))
        var oddHeads = ConvertTests.tinyModel()
        oddHeads.metadata.append((key: "llama.attention.key_length", value: .uint32(63)))
        let cases: [(GGUFWriter, String)] = [
            (overflowing, "describe more bytes than any file can hold"),
            (blocks, "num_hidden_layers is 4000000000, beyond the limit"),
            (oddHeads, "head_dim 63 is odd"),
        ]
        for (i, (writer, fragment)) in cases.enumerated() {
            let gguf = try writeGGUF(writer, "hostile-\(i).gguf")
            try assertRefused(["convert", "--gguf", gguf.path, "--out", path("hf")], status: 1, [gguf.path, fragment], seconds: 60)
        }
    }

    // MARK: 4. no silent wrong result

    func testF16OverflowIsAnErrorNamingTensorElementAndBF16() throws {
        let folder = try copyFixtureModel(named: "large")
        try setFloats(folder, tensor: "model.layers.0.mlp.down_proj.weight", [70_000])
        try assertRefused(prune(out: path("o"), ["--method", "magnitude", "--sparsity", "0.5", "--dtype", "f16"]).map { $0 == model.path ? folder.path : $0 },
                          status: 1, ["model.layers.0.mlp.down_proj.weight", "element 0 (70000.0) becomes infinite in F16", "--dtype bf16"])
    }

    func testNonFinitePerplexityNamesTheWindowAndTheFirstBlock() throws {
        let folder = try copyFixtureModel(named: "overflowing")
        try setFloats(folder, tensor: "model.layers.1.input_layernorm.weight", [Float](repeating: 1e30, count: 64))
        let tokens = scratch.appendingPathComponent("tokens.json")
        try JSONSerialization.data(withJSONObject: (0..<64).map { $0 * 7 % 512 }).write(to: tokens)
        try assertRefused(["eval", "perplexity", "--model", folder.path, "--tokens", tokens.path, "--seqlen", "32", "--json"],
                          status: 1, ["perplexity window 0", "block 1 is the first whose output is not finite"])
    }

    func testRanksStartedWithDifferentOptionsOrFilesAbortNamingBoth() throws {
        let other = try copyFixtureModel(named: "model-copy")
        let later = Date().addingTimeInterval(100)
        try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: other.appendingPathComponent("model.safetensors").path)
        let wanda = prune(out: path("o"), ["--method", "wanda", "--sparsity", "0.5"])
        let variants: [([String], [String])] = [
            (prune(out: path("o"), ["--method", "wanda", "--sparsity", "0.6"]), ["--sparsity 0.5", "--sparsity 0.6"]),
            (wanda.map { $0 == model.path ? other.path : $0 }, ["bytes, modified"]),
        ]
        for (second, fragments) in variants {
            let arguments = ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader,tcp",
                             "-n", "1", PruneDistBinary.executable.path] + wanda + [":", "-n", "1", PruneDistBinary.executable.path] + second
            let before = DirectorySnapshot([scratch])
            let job = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/mpirun"), arguments)
            let status = job.wait(seconds: 120)
            XCTAssertNotNil(status, "the job hung")
            XCTAssertNotEqual(status, 0)
            XCTAssertEqual(job.stderr.components(separatedBy: "ranks disagree").count - 1, 1, job.stderr)
            for fragment in fragments { XCTAssertTrue(job.stderr.contains(fragment), "\(fragment): \(job.stderr)") }
            XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [])
        }
    }

    /// Every rank meets the same bad input: the job says so once (rank 0), not once per rank.
    func testAFailureEveryRankMeetsIsReportedOnce() throws {
        let folder = try copyFixtureModel(named: "five-blocks")
        try editConfig(folder) { $0["num_hidden_layers"] = 5 }
        let before = DirectorySnapshot([scratch])
        let job = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/mpirun"),
                                        ["--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,vader,tcp", "-n", "3",
                                         PruneDistBinary.executable.path] + prune(out: path("o"), ["--method", "wanda", "--sparsity", "0.5"])
                                            .map { $0 == model.path ? folder.path : $0 })
        XCTAssertNotEqual(job.wait(seconds: 120), 0)
        XCTAssertEqual(job.stderr.components(separatedBy: "but the weights hold 3 blocks").count - 1, 1, job.stderr)
        XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [])
    }

    // MARK: 5. checks before work

    func testOptionsThatCannotWorkAreRefusedBeforeTheModelLoads() throws {
        let tasks = try Fixtures.path("data/tasks").path
        let cases: [([String], [String])] = [
            (prune(out: path("o"), ["--method", "wanda", "--sparsity", "0.5", "--eval-tasks", "piqa", "--eval-data", tasks]),
             ["--eval-tasks needs a tokenizer", "no tokenizer.json"]),
            (prune(out: path("o"), ["--method", "sparsegpt", "--sparsity", "0.5", "--percdamp", "inf"]), ["--percdamp must be a finite number"]),
            (prune(out: path("o"), ["--method", "magnitude", "--sparsity", "0.5", "--ratio", "0.3"]), ["--ratio is for the structured methods"]),
            (prune(out: path("o"), ["--method", "llm-pruner", "--ratio", "0.3", "--blocksize", "64"]), ["--blocksize is not used by --method llm-pruner"]),
            (prune(out: path("o"), ["--method", "llm-pruner", "--ratio", "0.3", "--percdamp", "0.1"]), ["--percdamp is not used by --method llm-pruner"]),
            (prune(out: path("o"), ["--method", "llm-pruner", "--ratio", "0.3", "--eval-tasks", "piqa", "--eval-data", tasks]),
             ["--eval-tasks needs a tokenizer", "no tokenizer.json"]),
            (prune(out: path("o"), ["--method", "llm-pruner", "--ratio", "0.3", "--trials", "4"]), ["--trials is an AdaPruner option"]),
        ]
        for (arguments, fragments) in cases { try assertRefused(arguments, status: 64, fragments) }
    }

    // MARK: 6. interruptions

    func testInterruptedPruneSaysWhereThePartialIsAndHowToResume() throws {
        let out = path("o"), pidFile = path("pid")
        let arguments = prune(out: out, ["--method", "wanda", "--sparsity", "0.5"])
        let job = try BackgroundProcess(PruneDistBinary.executable, arguments,
                                        environment: ["PRUNE_DIST_FAULT_RANK": "0", "PRUNE_DIST_FAULT_BLOCK": "1",
                                                      "PRUNE_DIST_FAULT_PAUSE": "1", "PRUNE_DIST_FAULT_PIDFILE": pidFile])
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 120) { FileManager.default.fileExists(atPath: pidFile) }, job.stderr)
        XCTAssertEqual(kill(job.process.processIdentifier, SIGINT), 0)
        XCTAssertEqual(job.wait(seconds: 30), 130, job.stderr)
        let partial = OutputFolder.partialFolder(for: URL(fileURLWithPath: out)).path
        XCTAssertTrue(job.stderr.contains("the partial output is in \(partial)"), job.stderr)
        let command = try XCTUnwrap(job.stderr.components(separatedBy: "continue with: ").last?.trimmingCharacters(in: .whitespacesAndNewlines))
        XCTAssertTrue(command.hasSuffix("--resume"), command)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let resumed = try run(arguments + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/model.safetensors"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: partial))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/" + OutputLock.fileName))
    }

    func testInterruptedConvertRemovesItsPartialFolder() throws {
        let gguf = try Fixtures.path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        let out = scratch.appendingPathComponent("hf"), partial = OutputFolder.partialFolder(for: out)
        let before = DirectorySnapshot([scratch])
        let job = try BackgroundProcess(PruneDistBinary.executable, ["convert", "--gguf", gguf.path, "--out", out.path])
        XCTAssertTrue(BackgroundProcess.waitFor(seconds: 120) {
            ((try? FileManager.default.contentsOfDirectory(atPath: partial.path)) ?? []).contains { $0.contains(".safetensors") }
        }, job.stderr)
        XCTAssertEqual(kill(job.process.processIdentifier, SIGINT), 0)
        XCTAssertEqual(job.wait(seconds: 30), 130, job.stderr)
        XCTAssertTrue(job.stderr.contains("removed \(partial.path)"), job.stderr)
        XCTAssertEqual(DirectorySnapshot([scratch]).changes(since: before), [])
    }

    // MARK: 7. messages name the user's words

    func testMessagesNameTheUsersFilesAndOptions() throws {
        let fifo = path("calib.fifo")
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let windows = (0..<8).map { w in (0..<32).map { $0 == 5 && w == 2 ? 600 : $0 } }
        let outOfVocabulary = scratch.appendingPathComponent("ids.json")
        try JSONSerialization.data(withJSONObject: windows).write(to: outOfVocabulary)
        let notes = scratch.appendingPathComponent("notes.txt")
        try Data("mine".utf8).write(to: notes)
        let wanda = ["--method", "wanda", "--sparsity", "0.5"]
        try assertRefused(prune(out: path("o"), wanda).map { $0 == calib.path ? fifo : $0 }, status: 64, ["--calib \(fifo): is a FIFO (named pipe)"])
        try assertRefused(prune(out: path("o"), wanda).map { $0 == calib.path ? model.path : $0 }, status: 64, ["is a folder, not a data file"])
        try assertRefused(prune(out: path("o"), wanda).map { $0 == calib.path ? outOfVocabulary.path : $0 }, status: 1,
                          ["\(outOfVocabulary.path): token id 600 in window 2 (position 5) is outside the model's vocabulary of 512"])
        try assertRefused(prune(out: notes.path + "/o", wanda), status: 1, ["--out: cannot create folder \(notes.path)", "is in the way"])
        // A symbolic link to a data file is a data file (the demo's cache links ../shared's text), one to a folder is not.
        let linked = path("calib-link.json"), folderLink = path("model-link")
        try FileManager.default.createSymbolicLink(atPath: linked, withDestinationPath: calib.path)
        try FileManager.default.createSymbolicLink(atPath: folderLink, withDestinationPath: model.path)
        try assertRefused(prune(out: path("o"), wanda).map { $0 == calib.path ? folderLink : $0 }, status: 64, ["is a folder, not a data file"])
        let accepted = try PruneDistBinary.run(prune(out: path("o-linked"), wanda).map { $0 == calib.path ? linked : $0 })
        XCTAssertEqual(accepted.status, 0, accepted.stderr)
    }
}
