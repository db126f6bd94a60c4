import XCTest
@testable import Coordinator

final class CommandLineTests: XCTestCase {
    func testRootCommandHasHelp() {
        XCTAssertTrue(PruneDistCommand.helpMessage().contains("prune-dist"))
    }
}
