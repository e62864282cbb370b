import Foundation
import Synchronization

/// Settings of the `Authenticator`.
public struct AuthenticatorConfiguration: Sendable {
    /// How long a key read from the store is trusted before it is read again: a key revoked by
    /// another process (`flowd keys revoke`) is refused at most this long after. A revocation
    /// through this process's `Authenticator.revoke` takes effect at once.
    public var cacheTTL: Duration = .seconds(2)
    /// Keys kept in memory at most; when full, the cache starts over.
    public var maxCachedKeys: Int = 10_000

    public init() {}
}

/// Why a call was not authenticated. Transports answer every case alike (gRPC: one
/// UNAUTHENTICATED), except where a protocol names them (Dify's three 401 messages).
public struct AuthenticationError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// No `authorization` header, or one without a space after the scheme.
        public static let missingCredentials = Code("missingCredentials")
        /// A scheme other than `Bearer` (case-insensitive).
        public static let wrongScheme = Code("wrongScheme")
        /// Malformed, unknown, wrong secret or revoked: never told apart.
        public static let invalidKey = Code("invalidKey")
    }

    public var code: Code

    public init(code: Code) {
        self.code = code
    }

    public var description: String { "authentication failed: \(code)" }
}

/// `Authenticator.cachedVerdict`: a verdict reached from memory, or `unknown` (ask the store).
public enum CachedAuthentication: Sendable {
    case accepted(APIKeyRecord)
    case refused(AuthenticationError)
    case unknown
}

/// The front door shared by every transport: parses `Authorization: Bearer <key>` and checks
/// the key against an in-memory cache of the store's keys, so that a call costs a dictionary
/// look-up and a constant-time compare instead of a database read.
///
/// A presented secret is hashed and compared in constant time with the stored hash until it
/// matches once; the cache entry then keeps that secret (in this process's memory only, for
/// the entry's life), and later calls compare with it in constant time instead of hashing
/// again (a SHA-256 was 5 % of a `GetRun`). A wrong secret is hashed every time. Only keys
/// that exist are cached (an unknown id reads the store each time).
///
/// Entries are read again ahead of time: a call that finds its key's entry in the second half
/// of its life starts one background read of the key and is answered from the entry meanwhile.
/// A key in use therefore never goes stale, and its calls never all wait for the store at once
/// (every call of the busy key took the slow path while an entry expired: 935 of 20,000
/// `GetRun` calls under callgrind). An entry is still never trusted longer than `cacheTTL`.
public final class Authenticator: Sendable {
    private struct Entry {
        let key: StoredAPIKey
        let fetchedAt: Date
        /// The secret that matched the stored hash, once one did.
        var verifiedSecret: [UInt8]?
        /// A background read of the key is under way.
        var refreshing = false
    }

    private let keys: any APIKeyStore
    private let clock: any EngineClock
    public let configuration: AuthenticatorConfiguration
    private let cache = Mutex<[String: Entry]>([:])
    /// `configuration.cacheTTL` in seconds, computed once.
    private let ttl: TimeInterval

