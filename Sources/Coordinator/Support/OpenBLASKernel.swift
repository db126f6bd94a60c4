import Foundation

/// Chooses OpenBLAS's kernels from the CPU's flags, before the library has done any work.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels when it is loaded, before `main`, from
/// `OPENBLAS_CORETYPE` or its own detection, and that detection is unreliable on virtual CPUs: it took one
/// virtual Xeon for `Prescott` (SSE3, 3× slower than its AVX2 kernels). So when `OPENBLAS_CORETYPE` is unset the
/// process sets it from /proc/cpuinfo and re-executes itself once. An explicit `OPENBLAS_CORETYPE` is respected.
///
/// The choice, measured on the machines this project runs on (../shared/platform.md, bench/README.md):
/// Intel CPUs with AVX-512 get the AVX-512 kernels (`Cooperlake` with AVX512-BF16, `SkylakeX` without), which run
/// sgemm at 231 GFLOP/s on one core of a Cooper Lake Xeon where the AVX2 kernels reach 121. AMD's Zen 4 has the
/// same AVX-512 flags but splits each 512-bit instruction in two: there the AVX-512 kernels are 3–6 % slower than
/// `Haswell`'s, so AMD CPUs, like every other CPU with AVX2 and FMA, get `Haswell`.
enum OpenBLASKernel {
    static func selectFastKernelOrReexec() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil,
              let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let kernel = fastest(cpuinfo: info) else { return }
        setenv("OPENBLAS_CORETYPE", kernel, 1)
        let arguments = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", &argv)
        // exec failed (no /proc): carry on with whatever kernel OpenBLAS picked.
    }

    /// The OpenBLAS core type for the first CPU of /proc/cpuinfo, or nil to leave OpenBLAS's own choice.
    static func fastest(cpuinfo: String) -> String? {
        let lines = cpuinfo.split(separator: "\n")
        func field(_ name: String) -> String? {
            lines.first { $0.hasPrefix(name) && $0.contains(":") }.map {
                String($0[$0.index(after: $0.firstIndex(of: ":")!)...]).trimmingCharacters(in: .whitespaces)
            }
        }
        let flags = Set((field("flags") ?? "").split(separator: " ").map(String.init))
        let avx512 = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
        if field("vendor_id") == "GenuineIntel" && avx512 {
            return flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        }
        return flags.contains("avx2") && flags.contains("fma") ? "Haswell" : nil
    }
}
