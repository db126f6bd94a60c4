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

/// A token file a tiny-llama fine-tuning run can learn from: `count` ids below 512 where each id is followed by
/// (7·id + 3) mod 512, with a random restart (SplitMix64(`seed`)) every 8 tokens; a JSON array at `url`, written
/// once (an existing file is kept). Returns url.
@discardableResult
public func writeLearnableTokens(to url: URL, count: Int, seed: UInt64) throws -> URL {
    if FileManager.default.fileExists(atPath: url.path) { return url }
    var random = SplitMix64(seed: seed)
    var ids: [Int] = []
    for i in 0..<count { ids.append(i % 8 == 0 ? Int(random.next() % 512) : (7 * ids[i - 1] + 3) % 512) }
    try JSONSerialization.data(withJSONObject: ids).write(to: url)
    return url
}
