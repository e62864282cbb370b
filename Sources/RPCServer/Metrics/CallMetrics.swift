import CoreMetrics
import NIOCore
import Prometheus
import Codec
import Synchronization

/// `flowd_grpc_request_duration_seconds` of one method, kept by flowd rather than
/// swift-prometheus: a connection adds a pass's worth of calls at once (`CallMetricsBatch`),
/// where swift-prometheus' `Histogram` took a lock that every event loop shared once per call
/// (under load, the most contended lock of the server, with most of its futex calls).
final class MethodDurationHistogram: Sendable {
    let method: String
    /// Upper bounds in nanoseconds, ascending.
    let bounds: [Int64]
    private let state: Mutex<State>

    struct State {
        /// Calls per bucket (not cumulative); the last counts those above every bound.
        var counts: [Int]
        var sumNanoseconds: Int64 = 0
        var count = 0
    }

    init(method: String, bounds: [Int64]) {
        self.method = method
        self.bounds = bounds
        state = Mutex(State(counts: Array(repeating: 0, count: bounds.count + 1)))
    }

    /// The bucket of a call that took `nanoseconds`.
    func bucket(of nanoseconds: Int64) -> Int {
        bounds.firstIndex { nanoseconds <= $0 } ?? bounds.count
    }

    /// Adds calls counted per bucket (as `bucket(of:)` numbers them).
    func add(counts: [Int], sumNanoseconds: Int64, count: Int) {
        state.withLock { state in
            for index in counts.indices { state.counts[index] += counts[index] }
            state.sumNanoseconds += sumNanoseconds
            state.count += count
        }
    }

    /// The series in the text exposition format, as swift-prometheus writes a histogram.
    func emit(name: String, into buffer: inout [UInt8]) {
        let snapshot = state.withLock { $0 }
        let labels = "method=\"\(Self.escaped(method))\""
        var cumulative = 0
        for (index, bound) in bounds.enumerated() {
            cumulative += snapshot.counts[index]
            buffer.append(contentsOf: "\(name)_bucket{\(labels),le=\"\(Duration.nanoseconds(bound).bucketRepresentation)\"} \(cumulative)\n".utf8)
        }
        buffer.append(contentsOf: "\(name)_bucket{\(labels),le=\"+Inf\"} \(snapshot.count)\n".utf8)
        buffer.append(contentsOf: "\(name)_sum{\(labels)} \(Duration.nanoseconds(snapshot.sumNanoseconds).bucketRepresentation)\n".utf8)
        buffer.append(contentsOf: "\(name)_count{\(labels)} \(snapshot.count)\n".utf8)
    }

    private static func escaped(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}

/// Every method's `MethodDurationHistogram` of one server, in the order they were made;
/// `ServerMetrics.scrape` writes them after the registry's series.
public final class RequestDurationHistograms: Sendable {
    let name: String
    let bounds: [Int64]
    private let histograms = Mutex<[MethodDurationHistogram]>([])

    init(name: String, buckets: [Duration]) {
        self.name = name
        bounds = buckets.map { TimeAmount($0).nanoseconds }
    }

    func make(method: String) -> MethodDurationHistogram {
        let histogram = MethodDurationHistogram(method: method, bounds: bounds)
        histograms.withLock { $0.append(histogram) }
        return histogram
    }

    func emit(into buffer: inout [UInt8]) {
        let all = histograms.withLock { $0 }
        guard !all.isEmpty else { return }
        buffer.append(contentsOf: "# TYPE \(name) histogram\n".utf8)
        for histogram in all { histogram.emit(name: name, into: &buffer) }
    }
}

/// The calls a connection ended since its last flush, added up by method: a flush costs each
/// method one counter increment per status code seen and one lock for its histogram, instead
/// of both per call. Confined to the connection's event loop; the connection flushes it before
/// it writes (a client that has its response finds its call counted) and when it closes.
final class CallMetricsBatch {
    private struct Entry {
        let metrics: MethodMetrics
        let histogram: MethodDurationHistogram
        var codes: [Int]
        var buckets: [Int]
        var sumNanoseconds: Int64 = 0
        var count = 0
    }

    /// One entry per method seen on the connection (kept, zeroed, between flushes).
    private var entries: [Entry] = []
    private var pending = false

    /// Counts a call of `metrics` that started at `start` and ended now with `code`.
    func record(_ metrics: MethodMetrics, _ code: StatusCode, since start: NIODeadline) {
        record(metrics, code, nanoseconds: (NIODeadline.now() - start).nanoseconds)
    }

    /// Counts a call of `metrics` that ended with `code` after `nanoseconds`.
    func record(_ metrics: MethodMetrics, _ code: StatusCode, nanoseconds: Int64) {
        guard let histogram = metrics.histogram else {
            metrics.record(code, nanoseconds: nanoseconds)
            return
        }
        let index: Int
        if let found = entries.firstIndex(where: { $0.metrics === metrics }) {
            index = found
        } else {
            entries.append(Entry(metrics: metrics, histogram: histogram,
                                 codes: Array(repeating: 0, count: MethodMetrics.codeCount),
                                 buckets: Array(repeating: 0, count: histogram.bounds.count + 1)))
            index = entries.count - 1
        }
        entries[index].codes[MethodMetrics.codeIndex(code)] += 1
        entries[index].buckets[histogram.bucket(of: nanoseconds)] += 1
        entries[index].sumNanoseconds += nanoseconds
        entries[index].count += 1
        pending = true
    }

    /// Hands what was counted to the server's series.
    func flush() {
        guard pending else { return }
        pending = false
        for index in entries.indices where entries[index].count > 0 {
            entries[index].metrics.add(codes: entries[index].codes)
            entries[index].histogram.add(counts: entries[index].buckets, sumNanoseconds: entries[index].sumNanoseconds,
                                         count: entries[index].count)
            for code in entries[index].codes.indices { entries[index].codes[code] = 0 }
            for bucket in entries[index].buckets.indices { entries[index].buckets[bucket] = 0 }
            entries[index].sumNanoseconds = 0
            entries[index].count = 0
        }
    }
}
