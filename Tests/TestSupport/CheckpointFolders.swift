import Foundation

/// How output folder `b` differs from `a`: file names missing on either side and files whose bytes differ.
/// Empty when they hold the same checkpoint byte for byte. The run reports (`prune-report.json`,
/// `prune-report.html`) hold timings and are left out; a folder without safetensors is itself a difference.
public func checkpointFileDifferences(_ a: URL, _ b: URL) throws -> [String] {
    func checkpointFiles(_ folder: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix("prune-report.") }.sorted()
    }
    let names = try checkpointFiles(a), others = try checkpointFiles(b)
    var differences: [String] = []
    if names != others { differences.append("files \(names) vs \(others)") }
    if !names.contains(where: { $0.hasSuffix(".safetensors") }) { differences.append("no safetensors in \(a.path)") }
    for name in Set(names).intersection(others).sorted()
    where try Data(contentsOf: a.appendingPathComponent(name)) != Data(contentsOf: b.appendingPathComponent(name)) {
        differences.append("\(name) differs")
    }
    return differences
}
