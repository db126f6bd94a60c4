import Foundation

/// The BPE model of tokenizer.json: a word's characters start as single-character tokens, then the
/// lowest-ranked adjacent pair (leftmost on ties) is merged until no pair in the merge list remains —
/// the order Hugging Face's priority queue produces.
struct BPEModel: Sendable {
    struct Merge: Sendable {
        var rank: Int32
        var merged: Int32
    }

    let vocab: [String: Int]
    /// tokenForID: [maxID + 1], nil where no token has that id.
    let tokenForID: [String?]
    /// Ids of the tokens that are exactly one scalar (the starting symbols of most words): a table for
    /// scalars below `scalarTableSize` (the byte-level alphabet and most alphabets; -1 = none), else a dictionary.
    let singleScalarIDs: [Unicode.Scalar: Int]
    let singleScalarTable: [Int32]
    static let scalarTableSize = 0x3000
    /// Pairs keyed by left id << 32 | right id.
    let merges: [UInt64: Merge]
    let unknownID: Int?
    let fuseUnknown: Bool
    /// byteFallbackIDs: [256] ids of "<0x00>"…"<0xFF>" when byte_fallback is on and all exist.
    let byteFallbackIDs: [Int]?
    let continuingSubwordPrefix: String
    let endOfWordSuffix: String
    /// LLaMA-3: a word that is itself in the vocabulary is taken whole, without merging.
    let ignoreMerges: Bool

