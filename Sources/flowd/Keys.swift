import ArgumentParser
import Engine
import Foundation
import Logging

/// `flowd keys`: API keys. A key belongs to one tenant and one workflow; only its hash is stored.
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API keys.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key and print it once, alone on stdout.")
        @OptionGroup var data: DataDirectoryOption
        @Option(help: "The tenant the key belongs to.") var tenant: String
        @Option(help: "The workflow the key may run.") var workflow: String

        func run() async throws {
            guard !tenant.isEmpty, !workflow.isEmpty else { throw ValidationError("--tenant and --workflow must not be empty") }
            let issued = try await data.openStore().createKey(tenant: tenant, workflow: workflow, now: Date())
            print(issued.key)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (ids only, never secrets).")
        @OptionGroup var data: DataDirectoryOption
        @Option(help: "Only this tenant's keys.") var tenant: String?

        func run() async throws {
            let formatter = ISO8601DateFormatter()
            let keys = try await data.openStore().listKeys(tenant: tenant)
            print("id\ttenant\tworkflow\tcreated\trevoked")
            for key in keys {
                print([key.id, key.tenant, key.workflow, formatter.string(from: key.createdAt),
                       key.revokedAt.map(formatter.string(from:)) ?? "-"].joined(separator: "\t"))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id (from `flowd keys list`).")
        @OptionGroup var data: DataDirectoryOption
        @Argument(help: "The key id.") var id: String

        func run() async throws {
            guard try await data.openStore().revokeKey(id: id, now: Date()) else {
                throw ValidationError("no key with id \(id)")
            }
            print("revoked \(id)")
        }
    }
}

/// `--data-dir` and `--store`, shared by every command that opens the store.
struct DataDirectoryOption: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory of the embedded SQLite store (env FLOWD_DATA_DIR, default ./data).")
    var dataDirectory: String = Environment.string("FLOWD_DATA_DIR") ?? "data"

    @Option(name: .customLong("store"),
            help: "A PostgreSQL database shared by several flowd processes, postgres://USER:PASSWORD@HOST:PORT/DB, instead of the SQLite store in --data-dir (env FLOWD_STORE).")
    var storeOption: String?

    /// `--store`, else `FLOWD_STORE`; nil means the SQLite store in `dataDirectory`.
    var store: String? { storeOption ?? Environment.string("FLOWD_STORE") }

    /// Where the store is, for logs (never the password).
    var storeDescription: String {
        guard let store else { return dataDirectory }
        return (try? PostgresStoreConfiguration(url: store).redacted) ?? "(invalid store URL)"
    }

    /// Opens the store. A store that cannot be opened (a bad URL, a refused login, an unreachable
    /// server, a schema from a newer flowd) ends the command with one line on stderr naming the
    /// problem and exit status 1.
    /// `executionQoS`: the quality of service of the executor runs execute on (the SQLite
    /// store resumes their writes' callers there).
    func openStore(logger: Logger? = nil, executionQoS: DispatchQoS = .unspecified) async throws -> any RunStore & APIKeyStore {
        do {
            if let store {
                return try await PostgresRunStore(url: store, logger: logger)
            }
            // Runs hold other people's inputs and outputs, the store the key hashes: what this
            // process creates is its user's alone (directory 0700, database, WAL and shared
            // memory 0600), and files an older flowd left readable are narrowed.
            umask(0o077)
            let directory = URL(fileURLWithPath: dataDirectory)
            let opened = try SQLiteRunStore(directory: directory, executionQoS: executionQoS)
            Self.restrictPermissions(directory)
            return opened
        } catch let error as StoreError {
            FileHandle.standardError.write(Data("flowd: cannot open the store: \(error.message)\n".utf8))
            throw ExitCode.failure
        }
    }

    /// chmod 0700 on the data directory and 0600 on the store's files in it.
    static func restrictPermissions(_ directory: URL) {
        chmod(directory.path, 0o700)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(SQLiteRunStore.fileName) {
            chmod(directory.appendingPathComponent(name).path, 0o600)
        }
    }
}
