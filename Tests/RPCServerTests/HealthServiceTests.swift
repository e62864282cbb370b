import Codec
import Testing
@testable import RPCServer

@Suite("HealthService statuses")
struct HealthServiceTests {
    @Test("the server as a whole (service \"\") follows setStatus and markAllNotServing, like any named service")
    func overallStatus() {
        let health = HealthService()
        #expect(health.status(ofService: "") == .serving)
        #expect(health.status(ofService: "flowd.v1.Workflows") == nil)
        health.setStatus(.notServing, forService: "")
        health.setStatus(.serving, forService: "flowd.v1.Workflows")
        #expect(health.status(ofService: "") == .notServing)
        #expect(health.status(ofService: "flowd.v1.Workflows") == .serving)
        health.setStatus(.serving, forService: "")
        #expect(health.status(ofService: "") == .serving)
        health.markAllNotServing()
        #expect(health.status(ofService: "") == .notServing)
        #expect(health.status(ofService: "flowd.v1.Workflows") == .notServing)
    }
}