    /// Builds the model from tokenizer.json's "model" object; `file` names the file in errors.
    init(json model: [String: Any], file: String) throws {
        if let type = model["type"] as? String, type != "BPE" {
            throw PruneDistError(.unsupported, "\(file): model.type \"\(type)\" is not supported (only BPE)")
        }
        guard let vocabObject = model["vocab"] as? [String: Any] else {
            throw PruneDistError(.format, "\(file): model.vocab is missing or not an object of token → id")
        }
        var vocab = [String: Int](minimumCapacity: vocabObject.count)
        for (token, value) in vocabObject {
            guard let id = integerFromJSON(value), id >= 0 else {
                throw PruneDistError(.format, "\(file): model.vocab[\"\(token)\"] is \(value), expected a non-negative integer id")
            }
            vocab[token] = id
        }
        self.vocab = vocab
        var tokenForID = [String?](repeating: nil, count: (vocab.values.max() ?? -1) + 1)
        var singleScalarIDs = [Unicode.Scalar: Int]()
        for (token, id) in vocab {
            tokenForID[id] = token
            let scalars = token.unicodeScalars
            if scalars.count == 1 { singleScalarIDs[scalars.first!] = id }
        }
        self.tokenForID = tokenForID
        self.singleScalarIDs = singleScalarIDs
        var table = [Int32](repeating: -1, count: BPEModel.scalarTableSize)
        for (scalar, id) in singleScalarIDs where scalar.value < BPEModel.scalarTableSize { table[Int(scalar.value)] = Int32(id) }
        singleScalarTable = table

        if let dropout = model["dropout"].flatMap(doubleFromJSON), dropout > 0 {
            throw PruneDistError(.unsupported, "\(file): model.dropout \(dropout) (random BPE dropout) is not supported; expected null")
        }
        continuingSubwordPrefix = model["continuing_subword_prefix"] as? String ?? ""
        endOfWordSuffix = model["end_of_word_suffix"] as? String ?? ""
        fuseUnknown = model["fuse_unk"] as? Bool ?? false
        ignoreMerges = model["ignore_merges"] as? Bool ?? false
        if let unk = model["unk_token"] as? String {
            guard let id = vocab[unk] else {
                throw PruneDistError(.format, "\(file): model.unk_token \"\(unk)\" is not in model.vocab")
            }
            unknownID = id
        } else {
            unknownID = nil
        }
        if model["byte_fallback"] as? Bool ?? false {
            let ids = (0..<256).compactMap { vocab[byteFallbackToken($0)] }
            byteFallbackIDs = ids.count == 256 ? ids : nil
        } else {
            byteFallbackIDs = nil
        }

        guard let mergeList = model["merges"] as? [Any] else {
            throw PruneDistError(.format, "\(file): model.merges is missing or not an array")
        }
        var merges = [UInt64: Merge](minimumCapacity: mergeList.count)
        let prefixLength = continuingSubwordPrefix.count
        for (rank, entry) in mergeList.enumerated() {
            // Two spellings: "a b" (tokenizers < 0.20) and ["a", "b"].
            let pair: [String]
            if let line = entry as? String {
                pair = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else if let array = entry as? [Any] {
                pair = array.compactMap { $0 as? String }
                if pair.count != array.count { throw mergeError(file, rank, entry, "an entry that is not a string") }
            } else {
                throw mergeError(file, rank, entry, "neither \"a b\" nor [\"a\", \"b\"]")
            }
            guard pair.count == 2 else { throw mergeError(file, rank, entry, "\(pair.count) parts, expected 2") }
            let right = prefixLength > 0 && pair[1].hasPrefix(continuingSubwordPrefix)
                ? String(pair[1].dropFirst(prefixLength)) : pair[1]
            guard let leftID = vocab[pair[0]], let rightID = vocab[pair[1]], let mergedID = vocab[pair[0] + right] else {
                throw mergeError(file, rank, entry, "a token missing from model.vocab")
            }
            let key = UInt64(leftID) << 32 | UInt64(rightID)
            if merges[key] == nil { merges[key] = Merge(rank: Int32(rank), merged: Int32(mergedID)) }
        }
        self.merges = merges
    }

    var maximumID: Int { tokenForID.count - 1 }

    /// Appends the ids of one pre-tokenized word.
    /// word: [n] scalars (byte-level symbols for byte-level tokenizers)
    func tokenize(_ word: ArraySlice<Unicode.Scalar>, into ids: inout [Int]) {
        if ignoreMerges, let id = vocab[string(word)] {
            ids.append(id)
            return
        }
        var symbols = initialSymbols(word)
        if symbols.count <= BPEModel.longWord {
            mergePairsByScanning(&symbols)
        } else {
            mergePairsWithQueue(&symbols)
        }
        ids.append(contentsOf: symbols)
    }

    /// The word's characters as token ids. A character missing from the vocabulary becomes its UTF-8
    /// bytes with byte fallback, else the unknown token (consecutive ones fused if fuse_unk), else nothing:
    /// Hugging Face drops it silently when unk_token is null.
    private func initialSymbols(_ word: ArraySlice<Unicode.Scalar>) -> [Int] {
        var symbols = [Int]()
        symbols.reserveCapacity(word.count)
        let plain = continuingSubwordPrefix.isEmpty && endOfWordSuffix.isEmpty
        var previousWasUnknown = false
        for index in word.indices {
            let scalar = word[index]
            var id: Int?
            if plain {
                if scalar.value < BPEModel.scalarTableSize {
                    let entry = singleScalarTable[Int(scalar.value)]
                    id = entry < 0 ? nil : Int(entry)
                } else {
                    id = singleScalarIDs[scalar]
                }
            } else {
                var token = index == word.startIndex ? "" : continuingSubwordPrefix
                token.unicodeScalars.append(scalar)
                if index == word.endIndex - 1 { token += endOfWordSuffix }
                id = vocab[token]
            }
            if let id {
                symbols.append(id)
                previousWasUnknown = false
            } else if let byteFallbackIDs {
                for byte in UTF8.encode(scalar)! { symbols.append(byteFallbackIDs[Int(byte)]) }
                previousWasUnknown = false
            } else if let unknownID {
                if !(fuseUnknown && previousWasUnknown) { symbols.append(unknownID) }
                previousWasUnknown = true
            }
        }
        return symbols
    }

    /// Words longer than this (in symbols) are merged with a priority queue: scanning all pairs per merge
    /// costs n² and a long unbroken string (base64, a DNA sequence) would take minutes.
    static let longWord = 64

    @inline(__always) private func merge(_ left: Int, _ right: Int) -> Merge? {
        merges[UInt64(left) << 32 | UInt64(right)]
    }

    /// Applies merges in rank order; ranks of the current adjacent pairs are kept in step with the symbols.
    /// symbols: [n] token ids, shrinks by one per merge
    func mergePairsByScanning(_ symbols: inout [Int]) {
        guard symbols.count > 1 else { return }
        // pairs[i]: the merge of symbols[i] and symbols[i+1], if any.
        var pairs = (0..<(symbols.count - 1)).map { merge(symbols[$0], symbols[$0 + 1]) }
        while true {
            var best = -1
            var bestRank = Int32.max
            for (i, pair) in pairs.enumerated() {
                if let pair, pair.rank < bestRank { bestRank = pair.rank; best = i }
            }
            if best < 0 { break }
            symbols[best] = Int(pairs[best]!.merged)
            symbols.remove(at: best + 1)
            pairs.remove(at: best)
            if best > 0 { pairs[best - 1] = merge(symbols[best - 1], symbols[best]) }
            if best < pairs.count { pairs[best] = merge(symbols[best], symbols[best + 1]) }
        }
    }

    /// The same merge order in O(n log n): a min-heap of (rank, position) over a doubly linked list of
    /// symbols. Entries made stale by a neighbouring merge are recognised when popped and skipped.
    /// symbols: [n] token ids, replaced by the merged ids
    func mergePairsWithQueue(_ symbols: inout [Int]) {
        let n = symbols.count
        guard n > 1 else { return }
        var ids = symbols
        var previous = (0..<n).map { $0 - 1 }   // -1: none
        var next = (0..<n).map { $0 + 1 }       // n: none
        var alive = [Bool](repeating: true, count: n)
        var heap = PairHeap()
        for i in 0..<(n - 1) {
            if let m = merge(ids[i], ids[i + 1]) { heap.push(rank: m.rank, position: i) }
        }
        while let (rank, position) = heap.pop() {
            let right = next[position]
            guard alive[position], right < n, let m = merge(ids[position], ids[right]), m.rank == rank else { continue }
            ids[position] = Int(m.merged)
            alive[right] = false
            next[position] = next[right]
            if next[right] < n { previous[next[right]] = position }
            if previous[position] >= 0, let left = merge(ids[previous[position]], ids[position]) {
                heap.push(rank: left.rank, position: previous[position])
            }
            if next[position] < n, let following = merge(ids[position], ids[next[position]]) {
                heap.push(rank: following.rank, position: position)
            }
        }
        symbols = (0..<n).filter { alive[$0] }.map { ids[$0] }
    }
}

/// A binary min-heap of merge candidates ordered by rank, then position (leftmost first on ties).
private struct PairHeap {
    private var keys = [UInt64]()   // rank << 32 | position: one comparison orders both

