import Foundation

/// The learning rate over the steps: linear warm-up from 0, then linear or cosine decay to 0 at the last step.
/// Hugging Face's get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup, step counted from 0
/// (so the first update of a warmed-up run has rate 0, as there).
public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public enum Decay: String, Codable, CaseIterable, Sendable { case linear, cosine }
    public var peak: Double
    public var warmup: Int
    public var totalSteps: Int
    public var decay: Decay

    public init(peak: Double, warmup: Int, totalSteps: Int, decay: Decay) {
        self.peak = peak
        self.warmup = warmup
        self.totalSteps = totalSteps
        self.decay = decay
    }

    /// The rate of update number `step` (0-based).
    public func rate(step: Int) -> Double {
        if step < warmup { return peak * Double(step) / Double(max(1, warmup)) }
        let progress = Double(step - warmup) / Double(max(1, totalSteps - warmup))
        switch decay {
        case .linear: return peak * max(0, 1 - progress)
        case .cosine: return peak * max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}

/// AdamW (Loshchilov & Hutter; torch.optim.AdamW): Adam's moments with bias correction, and weight decay
/// applied to the parameter directly (decoupled from the gradient): p ← p − lr·λ·p − lr·m̂/(√v̂ + ε).
/// Moments are Float like the parameters; each element's update is computed in Double.
public struct AdamW: Codable, Equatable, Sendable {
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8
    public var weightDecay: Double
    /// [parameters] first and second moments
    public var m: [Float]
    public var v: [Float]
    /// Updates made so far (the bias correction's t after the next update is steps + 1)
    public var steps: Int

    public init(parameters: Int, weightDecay: Double) {
        self.weightDecay = weightDecay
        m = [Float](repeating: 0, count: parameters)
        v = [Float](repeating: 0, count: parameters)
        steps = 0
    }

    /// One update.
    /// - parameters: [n], updated in place
    /// - gradients: [n]
    public mutating func update(_ parameters: inout [Float], gradients: [Float], rate: Double) {
        precondition(parameters.count == m.count && gradients.count == m.count,
                     "AdamW.update: \(parameters.count) parameters and \(gradients.count) gradients for \(m.count) moments")
        steps += 1
        let correction1 = 1 - pow(beta1, Double(steps)), correction2 = 1 - pow(beta2, Double(steps))
        for i in 0..<parameters.count {
            let g = Double(gradients[i])
            let mi = beta1 * Double(m[i]) + (1 - beta1) * g
            let vi = beta2 * Double(v[i]) + (1 - beta2) * g * g
            m[i] = Float(mi)
            v[i] = Float(vi)
            var p = Double(parameters[i]) * (1 - rate * weightDecay)
            p -= rate * (mi / correction1) / ((vi / correction2).squareRoot() + epsilon)
            parameters[i] = Float(p)
        }
    }
}
