import Engine
import Foundation

/// What `finetune --resume` continues from: the LoRA factors, AdamW's moments, the number of steps done and the
/// curves so far, in one safetensors file in the partial output folder (finetune-state.safetensors), written
/// under a temporary name and renamed, so a kill leaves the previous save or the new one, never a mix.
/// Nothing else is needed: the data order and the dropout masks are functions of (seed, step, example).
struct FinetuneState: Sendable {
    static let fileName = "finetune-state.safetensors"

    var step: Int
    /// [parameters] each, LoraAdapter.flattened's order
    var parameters: [Float]
    var m: [Float]
    var v: [Float]
    var curves: FinetuneCurves
    var fingerprint: String

    func write(to folder: URL) throws {
        let count = parameters.count
        let curvesJSON = String(decoding: try JSONEncoder().encode(curves), as: UTF8.self)
        let writer = try SafetensorsWriter(url: folder.appendingPathComponent(Self.fileName),
                                           tensors: [("parameters", .f32, [count]), ("adam_m", .f32, [count]), ("adam_v", .f32, [count])],
                                           metadata: ["step": String(step), "fingerprint": fingerprint, "curves": curvesJSON])
        try writer.append("parameters", floats: parameters)
        try writer.append("adam_m", floats: m)
        try writer.append("adam_v", floats: v)
        try writer.finish()
    }

    /// The saved state in `folder`, nil when there is none; throws when it belongs to another run.
    static func read(from folder: URL, fingerprint: String, parameters: Int) throws -> FinetuneState? {
        let url = folder.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let file = try SafetensorsFile(url: url)
        guard file.metadata["fingerprint"] == fingerprint else {
            throw PruneDistError(.argument, "--resume: \(url.path) was saved by a run with other settings (\(file.metadata["fingerprint"] ?? "none")); "
                                 + "give the same options, or remove the partial folder to start afresh")
        }
        guard let step = file.metadata["step"].flatMap(Int.init),
              let curves = try? JSONDecoder().decode(FinetuneCurves.self, from: Data((file.metadata["curves"] ?? "").utf8)) else {
            throw PruneDistError(.data, "\(url.path): no step or curves in its metadata")
        }
        let state = FinetuneState(step: step, parameters: try file.floats("parameters"), m: try file.floats("adam_m"),
                                  v: try file.floats("adam_v"), curves: curves, fingerprint: fingerprint)
        guard state.parameters.count == parameters, state.m.count == parameters, state.v.count == parameters else {
            throw PruneDistError(.shape, "\(url.path): holds \(state.parameters.count) parameters, this run has \(parameters)")
        }
        return state
    }
}

/// The loss and evaluation curves of a run.
struct FinetuneCurves: Codable, Equatable, Sendable {
    struct LossPoint: Codable, Equatable, Sendable {
        /// 1-based: the loss of the batch of update `step`, before that update
        var step: Int
        var loss: Double
        var learningRate: Double
    }
    struct EvalPoint: Codable, Equatable, Sendable {
        /// updates done when evaluated (0: the model before fine-tuning)
        var step: Int
        var nll: Double
        var perplexity: Double
    }
    var loss: [LossPoint] = []
    var eval: [EvalPoint] = []
}