    mutating func push(rank: Int32, position: Int) {
        keys.append(UInt64(UInt32(rank)) << 32 | UInt64(position))
        var child = keys.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard keys[child] < keys[parent] else { break }
            keys.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (rank: Int32, position: Int)? {
        guard let top = keys.first else { return nil }
        let last = keys.removeLast()
        if !keys.isEmpty {
            keys[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < keys.count && keys[left] < keys[smallest] { smallest = left }
                if right < keys.count && keys[right] < keys[smallest] { smallest = right }
                if smallest == parent { break }
                keys.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return (Int32(top >> 32), Int(top & 0xFFFF_FFFF))
    }
}


/// SentencePiece's name for a raw byte token, e.g. "<0x0A>".
func byteFallbackToken(_ byte: Int) -> String {
    let hex = String(byte, radix: 16, uppercase: true)
    return "<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"
}

private func mergeError(_ file: String, _ rank: Int, _ entry: Any, _ problem: String) -> PruneDistError {
    PruneDistError(.format, "\(file): model.merges[\(rank)] = \(entry) has \(problem)")
}

private func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
    var s = String()
    s.unicodeScalars.append(contentsOf: scalars)
    return s
}

/// An integer from JSONSerialization output .
func integerFromJSON(_ value: Any) -> Int? {
    if let i = value as? Int { return i }
    if let d = value as? Double, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
    return nil
}

func doubleFromJSON(_ value: Any) -> Double? {
    if value is NSNull { return nil }
    if let d = value as? Double { return d }
    if let i = value as? Int { return Double(i) }
    return nil
}
