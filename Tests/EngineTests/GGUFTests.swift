import Foundation
import TestSupport
import XCTest
@testable import Engine

/// Deterministic pseudo-random integers for hand-built blocks (SplitMix64).
private struct Mix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    /// A float16 scale in [lo, hi], returned both as stored bits and as the Float the format decodes.
    mutating func half(_ lo: Float, _ hi: Float) -> (bits: [UInt8], value: Float) {
        let h = Float16(lo + (hi - lo) * Float(next() % 10_000) / 10_000)
        return ([UInt8(h.bitPattern & 0xff), UInt8(h.bitPattern >> 8)], Float(h))
    }
}

/// Blocks built from chosen quants and scales; the expected values come from llama.cpp's formulas
/// (ggml-quants.c dequantize_row_*) applied to those chosen values, never from the packed bytes.
final class GGUFTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory("gguf") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func assertEqualValues(_ got: [Float], _ expected: [Float], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, expected.count, label, file: file, line: line)
        let firstDiff = zip(got, expected).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
        XCTAssertNil(firstDiff, "\(label): value \(firstDiff?.offset ?? -1) is \(firstDiff?.element.0 ?? 0), formula gives \(firstDiff?.element.1 ?? 0)", file: file, line: line)
    }

    // MARK: block formats

    func testQ4_0AndQ4_1() {
        var mix = Mix(state: 1)
        var bytes0: [UInt8] = [], bytes1: [UInt8] = [], expected0: [Float] = [], expected1: [Float] = []
        for _ in 0..<3 {
            let d = mix.half(-0.05, 0.05), m = mix.half(-0.4, 0.1)
            let q = (0..<32).map { _ in mix.int(0...15) }
            let packed = (0..<16).map { UInt8(q[$0] | q[$0 + 16] << 4) }
            bytes0 += d.bits + packed
            bytes1 += d.bits + m.bits + packed
            expected0 += q.map { Float($0 - 8) * d.value }
            expected1 += q.map { Float($0) * d.value + m.value }
        }
        assertEqualValues(dequantize(bytes0, type: .q4_0), expected0, "Q4_0")
        assertEqualValues(dequantize(bytes1, type: .q4_1), expected1, "Q4_1")
    }

    func testQ5_0AndQ5_1() {
        var mix = Mix(state: 2)
        var bytes0: [UInt8] = [], bytes1: [UInt8] = [], expected0: [Float] = [], expected1: [Float] = []
        for _ in 0..<3 {
            let d = mix.half(-0.05, 0.05), m = mix.half(-0.4, 0.1)
            let q = (0..<32).map { _ in mix.int(0...31) }
            // Fifth bits: bit j of the little-endian u32 for element j.
            var high: UInt32 = 0
            for j in 0..<32 where q[j] >= 16 { high |= 1 << UInt32(j) }
            let qh = (0..<4).map { UInt8((high >> (8 * UInt32($0))) & 0xff) }
            let packed = (0..<16).map { UInt8((q[$0] & 15) | (q[$0 + 16] & 15) << 4) }
            bytes0 += d.bits + qh + packed
            bytes1 += d.bits + m.bits + qh + packed
            expected0 += q.map { Float($0 - 16) * d.value }
            expected1 += q.map { Float($0) * d.value + m.value }
        }
        assertEqualValues(dequantize(bytes0, type: .q5_0), expected0, "Q5_0")
        assertEqualValues(dequantize(bytes1, type: .q5_1), expected1, "Q5_1")
    }

    func testQ8_0() {
        var mix = Mix(state: 3)
        var bytes: [UInt8] = [], expected: [Float] = []
        for _ in 0..<3 {
            let d = mix.half(-0.02, 0.02)
            let q = (0..<32).map { _ in mix.int(-128...127) }
            bytes += d.bits + q.map { UInt8(bitPattern: Int8($0)) }
            expected += q.map { Float($0) * d.value }
        }
        assertEqualValues(dequantize(bytes, type: .q8_0), expected, "Q8_0")
    }

    /// The 12 scale bytes of Q4_K/Q5_K: sub-blocks 0–3 keep scale and min in the low 6 bits of bytes
    /// j and j+4; 4–7 keep their low 4 bits in byte j+4 (scale low, min high nibble) and their top 2 bits
    /// in the spare top bits of bytes j-4 (scale) and j (min).
    private func packKScales(_ scale: [Int], _ min: [Int]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            b[j] = UInt8(scale[j] | (scale[j + 4] >> 4) << 6)
            b[j + 4] = UInt8(min[j] | (min[j + 4] >> 4) << 6)
            b[j + 8] = UInt8((scale[j + 4] & 15) | (min[j + 4] & 15) << 4)
        }
        return b
    }

    func testQ4_KAndQ5_K() {
        var mix = Mix(state: 4)
        var bytes4: [UInt8] = [], bytes5: [UInt8] = [], expected4: [Float] = [], expected5: [Float] = []
        for _ in 0..<2 {
            let d = mix.half(0.001, 0.01), dmin = mix.half(0.001, 0.01)
            let scale = (0..<8).map { _ in mix.int(0...63) }, min = (0..<8).map { _ in mix.int(0...63) }
            let q4 = (0..<256).map { _ in mix.int(0...15) }
            let q5 = (0..<256).map { _ in mix.int(0...31) }
            // Sub-blocks 2p and 2p+1 share quant bytes 32p..32p+31: low nibble, then high nibble.
            func nibbles(_ q: [Int]) -> [UInt8] {
                var out: [UInt8] = []
                for p in 0..<4 {
                    for l in 0..<32 { out.append(UInt8((q[64 * p + l] & 15) | (q[64 * p + 32 + l] & 15) << 4)) }
                }
                return out
            }
            // Fifth bit of element 32s+l is bit s of qh[l].
            var qh = [UInt8](repeating: 0, count: 32)
            for s in 0..<8 {
                for l in 0..<32 { qh[l] |= UInt8((q5[32 * s + l] >> 4) << s) }
            }
            bytes4 += d.bits + dmin.bits + packKScales(scale, min) + nibbles(q4)
            bytes5 += d.bits + dmin.bits + packKScales(scale, min) + qh + nibbles(q5)
            for e in 0..<256 {
                let s = e / 32
                expected4.append(d.value * Float(scale[s]) * Float(q4[e]) - dmin.value * Float(min[s]))
                expected5.append(d.value * Float(scale[s]) * Float(q5[e]) - dmin.value * Float(min[s]))
            }
        }
        assertEqualValues(dequantize(bytes4, type: .q4_K), expected4, "Q4_K")
        assertEqualValues(dequantize(bytes5, type: .q5_K), expected5, "Q5_K")
    }

    func testQ6_K() {
        var mix = Mix(state: 6)
        var bytes: [UInt8] = [], expected: [Float] = []
        for _ in 0..<2 {
            let d = mix.half(0.0005, 0.002)
            let scales = (0..<16).map { _ in mix.int(-128...127) }
            let q = (0..<256).map { _ in mix.int(0...63) }
            var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
            // In half n, element 128n + 32k + l: nibble of ql[64n + l + 32(k%2)] (low for k<2, high for
            // k≥2), top two bits in bits 2k..2k+1 of qh[32n + l].
            for n in 0..<2 {
                for k in 0..<4 {
                    for l in 0..<32 {
                        let v = q[128 * n + 32 * k + l]
                        ql[64 * n + l + 32 * (k % 2)] |= UInt8((v & 15) << (k < 2 ? 0 : 4))
                        qh[32 * n + l] |= UInt8((v >> 4) << (2 * k))
                    }
                }
            }
            bytes += ql + qh + scales.map { UInt8(bitPattern: Int8($0)) } + d.bits
            expected += (0..<256).map { e in d.value * Float(scales[e / 16]) * Float(q[e] - 32) }
        }
        assertEqualValues(dequantize(bytes, type: .q6_K), expected, "Q6_K")
    }

    func testFloatTypes() {
        let values: [Float] = [0, -1.5, 3.140625, 65504, -2e-7, 1e30]
        assertEqualValues(dequantize(encode(values, as: .f32), type: .f32), values, "F32")
        let halves = values.map { Float(Float16($0)) }
        assertEqualValues(dequantize(values.flatMap { v -> [UInt8] in let b = Float16(v).bitPattern; return [UInt8(b & 0xff), UInt8(b >> 8)] }, type: .f16), halves, "F16")
        // bfloat16: the top half of the float32 bits.
        let bf = values.map { Float(bitPattern: $0.bitPattern & 0xffff_0000) }
        assertEqualValues(dequantize(values.flatMap { v -> [UInt8] in let b = v.bitPattern >> 16; return [UInt8(b & 0xff), UInt8(b >> 8)] }, type: .bf16), bf, "BF16")
    }

    // MARK: reader

    func testEveryMetadataTypeRoundTripsInVersions2And3WithCustomAlignment() throws {
        let metadata: [(String, GGUFValue)] = [
            ("general.alignment", .uint32(64)),
            ("u8", .uint8(200)), ("i8", .int8(-100)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("u64", .uint64(UInt64.max)),
            ("i64", .int64(Int64.min)), ("f32", .float32(1e-5)), ("f64", .float64(-2.5e300)), ("yes", .bool(true)),
            ("no", .bool(false)), ("text", .string("héllo wörld ✓ \u{0}")), ("empty", .array(.string, [])),
            ("ints", .array(.int32, [.int32(1), .int32(-2)])),
            ("nested", .array(.array, [.array(.string, [.string("a"), .string("b c")]), .array(.float64, [.float64(0.5)])])),
        ]
        for version: UInt32 in [2, 3] {
            var writer = GGUFWriter(version: version)
            writer.metadata = metadata.map { (key: $0.0, value: $0.1) }
            let a: [Float] = (0..<6).map { Float($0) - 2.5 }
            writer.tensors = [
                .init(name: "a", dimensions: [3, 2], type: .f32, bytes: encode(a, as: .f32)),
                .init(name: "b", dimensions: [32], type: .q8_0, bytes: [0x00, 0x3c] + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }),
            ]
            let url = dir.appendingPathComponent("v\(version).gguf")
            try writer.write(to: url)
            let file = try GGUFFile(url: url)
            XCTAssertEqual(file.version, Int(version))
            XCTAssertEqual(file.metadataKeys, metadata.map(\.0))
            for (key, value) in metadata { XCTAssertEqual(file.metadata[key], value, key) }
            XCTAssertEqual(file.alignment, 64)
            XCTAssertEqual(file.dataStart % 64, 0)
            XCTAssertEqual(file.tensors.map(\.name), ["a", "b"])
            XCTAssertEqual(try file.tensor("a").shape, [2, 3])
            XCTAssertEqual(try file.tensor("b").dataOffset, 64)  // 24 bytes of "a" padded to the alignment
            XCTAssertEqual(try file.floats("a"), a)
            XCTAssertEqual(try file.floats("b"), (0..<32).map { Float($0 - 16) })  // d = 1.0 (0x3c00)
        }
    }

    // MARK: bad inputs

    private func smallFile() -> GGUFWriter {
        var writer = GGUFWriter()
        writer.metadata = [(key: "general.architecture", value: .string("llama")), (key: "general.name", value: .string("tiny"))]
        writer.tensors = [.init(name: "x.weight", dimensions: [8, 4], type: .f32, bytes: encode((0..<32).map(Float.init), as: .f32))]
        return writer
    }

    private func assertOpenFails(_ bytes: [UInt8], _ kind: PruneDistError.Kind, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let url = dir.appendingPathComponent("bad-\(UUID().uuidString.prefix(6)).gguf")
        try Data(bytes).write(to: url)
        XCTAssertThrowsError(try GGUFFile(url: url), file: file, line: line) { error in
            guard let e = error as? PruneDistError else { return XCTFail("not a PruneDistError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, kind, e.message, file: file, line: line)
            for part in parts + [url.path] {
                XCTAssertTrue(e.message.contains(part), "\"\(e.message)\" should mention \"\(part)\"", file: file, line: line)
            }
        }
    }

    func testWrongMagic() throws {
        var bytes = smallFile().bytes()
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        try assertOpenFails(bytes, .format, ["not a GGUF file", "\"GGML\"", "expected \"GGUF\""])
    }

    func testUnsupportedVersion() throws {
        try assertOpenFails(GGUFWriter(version: 4).bytes(), .unsupported, ["unsupported GGUF version 4", "2 and 3"])
        try assertOpenFails(GGUFWriter(version: 1).bytes(), .unsupported, ["unsupported GGUF version 1"])
    }

    func testTruncatedMetadata() throws {
        let bytes = smallFile().bytes()
        // Cut inside the value of general.name (header 24 bytes, first entry 8+20+4+8+5 bytes).
        let cut = 24 + 8 + 20 + 4 + 8 + 5 + 8 + 12 + 4 + 8 + 2
        try assertOpenFails(Array(bytes[0..<cut]), .format, ["truncated metadata", "metadata general.name", "the file ends at \(cut)"])
    }

    func testTensorDataPastEndOfFile() throws {
        let bytes = smallFile().bytes()
        try assertOpenFails(Array(bytes.dropLast(8)), .format, ["tensor x.weight", "past the end", "[0, 128)"])
    }

    func testUnknownQuantisationType() throws {
        var writer = smallFile()
        writer.tensors[0].typeID = 99
        try assertOpenFails(writer.bytes(), .unsupported, ["tensor x.weight", "type id 99", "Q4_K"])
        writer.tensors[0].typeID = 10
        try assertOpenFails(writer.bytes(), .unsupported, ["tensor x.weight", "type id 10 (Q2_K)"])
    }

    func testTensorCountMismatch() throws {
        var writer = smallFile()
        writer.declaredTensorCount = 2
        try assertOpenFails(writer.bytes(), .format, ["tensor info 1 of the 2", "tensor count mismatch"])
        writer.declaredTensorCount = 1 << 40
        try assertOpenFails(writer.bytes(), .format, ["tensor count mismatch", "declares 1099511627776 tensors"])
    }

    // MARK: rotary row order

    func testRotaryPermutationRoundTripsAndMatchesLlamaCppLayout() {
        // One head of dimension 4, one column: HF rows [x0, x1 | y0, y1] (rotate-half pairs (x_i, y_i))
        // become llama.cpp's adjacent pairs [x0, y0, x1, y1].
        XCTAssertEqual(GGUFConversion.permuteRotaryRows([0, 1, 2, 3], heads: 1, columns: 1), [0, 2, 1, 3])
        XCTAssertEqual(GGUFConversion.unpermuteRotaryRows([0, 2, 1, 3], heads: 1, columns: 1), [0, 1, 2, 3])
        var mix = Mix(state: 9)
        let heads = 3, headDim = 8, columns = 5
        let w = (0..<heads * headDim * columns).map { _ in Float(mix.int(-1000...1000)) }
        let p = GGUFConversion.permuteRotaryRows(w, heads: heads, columns: columns)
        XCTAssertNotEqual(p, w)
        XCTAssertEqual(GGUFConversion.unpermuteRotaryRows(p, heads: heads, columns: columns), w)
        XCTAssertEqual(GGUFConversion.permuteRotaryRows(GGUFConversion.unpermuteRotaryRows(w, heads: heads, columns: columns), heads: heads, columns: columns), w)
        // Rows move whole: llama.cpp row h*d + 2i + a is HF row h*d + a*d/2 + i.
        for h in 0..<heads { for i in 0..<headDim / 2 { for a in 0..<2 {
            let llama = h * headDim + 2 * i + a, hf = h * headDim + a * headDim / 2 + i
            XCTAssertEqual(Array(p[llama * columns..<(llama + 1) * columns]), Array(w[hf * columns..<(hf + 1) * columns]))
        } } }
    }

    // MARK: the bundled SmolLM2 file

    private func smolLM2() throws -> GGUFFile {
        try GGUFFile(url: Fixtures.path("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    }

    func testRealFileMetadataAndTensorsAsTheReadmeSays() throws {
        let file = try smolLM2()
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(try file.string("general.architecture"), "llama")
        XCTAssertEqual(try file.int("llama.block_count"), 30)
        XCTAssertEqual(try file.int("llama.embedding_length"), 576)
        XCTAssertEqual(try file.int("llama.feed_forward_length"), 1536)
        XCTAssertEqual(try file.int("llama.attention.head_count"), 9)
        XCTAssertEqual(try file.int("llama.attention.head_count_kv"), 3)
        XCTAssertEqual(try file.int("llama.context_length"), 8192)
        XCTAssertEqual(try file.double("llama.rope.freq_base"), 100_000)
        XCTAssertEqual(try file.double("llama.attention.layer_norm_rms_epsilon"), 1e-5, accuracy: 1e-12)
        XCTAssertEqual(try file.strings("tokenizer.ggml.tokens").count, 49_152)
        XCTAssertEqual(try file.strings("tokenizer.ggml.merges").count, 48_900)
        XCTAssertEqual(try file.string("tokenizer.ggml.pre"), "smollm")
        XCTAssertEqual(try file.int("tokenizer.ggml.bos_token_id"), 1)
        XCTAssertEqual(try file.int("tokenizer.ggml.eos_token_id"), 2)
        XCTAssertEqual(file.tensors.count, 272)
        XCTAssertFalse(file.contains("output.weight"))
        XCTAssertEqual(try file.tensor("token_embd.weight").type, .q8_0)
        XCTAssertEqual(try file.tensor("token_embd.weight").shape, [49_152, 576])
        XCTAssertEqual(file.tensors.filter { $0.type == .q4_1 }.count, 210)
        XCTAssertEqual(file.tensors.filter { $0.type == .f32 }.count, 61)
        XCTAssertTrue(file.tensors.filter { $0.type == .f32 }.allSatisfy { $0.name.hasSuffix("norm.weight") })
    }

    /// Q8_0 (the embedding) and Q4_1 (a block linear) blocks read straight from the file's bytes and
    /// decoded with the llama.cpp formulas equal the reader's dequantisation.
    func testRealFileQ8_0AndQ4_1BlocksMatchTheFormulas() throws {
        let file = try smolLM2()
        let raw = try Data(contentsOf: file.url)
        func half(_ offset: Int) -> Float { Float(Float16(bitPattern: UInt16(raw[offset]) | UInt16(raw[offset + 1]) << 8)) }
        let embedding = try file.tensor("token_embd.weight")
        let embeddingValues = try file.floats("token_embd.weight")
        for block in [0, 1, 12_345, embedding.count / 32 - 1] {
            let start = file.dataStart + embedding.dataOffset + 34 * block
            let d = half(start)
            let expected = (0..<32).map { Float(Int8(bitPattern: raw[start + 2 + $0])) * d }
            assertEqualValues(Array(embeddingValues[32 * block..<32 * block + 32]), expected, "token_embd block \(block)")
        }
        let q = try file.tensor("blk.7.ffn_down.weight")
        XCTAssertEqual(q.type, .q4_1)
        let qValues = try file.floats(q.name)
        for block in [0, 5, 777, q.count / 32 - 1] {
            let start = file.dataStart + q.dataOffset + 20 * block
            let d = half(start), m = half(start + 2)
            let expected = (0..<32).map { j -> Float in
                let byte = raw[start + 4 + j % 16]
                return Float(j < 16 ? byte & 15 : byte >> 4) * d + m
            }
            assertEqualValues(Array(qValues[32 * block..<32 * block + 32]), expected, "blk.7.ffn_down block \(block)")
        }
    }

    /// transformers' dequantisation of the same file leaves 33 483 exact zeros in the 210 linears.
    func testRealFileLinearZerosMatchTheReference() throws {
        let file = try smolLM2()
        var zeros = 0
        for t in file.tensors where t.type == .q4_1 {
            zeros += try file.floats(t.name).reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
        }
        XCTAssertEqual(zeros, 33_483)
    }

    // MARK: tokenizer

    func testTokenizerJSONEqualsTheFixture() throws {
        let plan = try GGUFConversion.plan(smolLM2())
        let ours = try XCTUnwrap(JSONSerialization.jsonObject(with: plan.tokenizerJSON) as? [String: Any])
        let fixture = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.path("fixtures/smollm2-tokenizer/tokenizer.json"))) as? [String: Any])
        let ourModel = try XCTUnwrap(ours["model"] as? [String: Any]), fixtureModel = try XCTUnwrap(fixture["model"] as? [String: Any])
        XCTAssertEqual(ourModel["vocab"] as? [String: Int], fixtureModel["vocab"] as? [String: Int])
        XCTAssertEqual((ourModel["vocab"] as? [String: Int])?.count, 49_152)
        XCTAssertEqual(ourModel["merges"] as? [[String]], fixtureModel["merges"] as? [[String]])
        XCTAssertEqual((ourModel["merges"] as? [[String]])?.count, 48_900)
        for key in ["type", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges", "fuse_unk"] {
            XCTAssertEqual(ourModel[key] as? NSObject, fixtureModel[key] as? NSObject, key)
        }
        let ourAdded = try XCTUnwrap(ours["added_tokens"] as? [[String: Any]]), fixtureAdded = try XCTUnwrap(fixture["added_tokens"] as? [[String: Any]])
        XCTAssertEqual(ourAdded.count, 17)
        XCTAssertEqual(ourAdded.map { $0 as NSDictionary }, fixtureAdded.map { $0 as NSDictionary })
        XCTAssertEqual(ours["pre_tokenizer"] as? NSDictionary, fixture["pre_tokenizer"] as? NSDictionary)
        XCTAssertEqual(ours["decoder"] as? NSDictionary, fixture["decoder"] as? NSDictionary)
        XCTAssertEqual(ours["post_processor"] as? NSDictionary, fixture["post_processor"] as? NSDictionary)
        XCTAssertTrue(ours["normalizer"] is NSNull)

        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: plan.tokenizerConfigJSON) as? [String: Any])
        XCTAssertEqual(config["bos_token"] as? String, "<|im_start|>")
        XCTAssertEqual(config["eos_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["pad_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["unk_token"] as? String, "<|endoftext|>")
        XCTAssertEqual(config["add_bos_token"] as? Bool, false)
        XCTAssertTrue((config["chat_template"] as? String)?.contains("<|im_start|>") == true)
    }

    /// The tokenizer.json rebuilt from the GGUF, run through our Tokenizer, gives the recorded ids of every
    /// golden case (tokenizers 0.23.3 on the fixture file) and of the whole evaluation text.
    func testTokenizerFromGGUFEncodesTheGoldensAndEvalText() throws {
        let url = dir.appendingPathComponent("tokenizer.json")
        try GGUFConversion.plan(smolLM2()).tokenizerJSON.write(to: url)
        let tokenizer = try Tokenizer(url: url)
        let goldens = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.path("fixtures/tokenizer-goldens.json"))) as? [String: Any])
        let cases = try XCTUnwrap(goldens["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 33)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String), ids = try XCTUnwrap(c["ids"] as? [Int])
            XCTAssertEqual(tokenizer.encode(text), ids, text)
            XCTAssertEqual(tokenizer.decode(ids), c["decoded"] as? String, text)
        }
        let evalText = try String(contentsOf: Fixtures.path("data/wiki/eval.txt"), encoding: .utf8)
        let evalIds = try Data(contentsOf: Fixtures.path("data/wiki/eval_tokens.u16")).withUnsafeBytes { raw in
            (0..<raw.count / 2).map { Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        }
        XCTAssertEqual(evalIds.count, 16_488)
        XCTAssertEqual(tokenizer.encode(evalText), evalIds)
    }

    /// A SentencePiece ("llama") vocabulary: merges derived from the scores as transformers does, byte
    /// fallback for characters outside the vocabulary, "▁" for spaces with one before the text.
    func testSentencePieceVocabularyBecomesByteFallbackBPE() throws {
        var tokens = ["<unk>", "<s>", "</s>"] + (0..<256).map { String(format: "<0x%02X>", $0) }
        tokens += ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "abc"]  // ids 259...267
        var writer = GGUFWriter()
        writer.metadata = [
            (key: "tokenizer.ggml.model", value: .string("llama")),
            (key: "tokenizer.ggml.tokens", value: .array(.string, tokens.map { .string($0) })),
            (key: "tokenizer.ggml.scores", value: .array(.float32, tokens.indices.map { .float32(-Float($0)) })),
            (key: "tokenizer.ggml.token_type", value: .array(.int32, tokens.indices.map { .int32($0 == 0 ? 2 : $0 < 3 ? 3 : $0 < 259 ? 6 : 1) })),
            (key: "tokenizer.ggml.bos_token_id", value: .uint32(1)),
            (key: "tokenizer.ggml.eos_token_id", value: .uint32(2)),
            (key: "tokenizer.ggml.unknown_token_id", value: .uint32(0)),
        ]
        let ggufURL = dir.appendingPathComponent("spm.gguf")
        try writer.write(to: ggufURL)
        let spm = try GGUFTokenizer(GGUFFile(url: ggufURL))
        // Merged tokens by score (▁a, ab, ▁ab, bc, abc); "▁ab" splits as ▁+ab before ▁a+b (▁ scores higher
        // than ▁a), "abc" as a+bc before ab+c.
        XCTAssertEqual(spm.merges.map { [$0.0, $0.1] }, [["▁", "a"], ["a", "b"], ["▁", "ab"], ["▁a", "b"], ["b", "c"], ["a", "bc"], ["ab", "c"]])
        XCTAssertTrue(spm.addBos)
        let url = dir.appendingPathComponent("tokenizer.json")
        try spm.tokenizerJSON().write(to: url)
        let tokenizer = try Tokenizer(url: url)
        // "▁ab▁abc": ▁a twice (rank 0), then ▁a+b twice (rank 3); "c" stays.
        XCTAssertEqual(tokenizer.encode("ab abc"), [265, 265, 262])
        XCTAssertEqual(tokenizer.decode([265, 265, 262]), "ab abc")
        // "x" is not in the vocabulary: its byte 0x78 is token 3 + 0x78.
        XCTAssertEqual(tokenizer.encode("x"), [259, 3 + 0x78])
        // The special token is cut out first; the rest is normalized on its own, so it gets its own "▁"
        // (transformers' "legacy" Llama behaviour).
        XCTAssertEqual(tokenizer.encode("<s>a"), [1, 263])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let post = try XCTUnwrap(json["post_processor"] as? [String: Any])
        XCTAssertEqual(((post["single"] as? [[String: Any]])?.first?["SpecialToken"] as? [String: Any])?["id"] as? String, "<s>")
    }

    func testPreTokenizersFollowLlamaCppNames() throws {
        let llama3 = try GGUFTokenizer.preTokenizer("llama-bpe", path: "")
        let json = llama3.serialized(pretty: false)
        XCTAssertTrue(json.contains(#""type":"Split""#) && json.contains(#"\\p{N}{1,3}"#) && json.contains(#""use_regex":false"#), json)
        let qwen2 = try GGUFTokenizer.preTokenizer("qwen2", path: "").serialized(pretty: false)
        XCTAssertTrue(qwen2.contains(#"|\\p{N}|"#) && !qwen2.contains("{1,3}"), qwen2)
        XCTAssertEqual(try GGUFTokenizer.preTokenizer("gpt2", path: "").serialized(pretty: false),
                       #"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#)
        XCTAssertThrowsError(try GGUFTokenizer.preTokenizer("tekken", path: "f.gguf")) { error in
            XCTAssertTrue("\(error)".contains("\"tekken\""), "\(error)")
        }
    }
}
