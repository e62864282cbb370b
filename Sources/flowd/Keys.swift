import ArgumentParser
import Engine
import Foundation

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
            print("id\ttenant\tworkflow\tcreated\trevoked")
            for key in try await data.openStore().listKeys(tenant: tenant) {
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

/// `--data-dir`, shared by every command that opens the store.
struct DataDirectoryOption: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Data directory (env FLOWD_DATA_DIR, default ./data).")
    var dataDirectory: String = Environment.string("FLOWD_DATA_DIR") ?? "data"

    func openStore() throws -> SQLiteRunStore {
        try SQLiteRunStore(directory: URL(fileURLWithPath: dataDirectory))
    }
}
