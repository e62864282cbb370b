import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, as bytes (4 or 16).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// A numeric address in its standard text form (`127.0.0.1`, `::1`; brackets allowed).
    /// Other IPv4 spellings (`2130706433`, `0x7f.1`) are not addresses here: they reach the
    /// policy through the resolver, which reads them as glibc does.
    public init?(_ text: String) {
        var text = text
        if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.bytes = withUnsafeBytes(of: v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.bytes = withUnsafeBytes(of: v6) { Array($0) }
            return
        }
        return nil
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// The IPv4 address an IPv6 address carries (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
    /// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`), else nil.
    public var embeddedIPv4: IPAddress? {
        guard bytes.count == 16 else { return nil }
        let prefix = Array(bytes[0..<12])
        if prefix == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] || prefix == [UInt8](repeating: 0, count: 12) {
            // ::/96 also holds :: and ::1, which are checked as IPv6 first.
            return IPAddress(bytes: Array(bytes[12..<16]))
        }
        if prefix == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] { return IPAddress(bytes: Array(bytes[12..<16])) }
        if bytes[0] == 0x20 && bytes[1] == 0x02 { return IPAddress(bytes: Array(bytes[2..<6])) }
        return nil
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = isIPv4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(cString: buffer)
    }
}

/// A network: an address and a prefix length (`10.0.0.0/8`, `fe80::/10`).
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let maximum = address.bytes.count * 8
        var length = maximum
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maximum).contains(value) else { return nil }
            length = value
        }
        self.address = address
        self.prefixLength = length
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        guard candidate.bytes.count == address.bytes.count else { return false }
        var remaining = prefixLength
        for (a, b) in zip(address.bytes, candidate.bytes) where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if a & mask != b & mask { return false }
            remaining -= bits
        }
        return true
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Which addresses `http` nodes may reach. Every address a host resolves to is checked; an
/// address in a special-purpose range (loopback, private, link-local and cloud metadata,
/// CGNAT, multicast, reserved, documentation, ...) is refused unless the allow-list names its
/// network or the host. The server's `--egress-allow CIDR_OR_HOST` (env `FLOWD_EGRESS_ALLOW`)
/// fills the list.
public struct EgressPolicy: Sendable, Equatable {
    /// Networks reachable even though they are special-purpose.
    public private(set) var allowedNetworks: [IPNetwork] = []
    /// Host names (lower case) reachable whatever they resolve to; `*.example.internal`
    /// names the subdomains of `example.internal`.
    public private(set) var allowedHosts: [String] = []

    /// Nothing special-purpose allowed.
    public init() {}

    /// `entries`: CIDRs (`10.1.0.0/16`), single addresses (`127.0.0.1`, `::1`) and host names
    /// (`localhost`, `*.svc.internal`). Throws on an entry that is none of them.
    public init(allow entries: [String]) throws(EgressPolicyError) {
        for raw in entries {
            let entry = raw.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty { continue }
            if let network = IPNetwork(entry) {
                allowedNetworks.append(network)
            } else if entry.contains("/") || !Self.isHostPattern(entry) {
                throw EgressPolicyError(entry: entry)
            } else {
                allowedHosts.append(entry.lowercased())
            }
        }
    }

    /// Splits `FLOWD_EGRESS_ALLOW`: entries separated by commas or white space.
    public static func entries(environment value: String) -> [String] {
        value.split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
    }

    /// Whether `host` itself is on the list.
    public func allows(host: String) -> Bool {
        let host = host.lowercased()
        return allowedHosts.contains { pattern in
            if pattern.hasPrefix("*.") { return host.hasSuffix(pattern.dropFirst(1)) }
            return pattern == host
        }
    }

    /// Why `address` may not be reached, or nil when it may (public, or allowed).
    public func refusal(for address: IPAddress) -> String? {
        if allowedNetworks.contains(where: { $0.contains(address) }) { return nil }
        guard let range = Self.specialRange(address) else { return nil }
        if let embedded = address.embeddedIPv4, allowedNetworks.contains(where: { $0.contains(embedded) }) { return nil }
        return range
    }

    /// The name of the special-purpose range `address` falls in (IPv4 inside IPv6 included).
    static func specialRange(_ address: IPAddress) -> String? {
        for (network, name) in address.isIPv4 ? ipv4Ranges : ipv6Ranges where network.contains(address) {
            return name
        }
        if let embedded = address.embeddedIPv4, let name = specialRange(embedded) {
            return name + " (inside an IPv6 address)"
        }
        return nil
    }

    private static let ipv4Ranges: [(IPNetwork, String)] = [
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (cloud metadata lives there)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    ].map { (IPNetwork($0.0)!, $0.1) }

    private static let ipv6Ranges: [(IPNetwork, String)] = [
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("100::/64", "a discard address"),
        ("2001::/23", "an IETF protocol address"),
        ("2001:db8::/32", "a documentation address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    ].map { (IPNetwork($0.0)!, $0.1) }

    private static func isHostPattern(_ text: String) -> Bool {
        var name = text[...]
        if name.hasPrefix("*.") { name = name.dropFirst(2) }
        return !name.isEmpty && name.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == ".")
        }
    }
}

/// An `--egress-allow` entry that is neither a network, an address nor a host name.
public struct EgressPolicyError: Error, Sendable, CustomStringConvertible {
    public var entry: String
    public var description: String {
        "egress allow-list entry '\(entry)' is not a CIDR (10.0.0.0/8), an address (127.0.0.1, ::1) or a host name"
    }
}
