import Codec
import Testing
@testable import RPCServer

@Suite("Call metrics batched per connection")
struct CallMetricsTests {
    private func sample(_ text: String, _ series: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.map { String($0.dropFirst(series.count + 1)) }
    }

    @Test("a batch reaches the series at its flush: cumulative buckets, sum, count and codes as if recorded one by one")
    func batchFlush() async {
        let metrics = ServerMetrics()
        let transport = TransportMetrics(factory: metrics.factory, durations: metrics.requestDurations)
        let method = transport.method("/a.B/C")
        let batch = CallMetricsBatch()
        batch.record(method, .ok, nanoseconds: 200_000)            // 0.2 ms
        batch.record(method, .ok, nanoseconds: 3_000_000)          // 3 ms
        batch.record(method, .notFound, nanoseconds: 2_000_000_000) // 2 s
        let labels = #"method="/a.B/C""#
        var text = String(decoding: await metrics.scrape(), as: UTF8.self)
        #expect(sample(text, "flowd_grpc_request_duration_seconds_count{\(labels)}") == "0")
        batch.flush()
        text = String(decoding: await metrics.scrape(), as: UTF8.self)
        #expect(text.contains("# TYPE flowd_grpc_request_duration_seconds histogram\n"))
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"0.0005\"}") == "1")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"0.005\"}") == "2")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"1.0\"}") == "2")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"2.5\"}") == "3")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"+Inf\"}") == "3")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_sum{\(labels)}") == "2.0032")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_count{\(labels)}") == "3")
        #expect(sample(text, #"flowd_grpc_requests_total{method="/a.B/C",code="OK"}"#) == "2")
        #expect(sample(text, #"flowd_grpc_requests_total{method="/a.B/C",code="NOT_FOUND"}"#) == "1")
        // A second flush with nothing new changes nothing; new calls add up.
        batch.flush()
        batch.record(method, .ok, nanoseconds: 1_000)
        batch.flush()
        text = String(decoding: await metrics.scrape(), as: UTF8.self)
        #expect(sample(text, "flowd_grpc_request_duration_seconds_count{\(labels)}") == "4")
        #expect(sample(text, "flowd_grpc_request_duration_seconds_bucket{\(labels),le=\"0.0005\"}") == "2")
        #expect(sample(text, #"flowd_grpc_requests_total{method="/a.B/C",code="OK"}"#) == "3")
    }
}
