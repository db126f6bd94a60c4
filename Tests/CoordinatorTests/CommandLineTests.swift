import Foundation
import TestSupport
import XCTest
@testable import Coordinator

final class CommandLineTests: XCTestCase {
    func testRootCommandHasHelp() {
        XCTAssertTrue(PruneDistCommand.helpMessage().contains("prune-dist"))
    }

    /// AdaPruner's first trial uses --samples sequences, so --samples must be one of --sample-choices: otherwise a
    /// usage error (exit 64) naming both, not a silent switch to the first choice.
    func testAdaPrunerSamplesMustBeOneOfTheSampleChoices() throws {
        let scratch = try Fixtures.temporaryDirectory("command-line")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let calibration = try writeRandomCalibrationWindows(to: scratch.appendingPathComponent("calib.json"), count: 8, seqlen: 32, seed: 1)
        func arguments(samples: String) throws -> [String] {
            ["prune", "--model", try Fixtures.path("fixtures/tiny-llama").path, "--out", scratch.appendingPathComponent("out").path,
             "--method", "adapruner", "--ratio", "0.2", "--calib", calibration.path, "--seqlen", "32",
             "--samples", samples, "--sample-choices", "4,16"]
        }
        XCTAssertThrowsError(try PruneDistCommand.parseAsRoot(try arguments(samples: "8"))) { error in
            XCTAssertEqual(PruneDistCommand.exitCode(for: error).rawValue, 64)
            let message = PruneDistCommand.message(for: error)
            XCTAssertTrue(message.contains("--samples 8 is not one of --sample-choices 4,16"), message)
        }
        XCTAssertNoThrow(try PruneDistCommand.parseAsRoot(try arguments(samples: "16")))
    }
}
