import ArgumentParser
import Engine
import Foundation

/// The `prune-dist` command line.
public struct PruneDistCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "prune-dist",
        abstract: "Prune LLaMA-family language models after training, spread over MPI ranks.",
        discussion: """
        Methods (prune --method): magnitude, wanda, sparsegpt, krp (unstructured or N:M), llm-pruner, adapruner \
        (structured). Exit codes: 0 done, 64 refused command line, 1 refused input or failure, 130/143 interrupted \
        (docs/operators.md). Shell completion: prune-dist --generate-completion-script bash (or zsh, fish).
        """,
        version: PruneDistVersion.string,
        subcommands: [PruneCommand.self, AverageCommand.self, EvalCommand.self, InspectCommand.self, CommCheckCommand.self, ConvertCommand.self, PlanCommand.self, ReportCommand.self, GenerateCommand.self, FinetuneCommand.self]
    )

    public init() {}

    /// The process entry point: picks OpenBLAS's fast kernels (re-executing once if needed), expands
    /// `prune --recipe FILE` into the recipe's options (PruneRecipe), then parses and runs.
    public static func launch() {
        OpenBLASKernel.selectFastKernelOrReexec()
        let arguments: [String]
        do { arguments = try PruneRecipe.expand(Array(CommandLine.arguments.dropFirst())) } catch { exit(withError: error) }
        main(arguments)
    }
}

public enum PruneDistVersion {
    public static let string = "0.1.0"
}
