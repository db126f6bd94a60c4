import Foundation

/// Makes OpenBLAS use its AVX2 kernels.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) misdetects some virtualised Xeons as `Prescott` (SSE3), about
/// 3x slower than its `Haswell` kernels on the same CPU. The kernel is chosen when the library is
/// loaded, before `main`, from `OPENBLAS_CORETYPE`; so when that is unset and the CPU has AVX2 and FMA, the
/// process sets it and re-executes itself once. An explicit `OPENBLAS_CORETYPE` is always respected.
enum OpenBLASKernel {
    static func selectFastKernelOrReexec() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OPENBLAS_CORETYPE"] == nil, cpuHasAVX2AndFMA() else { return }
        setenv("OPENBLAS_CORETYPE", "Haswell", 1)
        let arguments = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", &argv)
        // exec failed (no /proc): carry on with whatever kernel OpenBLAS picked.
    }

    static func cpuHasAVX2AndFMA() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let set = Set(flags.split(separator: " ").map(String.init))
        return set.contains("avx2") && set.contains("fma")
    }
}
