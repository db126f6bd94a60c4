import Engine
import Foundation

/// Calibration windows for tiny-llama runs: `count` windows of `seqlen` random ids below 512 (its vocabulary),
/// from SplitMix64(`seed`), written as a JSON array of arrays (taken as the windows themselves) at `url`.
/// Returns url.
@discardableResult
public func writeRandomCalibrationWindows(to url: URL, count: Int, seqlen: Int, seed: UInt64) throws -> URL {
    var random = SplitMix64(seed: seed)
    let windows = (0..<count).map { _ in (0..<seqlen).map { _ in Int(random.next() % 512) } }
    try JSONSerialization.data(withJSONObject: windows).write(to: url)
    return url
}
