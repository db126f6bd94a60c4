import Foundation

/// Tests/EngineTests/Golden/generate_goldens.json, made by scripts/golden/generate_goldens.py with
/// transformers (greedy generate, apply_chat_template). Tests read it; they never run Python.
public struct GenerationGoldens: Decodable {
    public struct Case: Decodable {
        public var prompt: String?
        public var chat: Bool?
        public var promptIds: [Int]
        public var generatedIds: [Int]
        public var generatedText: String?
        enum CodingKeys: String, CodingKey {
            case prompt, chat, promptIds = "prompt_ids", generatedIds = "generated_ids", generatedText = "generated_text"
        }
    }
    public struct TemplateCase: Decodable {
        public var message: String
        public var text: String
        public var ids: [Int]
    }
    public struct Template: Decodable {
        public var template: String
        public var cases: [TemplateCase]
    }
    public var newTokens: Int
    public var tiny: [Case]
    public var smollm2: [Case]
    public var chatTemplate: Template
    enum CodingKeys: String, CodingKey { case newTokens = "new_tokens", tiny, smollm2, chatTemplate = "chat_template" }

    public static func load() throws -> GenerationGoldens {
        let url = Fixtures.packageRoot.appendingPathComponent("Tests/EngineTests/Golden/generate_goldens.json")
        return try JSONDecoder().decode(GenerationGoldens.self, from: Data(contentsOf: url))
    }

    /// The converted SmolLM2-135M-Instruct (scripts/demo.sh makes it), or nil when this machine has none:
    /// `PRUNE_DIST_CACHE`, else `$XDG_CACHE_HOME/prune-dist`, else `~/.cache/prune-dist`.
    public static func smolLM2Directory() -> URL? {
        let env = ProcessInfo.processInfo.environment
        let cache = env["PRUNE_DIST_CACHE"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")).appendingPathComponent("prune-dist")
        let model = cache.appendingPathComponent("SmolLM2-135M-Instruct")
        let needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        return needed.allSatisfy({ FileManager.default.fileExists(atPath: model.appendingPathComponent($0).path) }) ? model : nil
    }
}
