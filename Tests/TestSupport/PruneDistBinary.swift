import Foundation

/// Runs the `prune-dist` executable (built beside the test bundle) or `mpirun` over it, as a user would.
public enum PruneDistBinary {
    public struct Result {
        public let status: Int32
        public let stdout: String
        public let stderr: String

        /// The JSON object a `--json` command prints as its last JSON line; the error carries both streams.
        public func lastJSON() throws -> [String: Any] {
            guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
                  let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw PruneDistBinaryError(message: "no JSON object on the last JSON line of stdout:\n\(stdout)\nstderr:\n\(stderr)")
            }
            return object
        }
    }

    /// The built executable: SwiftPM places it in the same folder as the test bundle.
    public static var executable: URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("prune-dist")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        for name in ["debug", "release"] {
            let candidate = Fixtures.packageRoot.appendingPathComponent(".build/\(name)/prune-dist")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("prune-dist")
    }

    /// The environment for a child process: a singleton MPI_Init in this process leaves OMPI_*/PMIX_*
    /// variables behind that make a child mpirun exit 1 silently, so they are removed.
    public static func childEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            !(key.hasPrefix("OMPI_") || key.hasPrefix("PMIX_") || key.hasPrefix("ORTE_") || key.hasPrefix("OPAL_"))
        }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        env["OPENBLAS_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] ?? "1"
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// Runs `prune-dist args…` and waits for it.
    public static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        try launch(executable, arguments, environment: environment)
    }

    /// Runs `mpirun -n ranks prune-dist args…` and waits for it.
    public static func mpirun(ranks: Int, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let mpirun = URL(fileURLWithPath: "/usr/bin/mpirun")
        return try launch(mpirun, ["--allow-run-as-root", "--oversubscribe", "-n", String(ranks),
                                   "--mca", "btl", "self,vader,tcp", executable.path] + arguments,
                          environment: environment)
    }

    public static func launch(_ program: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        process.environment = childEnvironment(environment)
        // Children write to files, not pipes, so a chatty child can never block on a full pipe.
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("pd-out-\(UUID().uuidString)")
        let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("pd-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let outData = (try? Data(contentsOf: outURL)) ?? Data()
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

/// A run's output was not what a test helper could read.
public struct PruneDistBinaryError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
