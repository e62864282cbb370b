import Engine
import Foundation
import Synchronization
import Testing
@testable import Workflows

/// Resolves names from a table (what a hostile DNS answer would say), numeric hosts as the
/// system does.
struct TableResolver: HostResolving {
    let table: [String: [String]]
    func addresses(of host: String) async throws -> [IPAddress] {
        if let entries = table[host] { return entries.compactMap(IPAddress.init) }
        return try await SystemResolver().addresses(of: host)
    }
}

@Suite("Egress policy of http nodes: special-purpose addresses refused after resolution, redirects checked hop by hop")
struct EgressTests {
    @Test("the policy names the range of loopback, private, link-local, CGNAT, multicast and metadata addresses, IPv4 inside IPv6 included",
          arguments: [
              ("127.0.0.1", "a loopback address"), ("10.1.2.3", "a private address"), ("172.16.0.1", "a private address"),
              ("192.168.1.1", "a private address"), ("169.254.169.254", "a link-local address (cloud metadata lives there)"),
              ("100.100.100.200", "a carrier-grade NAT address"), ("224.0.0.1", "a multicast address"),
              ("0.0.0.0", "a 'this network' address"), ("::1", "a loopback address"), ("::", "the unspecified address"),
              ("fe80::1", "a link-local address"), ("fd00:ec2::254", "a unique-local (private) address"),
              ("ff02::1", "a multicast address"),
              ("::ffff:127.0.0.1", "a loopback address (inside an IPv6 address)"),
              ("::ffff:169.254.169.254", "a link-local address (cloud metadata lives there) (inside an IPv6 address)"),
              ("64:ff9b::a9fe:a9fe", "a link-local address (cloud metadata lives there) (inside an IPv6 address)"),
              ("2002:7f00:1::", "a loopback address (inside an IPv6 address)"),
          ])
    func ranges(address: String, range: String) throws {
        let parsed = try #require(IPAddress(address))
        #expect(EgressPolicy().refusal(for: parsed) == range)
    }

