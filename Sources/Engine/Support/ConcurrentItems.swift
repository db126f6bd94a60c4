import Dispatch
import Foundation

/// Mutates every element of `items` on `threads` threads, thread t taking elements t, t + threads, …, so an
/// element's work is the same whatever the thread count (pruning's per-sequence forward keeps its bits).
/// - body: (element index, thread index, element); must touch nothing shared but what it only reads
public func forEachConcurrently<Item>(_ items: inout [Item], threads: Int, _ body: (Int, Int, inout Item) -> Void) {
    let threads = max(1, min(threads, items.count))
    if threads == 1 {
        for i in items.indices { body(i, 0, &items[i]) }
        return
    }
    withoutActuallyEscaping(body) { body in
        items.withUnsafeMutableBufferPointer { buffer in
            // Distinct threads write distinct elements, and concurrentPerform returns after every thread is done,
            // so neither the pointer nor the closure outlives this call.
            let shared = UncheckedSendable((base: buffer.baseAddress!, count: buffer.count, body: body))
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let (base, count, body) = shared.value
                for i in stride(from: t, to: count, by: threads) { body(i, t, &base[i]) }
            }
        }
    }
}

/// A value handed to other threads under a guarantee the compiler cannot check (stated where it is made).
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Runs body(0) … body(count − 1) each on a thread of its own and returns when all are done. Unlike a dispatch pool,
/// every body gets a thread even when there are more bodies than cores, so bodies may wait for each other.
public func onThreadsOfTheirOwn(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    guard count > 1 else { if count == 1 { body(0) }; return }
    let done = DispatchGroup()
    for index in 0..<count {
        done.enter()
        Thread.detachNewThread {
            body(index)
            done.leave()
        }
    }
    done.wait()
}
