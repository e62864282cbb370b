import Crypto
import Foundation

/// An API key as stored: who it belongs to, never the secret itself (only its SHA-256).
///
/// A key belongs to one tenant and, like a Dify app key, to one workflow.
public struct APIKeyRecord: Sendable, Equatable, Codable {
    /// The public part of the key, used to find it; safe to log and to show in lists.
    public var id: String
    public var tenant: String
    public var workflow: String
    public var createdAt: Date
    public var revokedAt: Date?

    public init(id: String, tenant: String, workflow: String, createdAt: Date, revokedAt: Date? = nil) {
        self.id = id
        self.tenant = tenant
        self.workflow = workflow
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// A key just created: the only moment its full text exists outside the caller's hands.
public struct IssuedAPIKey: Sendable, Equatable {
    public var record: APIKeyRecord
    /// `flowd_<id>_<secret>`, to give to the client once.
    public var key: String
}

/// A key as stored: its record and the SHA-256 of its secret (lowercase hex).
public struct StoredAPIKey: Sendable, Equatable {
    public var record: APIKeyRecord
    public var secretSHA256: String

    public init(record: APIKeyRecord, secretSHA256: String) {
        self.record = record
        self.secretSHA256 = secretSHA256
    }

    /// Whether `secret` is this key's secret and the key is not revoked (constant-time compare
    /// of the digests, without building hex text on the hot path).
    func accepts(secret: String) -> Bool {
        guard record.revokedAt == nil else { return false }
        let digest = SHA256.hash(data: Array(secret.utf8))
        let expected = Array(secretSHA256.utf8)
        guard expected.count == 64 else { return false }
        var difference: UInt8 = 0
        var index = 0
        for byte in digest {
            difference |= Hex.digit(byte >> 4) ^ expected[index]
            difference |= Hex.digit(byte & 0x0F) ^ expected[index + 1]
            index += 2
        }
        return difference == 0
    }
}

/// Storage of API keys. Only hashes of secrets are kept.
public protocol APIKeyStore: Sendable {
    func createKey(tenant: String, workflow: String, now: Date) async throws -> IssuedAPIKey
    /// Every key, or a tenant's keys, oldest first.
    func listKeys(tenant: String?) async throws -> [APIKeyRecord]
    /// Revokes a key; false when there is no such key (revoking twice is true).
    func revokeKey(id: String, now: Date) async throws -> Bool
    /// The stored key with this id, revoked or not.
    func storedKey(id: String) async throws -> StoredAPIKey?
}

extension APIKeyStore {
    /// The key's record when `presented` is a valid, unrevoked key; nil for every other case
    /// (missing, malformed, unknown, wrong secret, revoked), so callers answer all alike.
    /// Reads the store every time; `Authenticator` caches.
    public func authenticate(_ presented: String) async throws -> APIKeyRecord? {
        guard let (id, secret) = APIKeyFormat.parse(presented), let stored = try await storedKey(id: id),
              stored.accepts(secret: secret) else { return nil }
        return stored.record
    }
}

/// The format and hashing of API keys: `flowd_` + 12 hex characters of id + `_` + 64 hex
/// characters of secret (32 random bytes). The id finds the row; the secret's SHA-256 is
/// compared in constant time.
public enum APIKeyFormat {
    public static let prefix = "flowd_"

    static func generate() -> (id: String, secret: String) {
        var generator = SystemRandomNumberGenerator()
        let id = Hex.encode((0..<6).map { _ in UInt8.random(in: 0...255, using: &generator) })
        let secret = Hex.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
        return (id, secret)
    }

    static func key(id: String, secret: String) -> String { "\(prefix)\(id)_\(secret)" }

    /// Splits a presented key into id and secret; nil when it is not of the flowd format.
    /// Works on the bytes (it runs on every call).
    static func parse(_ key: String) -> (id: String, secret: String)? {
        var key = key
        return key.withUTF8 { bytes -> (String, String)? in
            let prefixLength = 6, idLength = 12, secretLength = 64
            guard bytes.count == prefixLength + idLength + 1 + secretLength,
                  bytes.starts(with: prefix.utf8), bytes[prefixLength + idLength] == UInt8(ascii: "_") else { return nil }
            let id = UnsafeBufferPointer(rebasing: bytes[prefixLength..<(prefixLength + idLength)])
            let secret = UnsafeBufferPointer(rebasing: bytes[(prefixLength + idLength + 1)...])
            guard id.allSatisfy(isHex), secret.allSatisfy(isHex) else { return nil }
            return (String(decoding: id, as: UTF8.self), String(decoding: secret, as: UTF8.self))
        }
    }

    static func hash(secret: String) -> String {
        Hex.encode(digest: SHA256.hash(data: Array(secret.utf8)))
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }
}

/// Lowercase hexadecimal text of bytes (no `String(format:)`: it is slow on hot paths).
enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// The lowercase hex digit of a value 0...15.
    @inline(__always)
    static func digit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x57 + value }

    static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        if let text = bytes.withContiguousStorageIfAvailable({ encode(UnsafeRawBufferPointer($0)) }) { return text }
        return Array(bytes).withUnsafeBytes { encode($0) }
    }

    /// A digest's bytes, read in place (a digest is a Sequence that underestimates its count,
    /// which made the generic path grow its buffer four times).
    static func encode(digest: some ContiguousBytes) -> String {
        digest.withUnsafeBytes { encode($0) }
    }

    static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { text in
            for (index, byte) in bytes.enumerated() {
                text[2 * index] = digits[Int(byte >> 4)]
                text[2 * index + 1] = digits[Int(byte & 0x0F)]
            }
            return bytes.count * 2
        }
    }
}
