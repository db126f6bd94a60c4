import Foundation

/// The tiny-llama fixture made evaluable: a copy with a byte-level BPE tokenizer.json whose ids stay below
/// the model's 512-token vocabulary (the 256 byte tokens plus a few merges), and small hand-made task files
/// in the zero-shot task file formats (ZeroShotTask.fileName).
public enum TinyEvaluationFixture {
    /// GPT-2's byte → printable character table (bytes_to_unicode).
    static func byteCharacters() -> [Character] {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var characters = printable.map { Int($0) }
        var extra = 0
        for byte in 0..<256 where !printable.contains(byte) {
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (byte, scalar) in zip(printable, characters) { table[byte] = Character(Unicode.Scalar(scalar)!) }
        return table
    }

    /// tokenizer.json: ids 0..<256 are the bytes, then merges " t", "he", " the", "es", " a", "in", " in".
    public static func tokenizerJSON() throws -> Data {
        let bytes = byteCharacters()
        var vocab: [String: Int] = [:]
        for (byte, character) in bytes.enumerated() { vocab[String(character)] = byte }
        let space = String(bytes[32])
        let merges = [[space, "t"], ["h", "e"], [space + "t", "he"], ["e", "s"], [space, "a"], ["i", "n"], [space, "in"]]
        for (i, pair) in merges.enumerated() { vocab[pair[0] + pair[1]] = 256 + i }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let object: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": [], "normalizer": NSNull(),
            "pre_tokenizer": byteLevel, "post_processor": NSNull(), "decoder": byteLevel,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }

    /// A copy of fixtures/tiny-llama with the tokenizer, in `directory/tiny-llama`.
    public static func model(in directory: URL) throws -> URL {
        let source = try Fixtures.path("fixtures/tiny-llama")
        let target = directory.appendingPathComponent("tiny-llama")
        try FileManager.default.copyItem(at: source, to: target)
        try tokenizerJSON().write(to: target.appendingPathComponent("tokenizer.json"))
        return target
    }

    /// Hand-made task files (a few documents each, in the shared data's formats) in `directory/tasks`.
    public static func tasks(in directory: URL) throws -> URL {
        let folder = directory.appendingPathComponent("tasks")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        func write(_ name: String, _ rows: [[String: Any]]) throws {
            let lines = try rows.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }
            try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: folder.appendingPathComponent(name))
        }
        let words = ["the cat sat on the mat", "a dog ran in the park", "the sun is hot", "rain falls in spring",
                     "birds sing at dawn", "the sea is deep and blue", "ice melts in the heat", "trees grow tall",
                     "the moon shines at night", "fish swim in the river", "snow is cold", "the wind blows hard"]
        try write("boolq.validation.jsonl", words.enumerated().map { i, w in
            ["question": "is it true that \(w)", "passage": "\(w.capitalized). It is often said that \(words[(i + 3) % words.count]).", "answer": i % 3 == 0]
        })
        try write("piqa.validation.jsonl", words.enumerated().map { i, w in
            ["goal": "how to see \(w)", "sol1": "look at \(w)", "sol2": "listen to \(words[(i + 1) % words.count]) twice", "label": i % 2]
        })
        try write("hellaswag.validation.jsonl", words.enumerated().map { i, w in
            ["ind": i, "activity_label": "Daily life", "ctx_a": "\(w.capitalized).", "ctx_b": "then [step] the",
             "ctx": "\(w.capitalized). then the", "endings": (0..<4).map { words[(i + $0 * 2) % words.count] + " [title] again" },
             "label": String(i % 4), "split": "val", "split_type": "indomain", "source_id": "x"] as [String: Any]
        })
        try write("winogrande_xl.validation.jsonl", words.enumerated().map { i, w in
            ["sentence": "Tom said _ saw that \(w).", "option1": "he", "option2": "the cat", "answer": String(1 + i % 2)]
        })
        for (name, offset) in [("arc_easy.test.jsonl", 0), ("arc_challenge.test.jsonl", 1), ("openbookqa.test.jsonl", 2)] {
            try write(name, words.enumerated().map { i, w in
                ["id": "q\(i)", "question": "what happens when \(w)?", "query": "Question: what happens when \(w)?\nAnswer:",
                 "choices": (0..<(3 + (i + offset) % 2)).map { words[(i + $0 * 5 + offset) % words.count] }, "gold": (i + offset) % 3] as [String: Any]
            })
        }
        try write("sst2.validation.jsonl", words.enumerated().map { i, w in ["sentence": "\(w) . ", "label": i % 2, "idx": i] })
        return folder
    }
}
