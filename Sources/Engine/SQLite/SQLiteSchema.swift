import GRDB

/// The schema of `flowd.sqlite`. Migrations are append-only: never edit a registered one.
///
/// - `runs`: one row per run; times are INTEGER milliseconds since 1970.
///   Indexes: `runs_by_tenant` (listing, newest first), `runs_by_tenant_state` (admission
///   count), `runs_by_state` (claims, reaper, recovery).
/// - `run_events`: the append-only log, primary key (run_id, sequence).
/// - `idempotency`: primary key (tenant, key); `expires_at` indexed for the purge.
/// - `tenant_limits`: concurrency limit overrides.
/// - `api_keys`: API keys by id, with the SHA-256 of their secret (never the secret).
/// - `tenant_dispatch` and the `claims` counter: round-robin state of `claimNext` (a tenant's
///   last claim is a claim number, not a time, so claims in the same millisecond still rotate).
///   Replaced by `tenants` in v3.
/// - `tenants` (v3): per tenant, its `active` (`scheduled` + `running`) and `scheduled` run
///   counts, kept in the same transactions that change a run's state, and its `last_claim`.
///   Admission reads one row instead of counting runs, and a claim finds the next tenant among
///   the tenants with work instead of grouping every scheduled run. `runs_by_tenant_state`,
///   which only the count used, is dropped (one index less to write per transition).
/// - `runs.trace_context` (v4, "run trace context"): the W3C trace context a run was submitted
///   with (`RunTraceContext.storedText`); NULL without one.
enum SQLiteSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: runs, events, idempotency, tenants") { db in
            try db.execute(sql: """
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY NOT NULL,
                    tenant TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    workflow_version TEXT NOT NULL,
                    state TEXT NOT NULL,
                    inputs_json TEXT NOT NULL,
                    outputs_json TEXT,
                    error TEXT,
                    trigger TEXT NOT NULL,
                    transport TEXT NOT NULL,
                    user TEXT NOT NULL,
                    idempotency_key TEXT,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    attempt INTEGER NOT NULL DEFAULT 0,
                    last_sequence INTEGER NOT NULL DEFAULT 0,
                    total_steps INTEGER NOT NULL DEFAULT 0,
                    total_tokens INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_expires_at INTEGER,
                    last_progress_at INTEGER,
                    stop_requested INTEGER NOT NULL DEFAULT 0
                ) STRICT;
                CREATE INDEX runs_by_tenant ON runs(tenant, created_at DESC, id DESC);
                CREATE INDEX runs_by_tenant_state ON runs(tenant, state);
                CREATE INDEX runs_by_state ON runs(state, tenant, created_at, id);
                CREATE TABLE run_events (
                    run_id TEXT NOT NULL REFERENCES runs(id),
                    sequence INTEGER NOT NULL,
                    time INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    payload_json TEXT NOT NULL,
                    PRIMARY KEY (run_id, sequence)
                ) STRICT, WITHOUT ROWID;
                CREATE TABLE idempotency (
                    tenant TEXT NOT NULL,
                    key TEXT NOT NULL,
                    fingerprint TEXT NOT NULL,
                    run_id TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant, key)
                ) STRICT, WITHOUT ROWID;
                CREATE INDEX idempotency_by_expiry ON idempotency(expires_at);
                CREATE TABLE tenant_limits (tenant TEXT PRIMARY KEY NOT NULL, max_active INTEGER NOT NULL) STRICT;
                CREATE TABLE tenant_dispatch (tenant TEXT PRIMARY KEY NOT NULL, last_claim INTEGER NOT NULL) STRICT;
                CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;
                INSERT INTO counters(name, value) VALUES ('claims', 0);
                """)
        }
        migrator.registerMigration("v2: api keys") { db in
            try db.execute(sql: """
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY NOT NULL,
                    secret_sha256 TEXT NOT NULL,
                    tenant TEXT NOT NULL,
                    workflow TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER
                ) STRICT;
                CREATE INDEX api_keys_by_tenant ON api_keys(tenant, created_at);
                """)
        }
        migrator.registerMigration("v3: tenant counters") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (
                    tenant TEXT PRIMARY KEY NOT NULL,
                    active INTEGER NOT NULL DEFAULT 0,
                    scheduled INTEGER NOT NULL DEFAULT 0,
                    last_claim INTEGER NOT NULL DEFAULT 0
                ) STRICT, WITHOUT ROWID;
                INSERT INTO tenants (tenant, active, scheduled, last_claim)
                SELECT t.tenant,
                       (SELECT COUNT(*) FROM runs r WHERE r.tenant = t.tenant AND r.state IN ('scheduled', 'running')),
                       (SELECT COUNT(*) FROM runs r WHERE r.tenant = t.tenant AND r.state = 'scheduled'),
                       COALESCE((SELECT d.last_claim FROM tenant_dispatch d WHERE d.tenant = t.tenant), 0)
                FROM (SELECT tenant FROM runs UNION SELECT tenant FROM tenant_dispatch) t;
                DROP TABLE tenant_dispatch;
                DROP INDEX runs_by_tenant_state;
                """)
        }
        migrator.registerMigration("v4: run trace context") { db in
            try db.execute(sql: "ALTER TABLE runs ADD COLUMN trace_context TEXT")
        }
        return migrator
    }
}
