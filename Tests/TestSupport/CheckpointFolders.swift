import Foundation

/// How output folder `b` differs from `a`: file names missing on either side and files whose bytes differ.
/// Empty when they hold the same checkpoint byte for byte. The run's records are left out: the reports
/// (`prune-report.json`, `prune-report.html`: timings), the model card (`README.md`) and config.json's
/// `prune_dist` entry (date, command line, hosts, rank count); the rest of config.json is compared as JSON.
/// A folder without safetensors is itself a difference.
public func checkpointFileDifferences(_ a: URL, _ b: URL) throws -> [String] {
    func checkpointFiles(_ folder: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { !$0.hasPrefix("prune-report.") && $0 != "README.md" }.sorted()
    }
    func configWithoutRunRecord(_ url: URL) throws -> NSDictionary {
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
        object["prune_dist"] = nil
        return object as NSDictionary
    }
    let names = try checkpointFiles(a), others = try checkpointFiles(b)
    var differences: [String] = []
    if names != others { differences.append("files \(names) vs \(others)") }
    if !names.contains(where: { $0.hasSuffix(".safetensors") }) { differences.append("no safetensors in \(a.path)") }
    for name in Set(names).intersection(others).sorted() {
        let left = a.appendingPathComponent(name), right = b.appendingPathComponent(name)
        let same = name == "config.json" ? try configWithoutRunRecord(left) == configWithoutRunRecord(right)
            : try Data(contentsOf: left) == Data(contentsOf: right)
        if !same { differences.append("\(name) differs") }
    }
    return differences
}
