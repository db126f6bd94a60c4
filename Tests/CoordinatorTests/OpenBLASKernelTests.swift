@testable import Coordinator
import Foundation
import TestSupport
import XCTest

/// The kernel the binary asks OpenBLAS for, from /proc/cpuinfo, and the same choice in scripts/openblas-env.sh
/// (which the tests and benchmarks source, as they do not re-execute themselves).
final class OpenBLASKernelTests: XCTestCase {
    private static let base = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c"
    private static let avx512 = "avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi"
    /// (what, vendor, flags, core type or nil for OpenBLAS's own choice)
    private static let cases: [(String, String, String, String?)] = [
        ("Cooper Lake Xeon", "GenuineIntel", "\(base) fma avx2 \(avx512) avx512_vnni avx512_bf16", "Cooperlake"),
        ("Skylake-SP Xeon", "GenuineIntel", "\(base) fma avx2 \(avx512)", "SkylakeX"),
        ("Intel, AVX-512 without BW/VL (Knights Landing)", "GenuineIntel", "\(base) fma avx2 avx512f avx512cd avx512er", "Haswell"),
        ("Haswell Xeon", "GenuineIntel", "\(base) fma avx2", "Haswell"),
        ("Zen 4 EPYC (AVX-512 split in two halves)", "AuthenticAMD", "\(base) fma avx2 \(avx512) avx512_bf16", "Haswell"),
        ("Zen 3 EPYC", "AuthenticAMD", "\(base) fma avx2", "Haswell"),
        ("Sandy Bridge (no AVX2, no FMA)", "GenuineIntel", base, nil),
    ]

    private static func cpuinfo(vendor: String, flags: String) -> String {
        // Two processors, as /proc/cpuinfo lists them: the first one's lines decide.
        (0..<2).map { "processor\t: \($0)\nvendor_id\t: \(vendor)\ncpu family\t: 6\nflags\t\t: \(flags)\n" }.joined(separator: "\n")
    }

    func testKernelFollowsTheVendorAndTheFlags() {
        for (what, vendor, flags, expected) in Self.cases {
            XCTAssertEqual(OpenBLASKernel.fastest(cpuinfo: Self.cpuinfo(vendor: vendor, flags: flags)), expected, what)
        }
        XCTAssertNil(OpenBLASKernel.fastest(cpuinfo: ""), "no /proc/cpuinfo lines: OpenBLAS decides")
    }

    func testTestScriptsChooseAsTheBinaryDoes() throws {
        let scratch = try Fixtures.temporaryDirectory("openblas-kernel")
        defer { try? FileManager.default.removeItem(at: scratch) }
        for (what, vendor, flags, expected) in Self.cases {
            let file = scratch.appendingPathComponent("cpuinfo")
            try Self.cpuinfo(vendor: vendor, flags: flags).write(to: file, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            // Sourced by scripts with their own variables (bench/speed.sh's `flag`): it must leave them as they were.
            process.arguments = ["-c", "set -euo pipefail; flag=(--sparsity 0.5); cpuinfo=mine; source scripts/openblas-env.sh; " +
                                 "printf '%s|%s|%s' \"${OPENBLAS_CORETYPE:-}\" \"${flag[*]}\" \"$cpuinfo\""]
            process.currentDirectoryURL = Fixtures.packageRoot
            var environment = ProcessInfo.processInfo.environment
            environment["OPENBLAS_CORETYPE"] = nil
            environment["PRUNE_DIST_CPUINFO"] = file.path
            process.environment = environment
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, what)
            let chosen = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(chosen, "\(expected ?? "")|--sparsity 0.5|mine", what)
        }
    }
}
