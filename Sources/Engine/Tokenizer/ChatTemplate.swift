import Foundation

/// A model's chat template, rendered for the one case `prune-dist generate --chat` needs: a single user
/// message followed by the generation prompt (`apply_chat_template([{"role": "user", "content": prompt}],
/// add_generation_prompt=True)`). There is no Jinja interpreter here: the template is recognised by family
/// and rendered by hand. Supported: ChatML (`<|im_start|>role\n…<|im_end|>\n`, SmolLM2, Qwen2), including
/// a default system message the template adds when the conversation has none (read from the template's
/// text). Any other template is refused by name rather than rendered wrongly.
public struct ChatTemplate: Sendable {
    public enum Family: String, Sendable { case chatML = "ChatML" }

    public let family: Family
    /// The system message the template inserts before a conversation without one (nil when it adds none).
    public let defaultSystemMessage: String?
    /// Where the template was read from (for messages).
    public let source: String

    /// The template of a model directory: `chat_template.jinja`, else tokenizer_config.json's `chat_template`
    /// (a string, or a list of named templates of which "default" is used).
    public static func load(modelDirectory: URL) throws -> ChatTemplate {
        let jinja = modelDirectory.appendingPathComponent("chat_template.jinja")
        if FileManager.default.fileExists(atPath: jinja.path) {
            let text: String
            do { text = try String(contentsOf: jinja, encoding: .utf8) } catch {
                throw PruneDistError(.io, "cannot read \(jinja.path): \(error.localizedDescription)")
            }
            return try ChatTemplate(template: text, source: jinja.path)
        }
        let configURL = modelDirectory.appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: configURL) else {
            throw PruneDistError(.io, "--chat: \(modelDirectory.path) has neither chat_template.jinja nor tokenizer_config.json")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PruneDistError(.format, "\(configURL.path) is not a JSON object")
        }
        if let text = object["chat_template"] as? String {
            return try ChatTemplate(template: text, source: configURL.path + " (chat_template)")
        }
        if let list = object["chat_template"] as? [[String: Any]],
           let entry = list.first(where: { $0["name"] as? String == "default" }), let text = entry["template"] as? String {
            return try ChatTemplate(template: text, source: configURL.path + " (chat_template \"default\")")
        }
        throw PruneDistError(.data, "--chat: \(modelDirectory.path) has no chat template (no chat_template.jinja, no \"chat_template\" in tokenizer_config.json)")
    }

    /// Recognises `template`'s family.
    public init(template: String, source: String = "chat template") throws {
        self.source = source
        guard template.contains("<|im_start|>"), template.contains("<|im_end|>") else {
            throw PruneDistError(.unsupported, "\(source): only ChatML chat templates (<|im_start|>…<|im_end|>) can be applied by prune-dist; this one is not (apply it with transformers and pass the text with --prompt)")
        }
        family = .chatML
        defaultSystemMessage = ChatTemplate.literalSystemMessage(in: template)
    }

    /// The text of a default system message written as a string literal in the template:
    /// `'<|im_start|>system\n…<|im_end|>` (single or double quotes, `\n` as an escape or a real newline).
    static func literalSystemMessage(in template: String) -> String? {
        for quote in ["'", "\""] {
            for newline in ["\n", "\\n"] {
                let opening = quote + "<|im_start|>system" + newline
                var from = template.startIndex
                while let start = template.range(of: opening, range: from..<template.endIndex) {
                    from = start.upperBound
                    guard let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) else { break }
                    let body = String(template[start.upperBound..<end.lowerBound])
                    // A literal ends at its closing quote: an expression (message['content']) is not a default.
                    if body.contains(quote) { continue }
                    return unescapeJinjaLiteral(body)
                }
            }
        }
        return nil
    }

    /// Jinja's escapes in a string literal: \n, \t, \\, \', \".
    static func unescapeJinjaLiteral(_ text: String) -> String {
        var out = ""
        var escaping = false
        for character in text {
            if escaping {
                switch character {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(character)
                }
                escaping = false
            } else if character == "\\" {
                escaping = true
            } else {
                out.append(character)
            }
        }
        return out
    }

    /// The text the template makes of one user message, with the generation prompt (the assistant's turn opened).
    public func render(userMessage: String) -> String {
        var text = ""
        if let system = defaultSystemMessage { text += "<|im_start|>system\n" + system + "<|im_end|>\n" }
        text += "<|im_start|>user\n" + userMessage + "<|im_end|>\n"
        text += "<|im_start|>assistant\n"
        return text
    }
}
