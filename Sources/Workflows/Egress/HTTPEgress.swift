import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Finds the addresses of a host name. `http` nodes use `SystemResolver`; tests inject others.
public protocol HostResolving: Sendable {
    /// Every address of `host` (a name, or a numeric address in any form the system accepts:
    /// `127.0.0.1`, `::1`, `2130706433`, `0x7f.1`). Throws when the name does not resolve.
    func addresses(of host: String) async throws -> [IPAddress]
}

/// getaddrinfo(3), run on NIO's blocking-I/O thread pool. glibc reads the classic IPv4
/// spellings (`2130706433`, `0x7f.1`, `017700000001`) as addresses, so the policy sees the
/// address they mean.
public struct SystemResolver: HostResolving {
    public init() {}

    public func addresses(of host: String) async throws -> [IPAddress] {
        try await NIOThreadPool.singleton.runIfActive { try Self.lookup(host) }
    }

    /// Why a name does not resolve.
    public struct LookupError: Error, Sendable, CustomStringConvertible {
        public var host: String
        public var reason: String
        public var description: String { "cannot resolve \(host): \(reason)" }
    }

    static func lookup(_ host: String) throws -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else { throw LookupError(host: host, reason: String(cString: gai_strerror(status))) }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let current = entry {
            let info = current.pointee
            if let address = info.ai_addr {
                switch Int32(address.pointee.sa_family) {
                case AF_INET:
                    let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin_addr) { Array($0) } }
                    if let value = IPAddress(bytes: bytes), !addresses.contains(value) { addresses.append(value) }
                case AF_INET6:
                    let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) } }
                    if let value = IPAddress(bytes: bytes), !addresses.contains(value) { addresses.append(value) }
                default: break
                }
            }
            entry = info.ai_next
        }
        guard !addresses.isEmpty else { throw LookupError(host: host, reason: "no IPv4 or IPv6 address") }
        return addresses
    }
}

/// How `http` nodes reach the network: each request's host is resolved once, every address is
/// checked against the `EgressPolicy`, and the connection goes to the checked address (the
/// HTTP client gets it as a DNS override, so it never resolves the name again; TLS still
/// verifies the name). Redirects are never followed by the client: the node follows them
/// itself, when its definition allows, checking every hop the same way.
struct HTTPEgress: Sendable {
    let policy: EgressPolicy
    let resolver: any HostResolving

    /// The address to connect to for `url`, checked; `egressRefused` otherwise.
    func checkedAddress(for url: URL, shown: String) async throws -> IPAddress {
        guard var host = url.host, !host.isEmpty else {
            throw WorkflowNodeError(code: .invalidValue, message: "\(shown) has no host")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let addresses: [IPAddress]
        do {
            addresses = try await resolver.addresses(of: host)
        } catch let error as SystemResolver.LookupError {
            throw WorkflowNodeError(code: .httpRequest, message: "\(shown) failed: \(error.description)")
        }
        if policy.allows(host: host) { return addresses[0] }
        for address in addresses {
            if let range = policy.refusal(for: address) {
                // A numeric host is the caller's own text: naming the address it means helps.
                // What a name resolves to inside the network is not the caller's to learn.
                let numeric = host.allSatisfy { $0.isHexDigit || $0 == "." || $0 == ":" || $0 == "x" || $0 == "X" }
                throw WorkflowNodeError(
                    code: .egressRefused,
                    message: "\(shown) refused: host \(host) is \(range)" + (numeric && host != address.description ? " (\(address))" : "")
                        + "; the server's egress allow-list (--egress-allow, FLOWD_EGRESS_ALLOW) does not name it")
            }
        }
        return addresses[0]
    }

    /// Runs `body` with a client that connects `url`'s host to `address` only, and follows no
    /// redirect; the client is shut down afterwards.
    func withClient<T: Sendable>(host: String, address: IPAddress,
                                 _ body: (HTTPClient) async throws -> T) async throws -> T {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.dnsOverride = [host: address.description]
        if host.hasPrefix("[") && host.hasSuffix("]") { configuration.dnsOverride[String(host.dropFirst().dropLast())] = address.description }
        let client = HTTPClient(eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton), configuration: configuration)
        do {
            let result = try await body(client)
            try? await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
