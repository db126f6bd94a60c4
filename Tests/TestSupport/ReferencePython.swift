import Foundation
import XCTest

/// The Python interpreter that checks our outputs with the reference tools (transformers, torch, peft):
/// PRUNE_DIST_PYTHON when set (a venv), else python3. Tests that need it skip, saying which modules were missing.
public enum ReferencePython {
    public static var interpreter: String { ProcessInfo.processInfo.environment["PRUNE_DIST_PYTHON"] ?? "python3" }

    /// The interpreter when it imports every one of `modules`; otherwise XCTSkip naming them and the interpreter.
    public static func requiring(_ modules: [String], check: String) throws -> String {
        let probe = try PruneDistBinary.launch(URL(fileURLWithPath: "/usr/bin/env"),
                                               [interpreter, "-c", "import " + modules.joined(separator: ", ")])
        guard probe.status == 0 else {
            throw XCTSkip("\(interpreter) cannot import \(modules.joined(separator: ", ")) (set PRUNE_DIST_PYTHON to a Python that can): \(check) did not run")
        }
        return interpreter
    }
}
