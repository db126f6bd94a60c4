import ArgumentParser
import Engine
import Foundation

// prune's options by method family, each a titled group of `prune --help` (PruneCommand forwards each option
// by name, so the rest of the code reads `command.sparsity` as before).

/// What every prune run names: model, output, method, calibration, recipe, report and dtype.
struct PruneCommonOptions: ParsableArguments {
    @Option(name: .long, help: "Hugging Face model directory to prune.")
    var model: String

    @Option(name: .long, help: "Output directory (written under a temporary name, renamed when complete).")
    var out: String

    @Option(name: .long, help: "Pruning method: \(PruneMethod.allCases.map(\.rawValue).joined(separator: ", ")).")
    var method: PruneMethod

    @Option(name: .long, help: "Calibration data: plain text, JSONL (field \"text\"), token ids (.u16 or JSON array), or .u16 windows.")
    var calib: String?

    // .unconditional: `--samples -1` reaches the range check (a positive integer) instead of "missing value".
    // Optional so that AdaPruner can default to its first --sample-choices; the default is applied below.
    @Option(name: .long, parsing: .unconditional, help: "Number of calibration sequences (default: 128; AdaPruner: the first of --sample-choices, and it must be one of them).")
    var samples: Int?

    @Option(name: .long, parsing: .unconditional, help: "Tokens per calibration sequence.")
    var seqlen: Int = 512

    @Option(name: .long, help: "Seed for drawing calibration windows.")
    var seed: Int = 0

    @Option(name: .long, help: ArgumentHelp("Read the method, its sparsity/pattern/ratio, calibration, options, ignore list and overrides from a YAML recipe (every run report embeds its own); options in the recipe may not be given again on the command line.", valueName: "file.yaml"))
    var recipe: String?

    @Option(name: .long, help: "Write the JSON run report here (default: OUT/prune-report.json).")
    var report: String?

    @Option(name: .long, help: "Output dtype: bf16, f16 or f32 (default: the input's).", transform: DType.commandLineWeightType)
    var dtype: DType?
}

/// The options of the unstructured and N:M methods (magnitude, wanda, sparsegpt, krp).
struct UnstructuredPruneOptions: ParsableArguments {
    @Option(name: .long, help: "Fraction of each linear's weights set to zero (unstructured), in [0, 1).")
    var sparsity: Double?

    @Option(name: .long, help: "N:M semi-structured pattern, e.g. 2:4 or 4:8 (N of every M consecutive inputs zeroed).",
            transform: SparsityPattern.commandLinePattern)
    var pattern: SparsityPattern?

    @Flag(name: .long, inversion: .prefixedNo, help: "Collect statistics again between q,k,v → o → gate,up → down (default: on for KRP and unstructured SparseGPT, off for N:M SparseGPT, Wanda and magnitude; --no-true-sequential runs SparseGPT as the reference does).")
    var trueSequential: Bool?

    // Optional so that giving it to a method that does not use it can be refused; the default is applied below.
    @Option(name: .long, help: "SparseGPT/KRP column block size (default: 128).")
    var blocksize: Int?

    @Option(name: .long, help: "SparseGPT/KRP dampening, as a fraction of the mean Hessian diagonal (default: 0.01).")
    var percdamp: Double?

    @Option(name: .long, help: "KRP: ridge λ pulling the rectified weight toward the dense one, relative to each input's mean square (legacy: the authors' ridge toward zero, ladder 1e-4…1).")
    var krpRidge: String = "3"

    @Flag(name: .long, inversion: .prefixedNo, help: "KRP: scale the ridge by each input's own mean square (diag Ĥ), not by their mean.")
    var krpRidgePerInput = true

    @Option(name: .long, help: "KRP: fraction α of the cumulative-error correction applied (0 = SparseGPT on the dense weights, 1 = the full refit).")
    var krpCorrection: Double = 0.3

    @Option(name: .long, help: "How the target --sparsity is spread over blocks: uniform, or owl (outlier-weighed, Yin et al. 2024).")
    var allocation: SparsityAllocation = .uniform

    @Option(name: .long, help: "OWL outlier threshold M: a Wanda score above M × its block's mean counts as an outlier.")
    var owlThreshold: Double = 5

    @Option(name: .long, help: "OWL λ: block sparsities range over the target ± λ.")
    var owlLambda: Double = 0.08

    @Option(name: .long, help: ArgumentHelp("Unstructured: leave this linear dense; a module name (model.layers.3.mlp.down_proj) or re:REGEX matching whole names (re:.*down_proj); repeatable.", valueName: "target"))
    var ignore: [String] = []

    @Option(name: .long, help: ArgumentHelp("Unstructured: prune the linears matching TARGET (as --ignore) to SPARSITY or N:M instead of the run's; the last matching override wins; repeatable.", valueName: "target=sparsity"))
    var sparsityOverride: [String] = []
}

/// `prune --eval-*`: the result evaluated over the same ranks, into the report.
struct PruneEvaluationOptions: ParsableArguments {
    @Option(name: .long, help: "Evaluate perplexity of the result on this text (or .u16 token) file; repeat for several (e.g. in-domain and out-of-domain texts).")
    var evalText: [String] = []

    @Option(name: .long, help: "Evaluate only the first K windows of each --eval-text (as eval perplexity --max-windows).")
    var evalMaxWindows: Int?

    @Option(name: .long, help: "Sequence length for --eval-text perplexity (default: 512).")
    var evalSeqlen: Int?

    @Option(name: .long, help: "Zero-shot tasks to evaluate the result on, e.g. boolq,piqa,hellaswag (or all); needs --eval-data.")
    var evalTasks: String?

    @Option(name: .long, help: "Folder of zero-shot task files for --eval-tasks.")
    var evalData: String?

    @Option(name: .long, help: "Evaluate only the first N documents of each --eval-tasks task.")
    var evalLimit: Int?

    @Flag(name: .long, help: "With --eval-*: do not evaluate the dense input model for comparison (by default it is evaluated once and cached in the output's parent folder).")
    var noDenseEval = false
}

/// How an unstructured run uses the cluster: resuming, and where ranks get the weights.
struct PruneClusterOptions: ParsableArguments {
    @Flag(name: .long, help: "Continue an interrupted run with the same fingerprint after its last finished block (the same --out).")
    var resume = false

    @Option(name: .long, help: "Where ranks get weights: shared (every rank reads --model) or broadcast (only rank 0 reads; blocks are broadcast).")
    var weights: WeightsSource = .shared
}
