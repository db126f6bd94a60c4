import Foundation
import TestSupport
import XCTest

final class BinaryTests: XCTestCase {
    func testBinaryPrintsVersion() throws {
        let result = try PruneDistBinary.run(["--version"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("0.1.0"))
    }
}
