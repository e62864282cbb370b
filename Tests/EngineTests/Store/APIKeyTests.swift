import Engine
import Foundation
import Testing

@Suite("API keys")
struct APIKeyTests {
    @Test("a created key authenticates to its tenant and workflow; only its hash is stored", arguments: StoreBackend.all)
    func createAndAuthenticate(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date(timeIntervalSince1970: 1_800_000_000))
            #expect(issued.key.hasPrefix("flowd_\(issued.record.id)_"))
            #expect(try await store.authenticate(issued.key) == issued.record)
            #expect(try await store.listKeys(tenant: "acme") == [issued.record])
            #expect(try await store.listKeys(tenant: "other").isEmpty)
            // The secret never reaches the database file.
            if backend == .sqlite {
                let directory = stores.directory
                let secret = String(issued.key.split(separator: "_").last!)
                let file = try Data(contentsOf: directory.appendingPathComponent(SQLiteRunStore.fileName))
                let wal = (try? Data(contentsOf: directory.appendingPathComponent(SQLiteRunStore.fileName + "-wal"))) ?? Data()
                #expect(file.range(of: Data(secret.utf8)) == nil && wal.range(of: Data(secret.utf8)) == nil)
            }
        }
    }

    @Test("missing, malformed, unknown, wrong-secret and revoked keys are all rejected alike", arguments: StoreBackend.all)
    func rejections(_ backend: StoreBackend) async throws {
        try await withStores(backend) { stores in
            let store = try await stores.open()
            let issued = try await store.createKey(tenant: "acme", workflow: "hello", now: Date())
            let wrongSecret = "flowd_\(issued.record.id)_" + String(repeating: "0", count: 64)
            let unknown = "flowd_000000000000_" + String(repeating: "a", count: 64)
            for presented in ["", "Bearer x", "flowd_", "flowd_zz_zz", issued.key + "x", wrongSecret, unknown,
                              issued.key.uppercased()] {
                #expect(try await store.authenticate(presented) == nil, "\(presented) was accepted")
            }
            #expect(try await store.revokeKey(id: issued.record.id, now: Date()))
            #expect(try await store.authenticate(issued.key) == nil)
            #expect(try await store.revokeKey(id: issued.record.id, now: Date()), "revoking twice is fine")
            #expect(try await !store.revokeKey(id: "nope", now: Date()))
            #expect(try await store.listKeys(tenant: nil).first?.revokedAt != nil)
        }
    }
}
