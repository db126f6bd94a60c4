// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "prune-dist",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "prune-dist", targets: ["prune-dist"]),
        .library(name: "Engine", targets: ["Engine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // System libraries found through pkg-config (cblas.h is not on the default include path).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .systemLibrary(name: "COpenMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // Open MPI's handles are macros over addresses of globals; this shim exposes them to Swift.
        .target(name: "CMPI", dependencies: ["COpenMPI"]),
        // Hand-written kernels where no library routine fits (half-precision conversion with F16C).
        .target(name: "CEngineKernels"),

        // Dependencies match the imports: Engine never sees MPI, Coordinator reaches MPI only through Worker.
        .target(name: "Engine", dependencies: ["COpenBLAS", "CEngineKernels"]),
        .target(name: "Worker", dependencies: ["Engine", "CMPI"]),
        .target(name: "Coordinator", dependencies: [
            "Engine", "Worker",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "prune-dist", dependencies: ["Coordinator"]),
        // Benchmarks (bench/*.sh build this in release mode); never run by the tests.
        .executableTarget(name: "prune-dist-bench", dependencies: ["Engine", "COpenBLAS", "CEngineKernels"], path: "bench/Sources/prune-dist-bench"),

        // N ranks as N threads of one process (InMemoryCommunicator), for tests only: no product links it
        // (swift-nio's NIOEmbedded pattern).
        .target(name: "WorkerTesting", dependencies: ["Worker", "Engine"]),

        .target(name: "TestSupport", dependencies: ["Engine"], path: "Tests/TestSupport"),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "TestSupport"], exclude: ["Golden"]),
        .testTarget(name: "WorkerTests", dependencies: ["Worker", "WorkerTesting", "Engine", "CMPI", "TestSupport"]),
        .testTarget(name: "CoordinatorTests", dependencies: [
            "Coordinator", "Worker", "WorkerTesting", "Engine", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "EndToEndTests", dependencies: ["Engine", "TestSupport"]),
    ]
)
