import Engine
import Foundation
import XCTest

final class PerLinearTests: XCTestCase {
    /// The subscript reaches each linear's own field; the closure initialiser runs in `LlamaLinear.allCases` order
    /// (the order random weights are drawn and collectives are joined in); map and Codable keep every field.
    func testSubscriptOrderMapAndCoding() throws {
        var order: [LlamaLinear] = []
        var values = PerLinear { linear -> Int in
            order.append(linear)
            return order.count * 10
        }
        XCTAssertEqual(order, LlamaLinear.allCases)
        XCTAssertEqual(LlamaLinear.allCases.map { values[$0] }, [10, 20, 30, 40, 50, 60, 70])
        XCTAssertEqual([values.q, values.k, values.v, values.o, values.gate, values.up, values.down], [10, 20, 30, 40, 50, 60, 70])
        values[.up] = -1
        XCTAssertEqual(values.up, -1)
        XCTAssertEqual(values.gate, 50, "setting one linear leaves the others")
        XCTAssertEqual(values.map { $0 * 2 }.all.map(\.value), [20, 40, 60, 80, 100, -2, 140])
        XCTAssertEqual(values.all.map(\.linear), LlamaLinear.allCases)
        let data = try JSONEncoder().encode(values)
        XCTAssertEqual(try JSONDecoder().decode(PerLinear<Int>.self, from: data), values)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Int])
        XCTAssertEqual(object["mlp.up_proj"], -1)
        XCTAssertNotEqual(values, PerLinear(repeating: 10))
    }
}
