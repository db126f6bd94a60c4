import Foundation

/// Locates the shared folder (golden fixtures, models, data) that sits beside the project checkout.
/// `PRUNE_DIST_SHARED` overrides; otherwise every ancestor of the package root is searched for a
/// `shared/fixtures` folder. Tests fail (never skip) when it cannot be found.
public enum Fixtures {
    public static let packageRoot: URL = {
        // Tests/TestSupport/Fixtures.swift → package root is two levels above Tests/.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }()

    public static let shared: URL? = {
        if let env = ProcessInfo.processInfo.environment["PRUNE_DIST_SHARED"] {
            return URL(fileURLWithPath: env)
        }
        var dir = packageRoot
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("shared")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("fixtures").path) {
                return candidate
            }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }()

    public struct NotFound: Error, CustomStringConvertible {
        public let description: String
    }

    /// A path inside the shared folder, e.g. `Fixtures.path("fixtures/tiny-llama")`.
    public static func path(_ relative: String) throws -> URL {
        guard let shared else {
            throw NotFound(description: "shared/ folder not found beside \(packageRoot.path); set PRUNE_DIST_SHARED")
        }
        let url = shared.appendingPathComponent(relative)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw NotFound(description: "fixture missing: \(url.path)")
        }
        return url
    }

    /// A fresh temporary directory, removed by the caller (or left for inspection on failure).
    public static func temporaryDirectory(_ label: String = "test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("prune-dist-\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
