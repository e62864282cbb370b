import Engine
import Foundation
import Testing

@Suite("Run payloads")
struct ModelTests {
    @Test("a run's payload decodes back to the same record, with every kind of string and absent fields")
    func payloadRoundTrip() throws {
        let t = Date(timeIntervalSince1970: 1_800_000_000.123)
        let full = RunRecord(
            id: "r\"1\\", tenant: "t\n\t\r\u{01}", workflow: "wf ☺ 🙂", workflowVersion: "sha256:ab", state: .partialSucceeded,
            inputsJSON: #"{"a":"b\"c"}"#, outputsJSON: "{}", error: "boom\u{1F}", trigger: .apiStreaming, transport: .rest,
            user: "", idempotencyKey: "k", createdAt: t, startedAt: t.addingTimeInterval(1), finishedAt: t.addingTimeInterval(2),
            attempt: 3, lastSequence: 9_000_000_000, totalSteps: 7, totalTokens: 11, leaseOwner: "p/1",
            leaseExpiresAt: t.addingTimeInterval(30), lastProgressAt: t.addingTimeInterval(1.5), stopRequested: true,
            traceContext: RunTraceContext(traceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", traceState: "a=1"))
        let sparse = RunRecord(id: "r2", tenant: "t", workflow: "wf", workflowVersion: "1", state: .scheduled, inputsJSON: "{}",
                               trigger: .apiAsync, transport: .grpc, user: "u", createdAt: t)
        for record in [full, sparse] {
            let decoded = try RunRecord.jsonDecoder.decode(RunRecord.self, from: Data(record.jsonPayload().utf8))
            #expect(decoded == record)
            // The same text as the Codable encoder's, up to number formatting.
            let reference = try JSONSerialization.jsonObject(with: RunRecord.jsonEncoder.encode(record)) as? NSDictionary
            let ours = try JSONSerialization.jsonObject(with: Data(record.jsonPayload().utf8)) as? NSDictionary
            #expect(ours == reference)
        }
    }
}
