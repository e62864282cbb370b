@testable import Engine
import Foundation
import Testing

@Suite("Authenticator: the shared front door, with a cache of the store's keys")
struct AuthenticatorTests {
    @Test("a valid key authenticates from the cache; every bad header or key fails with its code")
    func headersAndKeys() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            let authenticator = Authenticator(keys: store, clock: ManualClock())
            for header in ["Bearer \(issued.key)", "bearer \(issued.key)", "BEARER   \(issued.key)  "] {
                #expect(try await authenticator.authenticate(authorization: header) == issued.record)
            }
            let wrongSecret = String(issued.key.dropLast()) + (issued.key.hasSuffix("0") ? "1" : "0")
            let cases: [(String?, AuthenticationError.Code)] = [
                (nil, .missingCredentials), ("Bearer", .missingCredentials), ("Basic \(issued.key)", .wrongScheme),
                ("Bearer not-a-key", .invalidKey), ("Bearer \(wrongSecret)", .invalidKey),
                ("Bearer flowd_000000000000_" + String(repeating: "0", count: 64), .invalidKey),
            ]
            for (header, code) in cases {
                await #expect(throws: AuthenticationError(code: code), "\(header ?? "nil")") {
                    try await authenticator.authenticate(authorization: header)
                }
            }
        }
    }

    @Test("once the right secret was verified, a wrong one for the same key id is still refused, by both paths, and a new fetch verifies afresh")
    func verifiedSecret() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let (authenticator, clock) = authenticatorWithTwoSecondCache(store)
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            let wrong = [String(issued.key.dropLast()) + (issued.key.hasSuffix("0") ? "1" : "0"),
                         String(issued.key.dropLast()), issued.key + "0"]
            for _ in 0..<2 {  // the first round verifies by hash, the second from the remembered secret
                #expect(try await authenticator.authenticate(key: issued.key) == issued.record)
                guard case .accepted(let record) = authenticator.cachedVerdict(authorization: "Bearer \(issued.key)") else {
                    Issue.record("the right key was not accepted from the cache")
                    return
                }
                #expect(record == issued.record)
                for key in wrong {
                    #expect(try await authenticator.authenticate(key: key) == nil, "\(key)")
                    guard case .refused = authenticator.cachedVerdict(authorization: "Bearer \(key)") else {
                        Issue.record("a wrong secret was not refused from the cache: \(key)")
                        return
                    }
                }
            }
            // Revoked by another process: the next fetch (after the TTL) refuses the remembered secret too.
            #expect(try await makeStore(directory).revokeKey(id: issued.record.id, now: Date()))
            clock.advance(by: .seconds(2))
            #expect(try await authenticator.authenticate(key: issued.key) == nil)
        }
    }

    @Test("a revocation here takes effect at once; one by another process within the cache TTL")
    func revocation() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let (authenticator, clock) = authenticatorWithTwoSecondCache(store)
            let local = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            let remote = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            #expect(try await authenticator.authenticate(key: local.key) != nil)
            #expect(try await authenticator.authenticate(key: remote.key) != nil)

            #expect(try await authenticator.revoke(id: local.record.id))
            #expect(try await authenticator.authenticate(key: local.key) == nil)

            // `flowd keys revoke` in another process: its own handle on the same directory.
            let otherProcess = try makeStore(directory)
            #expect(try await otherProcess.revokeKey(id: remote.record.id, now: Date()))
            #expect(try await authenticator.authenticate(key: remote.key) != nil)  // cached, within the TTL
            clock.advance(by: .seconds(2))
            #expect(try await authenticator.authenticate(key: remote.key) == nil)
        }
    }

    @Test("cachedVerdict answers from memory only: malformed headers and fresh cache entries; anything else is unknown")
    func cachedVerdict() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let (authenticator, clock) = authenticatorWithTwoSecondCache(store)
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            let wrongSecret = String(issued.key.dropLast()) + (issued.key.hasSuffix("0") ? "1" : "0")
            func verdict(_ header: String?) -> String { Self.verdict(authenticator, header) }
            #expect(verdict(nil) == "refused missingCredentials")
            #expect(verdict("Basic \(issued.key)") == "refused wrongScheme")
            #expect(verdict("Bearer not-a-key") == "refused invalidKey")
            #expect(verdict("Bearer \(issued.key)") == "unknown")  // never read from the store yet

            #expect(try await authenticator.authenticate(key: issued.key) == issued.record)
            #expect(verdict("Bearer \(issued.key)") == "accepted \(issued.record.id)")
            #expect(verdict("Bearer \(wrongSecret)") == "refused invalidKey")
            clock.advance(by: .seconds(2))
            #expect(verdict("Bearer \(issued.key)") == "unknown")  // stale: the store decides

            #expect(try await authenticator.authenticate(key: issued.key) == issued.record)
            #expect(try await authenticator.revoke(id: issued.record.id))
            #expect(verdict("Bearer \(issued.key)") == "unknown")  // forgotten at once
            #expect(try await authenticator.authenticate(key: issued.key) == nil)
        }
    }

    @Test("a key in use is read again in the second half of its entry's life: it keeps answering from memory past the TTL, and a revocation elsewhere is seen by that read")
    func refreshAhead() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            let (authenticator, clock) = authenticatorWithTwoSecondCache(store)
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            func verdict() -> String { Self.verdict(authenticator, "Bearer \(issued.key)") }
            let accepted = "accepted \(issued.record.id)"
            #expect(try await authenticator.authenticate(key: issued.key) == issued.record)  // read at 0 s
            clock.advance(by: .milliseconds(1500))
            #expect(verdict() == accepted)  // from the entry; starts a read
            await authenticator.waitForRefreshes()
            clock.advance(by: .milliseconds(1500))  // 3 s: past the first read's TTL, not the second's
            #expect(verdict() == accepted)
            await authenticator.waitForRefreshes()  // read again at 3 s

            #expect(try await makeStore(directory).revokeKey(id: issued.record.id, now: Date()))  // another process
            clock.advance(by: .seconds(1))
            #expect(verdict() == accepted)  // within the TTL of the read at 3 s; starts a read
            await authenticator.waitForRefreshes()
            #expect(verdict() == "refused invalidKey")
            #expect(try await authenticator.authenticate(key: issued.key) == nil)

            // A key not used in the second half of its entry's life goes stale as before.
            let idle = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            #expect(try await authenticator.authenticate(key: idle.key) == idle.record)
            clock.advance(by: .seconds(2))
            #expect(Self.verdict(authenticator, "Bearer \(idle.key)") == "unknown", "an entry past its TTL answers from memory")
        }
    }

    @Test("the cache never holds more than maxCachedKeys keys, and keys dropped from it still authenticate")
    func cacheBound() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            var configuration = AuthenticatorConfiguration()
            configuration.maxCachedKeys = 3
            let authenticator = Authenticator(keys: store, clock: ManualClock(), configuration: configuration)
            var issued: [IssuedAPIKey] = []
            for _ in 0..<10 { issued.append(try await store.createKey(tenant: "acme", workflow: "hello", now: Date())) }
            for round in 0..<2 {
                for key in issued {
                    #expect(try await authenticator.authenticate(key: key.key) == key.record, "round \(round)")
                    #expect(authenticator.cachedKeyCount <= 3)
                }
            }
            // Unknown ids are never cached.
            _ = try await authenticator.authenticate(key: "flowd_000000000000_" + String(repeating: "0", count: 64))
            #expect(authenticator.cachedKeyCount <= 3)
        }
    }

    /// `cachedVerdict` as text.
    private static func verdict(_ authenticator: Authenticator, _ header: String?) -> String {
        switch authenticator.cachedVerdict(authorization: header) {
        case .accepted(let record): "accepted \(record.id)"
        case .refused(let error): "refused \(error.code)"
        case .unknown: "unknown"
        }
    }

    /// An authenticator whose cache entries live 2 s of `clock`, the clock the test advances.
    private func authenticatorWithTwoSecondCache(_ store: SQLiteRunStore) -> (Authenticator, ManualClock) {
        let clock = ManualClock()
        var configuration = AuthenticatorConfiguration()
        configuration.cacheTTL = .seconds(2)
        return (Authenticator(keys: store, clock: clock, configuration: configuration), clock)
    }
}
