import XCTest
@testable import Worker

final class WorkerTests: XCTestCase {
    func testModuleLinks() { XCTAssertEqual(WorkerInfo.name, "Worker") }
}
