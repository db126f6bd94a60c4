import Engine
import XCTest

/// Asserts that `body` throws a `PruneDistError` of `kind` whose message mentions every one of `parts` (a file
/// path, a tensor name, the numbers expected and found): the precise errors users rely on.
public func assertError(_ kind: PruneDistError.Kind, containing parts: [String],
                        file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard let e = error as? PruneDistError else { return XCTFail("not a PruneDistError: \(error)", file: file, line: line) }
        XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
        for part in parts {
            XCTAssertTrue(e.message.contains(part), "\"\(e.message)\" should mention \"\(part)\"", file: file, line: line)
        }
    }
}