    @Test("public addresses pass", arguments: ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
    func publicAddresses(address: String) throws {
        #expect(EgressPolicy().refusal(for: try #require(IPAddress(address))) == nil)
    }

    @Test("the allow-list takes networks, single addresses and host names, and refuses anything else")
    func allowList() throws {
        let policy = try EgressPolicy(allow: ["10.0.0.0/8", "127.0.0.1", "::1", "localhost", "*.svc.internal"])
        #expect(policy.refusal(for: try #require(IPAddress("10.200.1.1"))) == nil)
        #expect(policy.refusal(for: try #require(IPAddress("127.0.0.1"))) == nil)
        #expect(policy.refusal(for: try #require(IPAddress("::ffff:127.0.0.1"))) == nil)
        #expect(policy.refusal(for: try #require(IPAddress("127.0.0.2"))) == "a loopback address")
        #expect(policy.refusal(for: try #require(IPAddress("::1"))) == nil)
        #expect(policy.refusal(for: try #require(IPAddress("169.254.169.254"))) != nil)
        #expect(policy.allows(host: "LOCALHOST") && policy.allows(host: "a.svc.internal") && !policy.allows(host: "svc.internal.evil"))
        for bad in ["10.0.0.0/33", "http://x/", "a b", "10.0.0.0/x"] {
            #expect(throws: EgressPolicyError.self) { try EgressPolicy(allow: [bad]) }
        }
        #expect(EgressPolicy.entries(environment: "127.0.0.1/32, ::1 localhost") == ["127.0.0.1/32", "::1", "localhost"])
    }

    @Test("the system resolver reads the numeric IPv4 spellings as glibc does: 2130706433 and 0x7f.1 are 127.0.0.1")
    func numericSpellings() async throws {
        #expect(try await SystemResolver().addresses(of: "2130706433") == [IPAddress("127.0.0.1")!])
        #expect(try await SystemResolver().addresses(of: "0x7f.1") == [IPAddress("127.0.0.1")!])
        #expect(try await SystemResolver().addresses(of: "017700000001") == [IPAddress("127.0.0.1")!])
    }

    static let call = """
        name: fetch
        inputs: { url: string }
        nodes:
          - id: call
            kind: http
            config: { url: "{{inputs.url}}" }
          - id: done
            kind: end
            needs: call
            config: { outputs: { reply: "{{call.body}}" } }
        """

    @Test("without an allow-list, a loopback server is refused by every spelling, and never receives the request",
          arguments: ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost"])
    func loopbackRefused(host: String) async throws {
        let server = try await LoopbackHTTPServer.start { _ in .json(#"{"aws_secret": "LEAKED"}"#) }
        defer { Task { await server.shutdown() } }
        let log = EventLog()
        let result = try await runWorkflow(Self.call, inputs: #"{"url": "http://\#(host):\#(server.port)/latest?token=abc"}"#, log: log)
        #expect(result.state == .failed)
        let error = try #require(result.error)
        #expect(error.contains("refused: host \(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) is a loopback address"))
        #expect(!error.contains("token=abc") && !error.contains("LEAKED"))
        #expect(server.requests.isEmpty)
        #expect(try log.finished("call")?.attempt == 1)  // refused calls are not retried
    }

    @Test("metadata and IPv6 loopback literals are refused before any connection", arguments: [
        ("http://169.254.169.254/latest/meta-data/", "a link-local address (cloud metadata lives there)"),
        ("http://[::1]:9/", "a loopback address"),
        ("http://[fd00:ec2::254]/", "a unique-local (private) address"),
        ("http://100.100.100.200/", "a carrier-grade NAT address"),
    ])
    func literalsRefused(url: String, range: String) async throws {
        let result = try await runWorkflow(Self.call, inputs: #"{"url": "\#(url)"}"#)
        #expect(result.state == .failed)
        #expect(result.error?.contains("is \(range)") == true, "\(result.error ?? "")")
    }

    @Test("a name that resolves to a metadata address is refused after resolution")
    func resolvedName() async throws {
        let resolver = TableResolver(table: ["innocent.example": ["93.184.216.34", "169.254.169.254"]])
        let result = try await runWorkflow(Self.call, inputs: #"{"url": "http://innocent.example/"}"#, resolver: resolver)
        #expect(result.error?.contains("refused: host innocent.example is a link-local address") == true, "\(result.error ?? "")")
    }

    @Test("an allow-listed name connects to the address that was checked, not to a second resolution")
    func pinnedAddress() async throws {
        let server = try await LoopbackHTTPServer.start { request in .json(#"{"host": "\#(request.headers["host"] ?? "")"}"#) }
        defer { Task { await server.shutdown() } }
        // The name resolves (once) to 127.0.0.1; the client must not look it up itself (it would fail).
        let resolver = TableResolver(table: ["service.flowd-test.invalid": ["127.0.0.1"]])
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try EgressPolicy(allow: ["127.0.0.1"])
        let result = try await runWorkflow(Self.call, inputs: #"{"url": "http://service.flowd-test.invalid:\#(server.port)/"}"#,
                                           configuration: configuration, resolver: resolver)
        #expect(result.state == .succeeded, "\(result.error ?? "")")
        #expect(try outputs(result)["reply"] == ["host": .string("service.flowd-test.invalid:\(server.port)")])
    }

    @Test("the issue's attack: an allowed server answering 302 to another loopback URL; redirects are off by default")
    func redirectOffByDefault() async throws {
        let secret = try await LoopbackHTTPServer.start { _ in .json(#"{"aws_secret": "LEAKED"}"#) }
        defer { Task { await secret.shutdown() } }
        let bouncer = try await LoopbackHTTPServer.start { _ in .redirect(to: "\(secret.baseURL)/file") }
        defer { Task { await bouncer.shutdown() } }
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try EgressPolicy(allow: ["127.0.0.1"])
        let log = EventLog()
        let result = try await runWorkflow(Self.call, inputs: #"{"url": "\#(bouncer.baseURL)/"}"#, configuration: configuration, log: log)
        #expect(result.state == .failed)
        #expect(result.error == "node 'call' failed: GET \(bouncer.baseURL)/ answered HTTP 302 Found (a redirect; this node does not follow redirects: set follow_redirects: true)")
        #expect(secret.requests.isEmpty)
        #expect(!log.events.contains { $0.payloadJSON.contains("LEAKED") })
    }

    @Test("with follow_redirects, every hop is checked again: a redirect from an allowed host to a refused one fails")
    func redirectHopChecked() async throws {
        let secret = try await LoopbackHTTPServer.start { _ in .json(#"{"aws_secret": "LEAKED"}"#) }
        defer { Task { await secret.shutdown() } }
        let bouncer = try await LoopbackHTTPServer.start { _ in .redirect(to: "http://127.0.0.1:\(secret.port)/file") }
        defer { Task { await bouncer.shutdown() } }
        // Only the name `allowed.flowd-test.invalid` is allowed; it resolves to loopback.
        let resolver = TableResolver(table: ["allowed.flowd-test.invalid": ["127.0.0.1"]])
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try EgressPolicy(allow: ["allowed.flowd-test.invalid"])
        let result = try await runWorkflow("""
            name: follow
            nodes:
              - id: call
                kind: http
                config: { url: "http://allowed.flowd-test.invalid:\(bouncer.port)/", follow_redirects: true }
              - id: done
                kind: end
                needs: call
                config: { outputs: { reply: "{{call.body}}" } }
            """, configuration: configuration, resolver: resolver)
        #expect(result.state == .failed)
        #expect(result.error?.contains("GET http://127.0.0.1:\(secret.port)/file refused: host 127.0.0.1 is a loopback address") == true,
                "\(result.error ?? "")")
        #expect(bouncer.requests.count == 1 && secret.requests.isEmpty)
    }

    @Test("with follow_redirects and both hops allowed, the redirect is followed (and credentials stay with their origin)")
    func redirectFollowed() async throws {
        let target = try await LoopbackHTTPServer.start { request in
            .json(#"{"authorization": "\#(request.headers["authorization"] ?? "none")"}"#)
        }
        defer { Task { await target.shutdown() } }
        let bouncer = try await LoopbackHTTPServer.start { _ in .redirect(to: "\(target.baseURL)/next") }
        defer { Task { await bouncer.shutdown() } }
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try EgressPolicy(allow: ["127.0.0.0/8"])
        let result = try await runWorkflow("""
            name: follow
            nodes:
              - id: call
                kind: http
                config:
                  url: "\(bouncer.baseURL)/"
                  follow_redirects: true
                  max_redirects: 2
                  headers: { authorization: "Bearer s3cr3t-value" }
              - id: done
                kind: end
                needs: call
                config: { outputs: { reply: "{{call.body}}" } }
            """, configuration: configuration)
        #expect(result.state == .succeeded, "\(result.error ?? "")")
        #expect(try outputs(result)["reply"] == ["authorization": "none"])
        #expect(bouncer.requests.first?.headers["authorization"] == "Bearer s3cr3t-value")
    }

    @Test("a redirect loop stops at max_redirects")
    func redirectLoop() async throws {
        let port = Mutex<Int>(0)
        let server = try await LoopbackHTTPServer.start { _ in .redirect(to: "http://127.0.0.1:\(port.withLock { $0 })/again") }
        defer { Task { await server.shutdown() } }
        port.withLock { $0 = server.port }
        var configuration = WorkflowRunnerConfiguration()
        configuration.egress = try EgressPolicy(allow: ["127.0.0.1"])
        let result = try await runWorkflow("""
            name: loop
            nodes:
              - id: call
                kind: http
                config: { url: "\(server.baseURL)/", follow_redirects: true, max_redirects: 3 }
              - id: done
                kind: end
                needs: call
                config: { outputs: { reply: "{{call.body}}" } }
            """, configuration: configuration)
        #expect(result.error?.hasSuffix("more than 3 redirects") == true, "\(result.error ?? "")")
        #expect(server.requests.count == 4)
    }
}
