import Foundation

/// The queries and the stop of a key holder: a key sees and controls only the runs of its own
/// tenant *and* workflow, as a Dify app key does. A run of another workflow is `runNotFound`,
/// the same error as a run that does not exist, so a key cannot even learn that it exists.
extension Engine {
    /// The run, or `runNotFound` (another tenant's or another workflow's run too).
    public func run(id: String, key: APIKeyRecord) async throws -> RunRecord {
        let run = try await run(id: id, tenant: key.tenant)
        guard run.workflow == key.workflow else { throw Self.notFound(id) }
        return run
    }

    /// `run(id:key:)` when the store can read it without suspending (`RunStore.runAtOnce`),
    /// nil when it cannot: the caller then awaits `run(id:key:)`.
    public func runAtOnce(id: String, key: APIKeyRecord, batch: ReadBatch? = nil) throws -> RunRecord? {
        guard let run = try runAtOnce(id: id, tenant: key.tenant, batch: batch) else { return nil }
        guard run.workflow == key.workflow else { throw Self.notFound(id) }
        return run
    }

    /// `watch(id:tenant:after:)` for a run of the key's workflow.
    public func watch(id: String, key: APIKeyRecord, after: Int64) async throws -> RunEventSequence {
        _ = try await run(id: id, key: key)
        return try await watch(id: id, tenant: key.tenant, after: after)
    }

    /// `waitForCompletion(id:tenant:)` for a run of the key's workflow.
    public func waitForCompletion(id: String, key: APIKeyRecord) async throws -> RunRecord {
        _ = try await run(id: id, key: key)
        return try await waitForCompletion(id: id, tenant: key.tenant)
    }

    /// `stop(id:tenant:)` for a run of the key's workflow (a run never changes workflow, so the
    /// check before the stop cannot go stale).
    public func stop(id: String, key: APIKeyRecord) async throws -> RunRecord {
        _ = try await run(id: id, key: key)
        return try await stop(id: id, tenant: key.tenant)
    }

    /// `list(tenant:filter:pageSize:after:)` of the key's workflow's runs: a filter naming
    /// another workflow matches nothing.
    public func list(key: APIKeyRecord, filter: RunFilter, pageSize: Int,
                     after cursor: RunCursor?) async throws -> ([RunRecord], RunCursor?) {
        if let workflow = filter.workflow, workflow != key.workflow { return ([], nil) }
        var scoped = filter
        scoped.workflow = key.workflow
        return try await list(tenant: key.tenant, filter: scoped, pageSize: pageSize, after: cursor)
    }

    /// One page of the key's workflow's run log (`RunStore.runLog`): `limit` summaries after
    /// `offset`, and the total. A filter naming another workflow matches nothing.
    public func runLog(key: APIKeyRecord, filter: RunFilter, offset: Int, limit: Int) async throws -> RunLogPage {
        if let workflow = filter.workflow, workflow != key.workflow { return RunLogPage(total: 0, runs: []) }
        var scoped = filter
        scoped.workflow = key.workflow
        return try await runLog(tenant: key.tenant, filter: scoped, offset: offset, limit: limit)
    }
}