    public init(keys: any APIKeyStore, clock: any EngineClock = SystemClock(),
                configuration: AuthenticatorConfiguration = AuthenticatorConfiguration()) {
        self.keys = keys
        self.clock = clock
        self.configuration = configuration
        let (seconds, attoseconds) = configuration.cacheTTL.components
        ttl = Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The key's record for an `authorization` header value (`Bearer <key>`, scheme
    /// case-insensitive, whitespace around the key ignored).
    public func authenticate(authorization header: String?) async throws -> APIKeyRecord {
        let key: String
        switch BearerCredentials.parse(header) {
        case .success(let parsed): key = parsed
        case .failure(.missingCredentials): throw AuthenticationError(code: .missingCredentials)
        case .failure(.wrongScheme): throw AuthenticationError(code: .wrongScheme)
        case .failure(.emptyKey): throw AuthenticationError(code: .invalidKey)
        }
        guard let record = try await authenticate(key: key) else { throw AuthenticationError(code: .invalidKey) }
        return record
    }

    /// What `authenticate(authorization:)` would answer, when it can be told without reading the
    /// store: a malformed header, or a key whose cache entry is fresh. Transports use it to
    /// admit or refuse a call from its headers without a task.
    public func cachedVerdict(authorization header: String?) -> CachedAuthentication {
        let presented: String
        switch BearerCredentials.parse(header) {
        case .success(let parsed): presented = parsed
        case .failure(.missingCredentials): return .refused(AuthenticationError(code: .missingCredentials))
        case .failure(.wrongScheme): return .refused(AuthenticationError(code: .wrongScheme))
        case .failure(.emptyKey): return .refused(AuthenticationError(code: .invalidKey))
        }
        guard let (id, secret) = APIKeyFormat.parse(presented) else { return .refused(AuthenticationError(code: .invalidKey)) }
        guard let cached = fresh(id: id) else { return .unknown }
        return accepts(cached, id: id, secret: secret) ? .accepted(cached.key.record) : .refused(AuthenticationError(code: .invalidKey))
    }

    /// The key's entry while it may be trusted (younger than `cacheTTL`); one past half its
    /// life starts a background read of the key (`refresh`), once.
    private func fresh(id: String) -> Entry? {
        let now = clock.now()
        let (entry, refresh) = cache.withLock { cache -> (Entry?, Bool) in
            guard let entry = cache[id] else { return (nil, false) }
            let age = now.timeIntervalSince(entry.fetchedAt)
            guard age < ttl, age >= 0 else { return (nil, false) }
            guard age >= ttl / 2, !entry.refreshing else { return (entry, false) }
            cache[id]!.refreshing = true
            return (entry, true)
        }
        if let entry, refresh {
            refreshes.withLock { refreshes in
                let token = refreshes.next
                refreshes.next += 1
                // Created under the lock, so the task's own removal (same lock) comes after.
                refreshes.running[token] = Task {
                    await self.refresh(id: id, replacing: entry.fetchedAt)
                    self.refreshes.withLock { _ = $0.running.removeValue(forKey: token) }
                }
            }
        }
        return entry
    }

    /// Reads the key again and replaces its entry fetched at `fetchedAt` (dropped when the key
    /// is gone). An entry replaced meanwhile (forgotten on a revocation here, then read again)
    /// is left alone: this read may predate it. The entry keeps its verified secret when the
    /// stored hash and the revocation did not change.
    private func refresh(id: String, replacing fetchedAt: Date) async {
        let now = clock.now()  // before the read: the new entry's age is never understated
        let stored: StoredAPIKey?
        do {
            stored = try await keys.storedKey(id: id)
        } catch {
            cache.withLock { cache in  // the next call tries again
                if cache[id]?.fetchedAt == fetchedAt { cache[id]?.refreshing = false }
            }
            return
        }
        cache.withLock { cache in
            guard let old = cache[id], old.fetchedAt == fetchedAt else { return }
            guard let stored else {
                cache[id] = nil
                return
            }
            let unchanged = stored.secretSHA256 == old.key.secretSHA256 && stored.record.revokedAt == old.key.record.revokedAt
            cache[id] = Entry(key: stored, fetchedAt: now, verifiedSecret: unchanged ? old.verifiedSecret : nil)
        }
    }

    /// Background reads started and not yet finished (tests wait for them).
    private let refreshes = Mutex<(next: UInt64, running: [UInt64: Task<Void, Never>])>((0, [:]))

    /// Waits until the background reads started so far have finished.
    func waitForRefreshes() async {
        for task in refreshes.withLock({ Array($0.running.values) }) { await task.value }
    }

    /// `entry.key.accepts(secret:)`, answered from the entry's verified secret when it has one;
    /// a secret that matches the hash is remembered in the entry.
    private func accepts(_ entry: Entry, id: String, secret: String) -> Bool {
        guard entry.key.record.revokedAt == nil else { return false }
        if let verified = entry.verifiedSecret { return Self.constantTimeEqual(verified, Array(secret.utf8)) }
        guard entry.key.accepts(secret: secret) else { return false }
        cache.withLock { cache in
            // Only into the same fetch of the key (a newer one is checked afresh).
            if cache[id]?.fetchedAt == entry.fetchedAt { cache[id]?.verifiedSecret = Array(secret.utf8) }
        }
        return true
    }

    /// Equal bytes, in a time that depends only on the lengths.
    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// The key's record when `presented` is a valid, unrevoked key; nil otherwise.
    public func authenticate(key presented: String) async throws -> APIKeyRecord? {
        guard let (id, secret) = APIKeyFormat.parse(presented) else { return nil }
        if let cached = fresh(id: id) {
            return accepts(cached, id: id, secret: secret) ? cached.key.record : nil
        }
        let now = clock.now()
        guard let stored = try await keys.storedKey(id: id) else {
            cache.withLock { $0[id] = nil }
            return nil
        }
        let entry = Entry(key: stored, fetchedAt: now)
        cache.withLock { cache in
            if cache.count >= configuration.maxCachedKeys { cache.removeAll(keepingCapacity: true) }
            cache[id] = entry
        }
        return accepts(entry, id: id, secret: secret) ? stored.record : nil
    }

    /// Revokes a key in the store and in this process at once.
    public func revoke(id: String) async throws -> Bool {
        let revoked = try await keys.revokeKey(id: id, now: clock.now())
        forget(id: id)
        return revoked
    }

    /// Keys in the cache now (tests check its bound).
    var cachedKeyCount: Int { cache.withLock { $0.count } }

    /// Drops a key from the cache: the next call reads the store.
    public func forget(id: String) {
        _ = cache.withLock { $0.removeValue(forKey: id) }
    }
}
