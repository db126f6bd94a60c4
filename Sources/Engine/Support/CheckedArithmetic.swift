/// Products of sizes read from files or the command line, which a hostile value must never make overflow
/// (an overflowing Int traps). nil when the product does not fit in an Int.
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for factor in factors {
        let (result, overflow) = product.multipliedReportingOverflow(by: factor)
        if overflow { return nil }
        product = result
    }
    return product
}
