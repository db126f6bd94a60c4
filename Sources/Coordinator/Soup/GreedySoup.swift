/// Greedy soup selection (Wortsman et al. 2022, "Model soups", Algorithm 1): ingredients are taken in order of
/// their own held-out score, best first; each is added to the soup only if the uniform average of the soup with
/// it scores strictly better than the soup without it (a tie is not kept: the smaller soup is as good).
enum GreedySoup {
    /// One ingredient's turn: its own score, the score of the soup it was tried in (itself alone for the first),
    /// and whether it stayed.
    struct Step: Codable, Equatable, Sendable {
        var ingredient: Int
        var score: Double
        var soupScore: Double
        var kept: Bool

        enum CodingKeys: String, CodingKey {
            case ingredient, score, kept
            case soupScore = "soup_score"
        }
    }

    struct Selection: Equatable, Sendable {
        /// In the order the ingredients were tried.
        var steps: [Step]
        /// Indices of the kept ingredients, ascending (the order they are averaged in).
        var kept: [Int]
        /// The kept soup's score.
        var score: Double
    }

    /// - scores: [ingredients] each ingredient's own score
    /// - scoreSoup: the score of the uniform average of the given ingredients (indices ascending)
    static func select(scores: [Double], lowerIsBetter: Bool, scoreSoup: ([Int]) throws -> Double) rethrows -> Selection {
        precondition(!scores.isEmpty)
        func better(_ a: Double, than b: Double) -> Bool { lowerIsBetter ? a < b : a > b }
        // Best first; equal scores keep the command line's order.
        let order = scores.indices.sorted { better(scores[$0], than: scores[$1]) || (scores[$0] == scores[$1] && $0 < $1) }
        var kept = [order[0]]
        var best = scores[order[0]]
        var steps = [Step(ingredient: order[0], score: best, soupScore: best, kept: true)]
        for ingredient in order.dropFirst() {
            let candidate = (kept + [ingredient]).sorted()
            let score = try scoreSoup(candidate)
            let keep = better(score, than: best)
            steps.append(Step(ingredient: ingredient, score: scores[ingredient], soupScore: score, kept: keep))
            if keep {
                kept = candidate
                best = score
            }
        }
        return Selection(steps: steps, kept: kept, score: best)
    }
}
