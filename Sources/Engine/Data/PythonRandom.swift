/// Python's `random` module generator (MT19937 seeded as `random.seed(n)` does), so that calibration
/// windows drawn here are the ones the reference Python tools drew with the same seed, on every machine.
/// Only what window sampling needs: `seed(n)` for a non-negative integer and `randbelow(n)`.
struct PythonRandom {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// `random.seed(seed)`: the integer's 32-bit words, least significant first, feed init_by_array.
    init(seed: UInt64) {
        let low = UInt32(truncatingIfNeeded: seed), high = UInt32(truncatingIfNeeded: seed >> 32)
        initByArray(high == 0 ? [low] : [low, high])
    }

    private mutating func initGenrand(_ s: UInt32) {
        state[0] = s
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
        index = 624
    }

    /// key: [keyLength] 32-bit words
    private mutating func initByArray(_ key: [UInt32]) {
        initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(624, key.count) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1; j += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<623 {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
        }
        state[0] = 0x8000_0000
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) == 0 ? 0 : 0x9908_B0DF)
        }
        index = 0
    }

    mutating func nextUInt32() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `random.getrandbits(k)` for 1 ≤ k ≤ 64: 32-bit words fill the result least significant first.
    mutating func bits(_ k: Int) -> UInt64 {
        if k <= 32 { return UInt64(nextUInt32() >> UInt32(32 - k)) }
        let low = UInt64(nextUInt32())
        let high = UInt64(nextUInt32() >> UInt32(64 - k))
        return high << 32 | low
    }

    /// `random._randbelow(n)`: uniform in 0 ..< n by rejection on the bit length of n.
    /// `random.randint(a, b)` is `a + randbelow(b - a + 1)`.
    mutating func randbelow(_ n: Int) -> Int {
        precondition(n > 0)
        let k = Int.bitWidth - n.leadingZeroBitCount
        while true {
            let r = bits(k)
            if r < UInt64(n) { return Int(r) }
        }
    }
}
