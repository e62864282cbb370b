/// The schema of the PostgreSQL store. Migrations are append-only: never edit a registered one;
/// each is a list of single statements (the extended protocol takes one at a time).
///
/// - Identifiers and tenants are `COLLATE "C"`: ordered by bytes, as SQLite orders them.
/// - `runs`: one row per run; times are BIGINT milliseconds since 1970 (the engine clock's, as
///   in SQLite). `run_user` is SQLite's `user` (a reserved word here).
/// - `run_events`: the append-only log, primary key (run_id, sequence).
/// - `idempotency`: primary key (tenant, key), the unique constraint that makes a key exact.
/// - `tenants`: per tenant, its `active` (`scheduled` + `running`) and `scheduled` run counts,
///   kept in the transactions that change a run's state, and its `last_claim` (a number from
///   `claim_seq`, so claims in one millisecond still rotate). Its row lock serialises a
///   tenant's admissions across every process.
/// - `tenant_releases` (v3): the end of a *running* run does not decrement `tenants.active`
///   (every end would wait for the tenant's row, held by each admission and claim through its
///   commit); it adds 1 to one of `releaseShards` rows of its tenant, and a tenant's active
///   count is `tenants.active` minus the sum of its releases.
/// - `tenant_limits`: concurrency limit overrides. `api_keys`: keys by id with the SHA-256 of
///   their secret.
/// - `flowd_submit(...)`: a submission's admission in one round trip (see `submitFunction`);
///   `flowd_submit_many(...)` (v2): a batch of them in one transaction (see `submitManyFunction`).
/// - `runs.trace_context` (v4): the W3C trace context a run was submitted with
///   (`RunTraceContext.storedText`), NULL without one; written by `flowd_submit_many_traced`.
/// - `flowd_schema`: the versions applied; a version above `PostgresSchema.migrations.count`
///   means a newer flowd migrated the database, and this one refuses it.
enum PostgresSchema {
    /// Keys of the advisory locks (`pg_advisory_xact_lock(namespace, key)`), per database.
    enum Lock {
        static let namespace: Int32 = 0x666C_6F77  // "flow"
        static let migrations: Int32 = 1
        static let reaper: Int32 = 2
    }

    static let migrations: [(name: String, statements: [String])] = [
        ("v1: runs, events, idempotency, tenants, api keys", [
            """
            CREATE TABLE runs (
                id TEXT COLLATE "C" PRIMARY KEY,
                tenant TEXT COLLATE "C" NOT NULL,
                workflow TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                state TEXT NOT NULL,
                inputs_json TEXT NOT NULL,
                outputs_json TEXT,
                error TEXT,
                trigger TEXT NOT NULL,
                transport TEXT NOT NULL,
                run_user TEXT NOT NULL,
                idempotency_key TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                attempt BIGINT NOT NULL DEFAULT 0,
                last_sequence BIGINT NOT NULL DEFAULT 0,
                total_steps BIGINT NOT NULL DEFAULT 0,
                total_tokens BIGINT NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_expires_at BIGINT,
                last_progress_at BIGINT,
                stop_requested BOOLEAN NOT NULL DEFAULT FALSE
            )
            """,
            "CREATE INDEX runs_by_tenant ON runs (tenant, created_at DESC, id DESC)",
            "CREATE INDEX runs_scheduled ON runs (tenant, created_at, id) WHERE state = 'scheduled'",
            "CREATE INDEX runs_running ON runs (created_at, id) WHERE state = 'running'",
            """
            CREATE TABLE run_events (
                run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
                sequence BIGINT NOT NULL,
                time BIGINT NOT NULL,
                kind TEXT NOT NULL,
                payload_json TEXT NOT NULL,
                PRIMARY KEY (run_id, sequence)
            )
            """,
            """
            CREATE TABLE idempotency (
                tenant TEXT NOT NULL,
                key TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                run_id TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (tenant, key)
            )
            """,
            "CREATE INDEX idempotency_by_expiry ON idempotency (expires_at)",
            """
            CREATE TABLE tenants (
                tenant TEXT COLLATE "C" PRIMARY KEY,
                active BIGINT NOT NULL DEFAULT 0,
                scheduled BIGINT NOT NULL DEFAULT 0,
                last_claim BIGINT NOT NULL DEFAULT 0
            )
            """,
            "CREATE SEQUENCE claim_seq",
            "CREATE TABLE tenant_limits (tenant TEXT PRIMARY KEY, max_active BIGINT NOT NULL)",
            """
            CREATE TABLE api_keys (
                id TEXT COLLATE "C" PRIMARY KEY,
                secret_sha256 TEXT NOT NULL,
                tenant TEXT NOT NULL,
                workflow TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )
            """,
            "CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at)",
            submitFunction,
        ]),
        ("v2: group commit of submissions", [submitManyFunction]),
        ("v3: a running run's end releases its slot without the tenant's row", [
            """
            CREATE TABLE tenant_releases (
                tenant TEXT COLLATE "C" NOT NULL,
                shard INT NOT NULL,
                released BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant, shard)
            )
            """,
            submitFunction.replacingOccurrences(of: "CREATE FUNCTION", with: "CREATE OR REPLACE FUNCTION")
                .replacingOccurrences(of: limitRead, with: releasedRead + "\n" + limitRead),
        ]),
        ("v4: run trace context", ["ALTER TABLE runs ADD COLUMN trace_context TEXT", submitManyTracedFunction]),
    ]

    /// How many `tenant_releases` rows a tenant's releases spread over: run ends that happen at
    /// the same moment rarely wait for the same row.
    static let releaseShards = 64

    /// v3's `flowd_submit` subtracts, right after taking the tenant's row lock (before reading
    /// its limit), the slots that ends of running runs released. Each statement of the function
    /// reads a new snapshot, so the sum counts every release committed before it; one committed
    /// later leaves the count high for this admission only (conservative, never an overshoot).
    private static let limitRead = "SELECT l.max_active INTO v_limit"
    private static let releasedRead = """
        v_active := v_active - COALESCE((SELECT SUM(r.released) FROM tenant_releases r WHERE r.tenant = p_tenant), 0);
        """

    /// Admission of one submission, as `SQLiteRunStore.submit` decides it, in one round trip
    /// (autocommit). Each statement of a VOLATILE function takes a new snapshot, so the reads
    /// after the tenant's row lock see every admission committed before the lock was granted:
    /// the count and the idempotency look-up are exact across processes. Returns one row:
    /// the outcome (`created`, `replayed`, `keyReused`, `overLimit`), the active count and limit
    /// it saw, and the run it names.
    static let submitFunction = """
        CREATE FUNCTION flowd_submit(p_id TEXT, p_tenant TEXT, p_workflow TEXT, p_version TEXT, p_inputs TEXT,
                                     p_trigger TEXT, p_transport TEXT, p_user TEXT, p_key TEXT, p_fingerprint TEXT,
                                     p_now BIGINT, p_expires BIGINT, p_default_limit BIGINT)
        RETURNS TABLE (outcome TEXT, active BIGINT, max_active BIGINT, run_id TEXT)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            v_active BIGINT;
            v_limit BIGINT;
            v_fingerprint TEXT;
            v_run TEXT;
            v_expires BIGINT;
        BEGIN
            SELECT t.active INTO v_active FROM tenants t WHERE t.tenant = p_tenant FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO tenants (tenant) VALUES (p_tenant) ON CONFLICT (tenant) DO NOTHING;
                SELECT t.active INTO v_active FROM tenants t WHERE t.tenant = p_tenant FOR UPDATE;
            END IF;
            SELECT l.max_active INTO v_limit FROM tenant_limits l WHERE l.tenant = p_tenant;
            v_limit := COALESCE(v_limit, p_default_limit);
            IF p_key IS NOT NULL THEN
                SELECT i.fingerprint, i.run_id, i.expires_at INTO v_fingerprint, v_run, v_expires
                FROM idempotency i WHERE i.tenant = p_tenant AND i.key = p_key;
                IF FOUND THEN
                    IF v_expires > p_now THEN
                        IF v_fingerprint <> p_fingerprint THEN
                            RETURN QUERY SELECT 'keyReused'::TEXT, v_active, v_limit, v_run;
                            RETURN;
                        END IF;
                        IF EXISTS (SELECT 1 FROM runs r WHERE r.id = v_run AND r.tenant = p_tenant) THEN
                            RETURN QUERY SELECT 'replayed'::TEXT, v_active, v_limit, v_run;
                            RETURN;
                        END IF;
                    END IF;
                    -- Expired (or naming a run that no longer exists): as if absent.
                    DELETE FROM idempotency i WHERE i.tenant = p_tenant AND i.key = p_key;
                END IF;
            END IF;
            IF v_active >= v_limit THEN
                RETURN QUERY SELECT 'overLimit'::TEXT, v_active, v_limit, NULL::TEXT;
                RETURN;
            END IF;
            INSERT INTO runs (id, tenant, workflow, workflow_version, state, inputs_json, trigger, transport, run_user,
                              idempotency_key, created_at)
            VALUES (p_id, p_tenant, p_workflow, p_version, 'scheduled', p_inputs, p_trigger, p_transport, p_user,
                    p_key, p_now);
            UPDATE tenants t SET active = t.active + 1, scheduled = t.scheduled + 1 WHERE t.tenant = p_tenant;
            IF p_key IS NOT NULL THEN
                INSERT INTO idempotency (tenant, key, fingerprint, run_id, expires_at)
                VALUES (p_tenant, p_key, p_fingerprint, p_id, p_expires);
            END IF;
            RETURN QUERY SELECT 'created'::TEXT, v_active + 1, v_limit, p_id;
        END
        $$
        """

    /// A batch of submissions in one transaction and one round trip (group commit): every
    /// tenant of the batch is locked first, in tenant order (so two batches never wait on each
    /// other in a cycle), then each submission is decided by `flowd_submit`, in the batch's
    /// order, seeing the ones before it. Arguments are arrays, one element per submission; a
    /// missing idempotency key is ''. Returns one row per submission with its position (`ord`,
    /// from 1). Any error rolls the whole batch back (the caller then submits one by one).
    static let submitManyFunction = """
        CREATE FUNCTION flowd_submit_many(p_ids TEXT[], p_tenants TEXT[], p_workflows TEXT[], p_versions TEXT[],
                                          p_inputs TEXT[], p_triggers TEXT[], p_transports TEXT[], p_users TEXT[],
                                          p_keys TEXT[], p_fingerprints TEXT[], p_now BIGINT[], p_expires BIGINT[],
                                          p_default_limits BIGINT[])
        RETURNS TABLE (ord INT, outcome TEXT, active BIGINT, max_active BIGINT, run_id TEXT)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            INSERT INTO tenants (tenant) SELECT DISTINCT u.t FROM unnest(p_tenants) AS u(t) ORDER BY 1
            ON CONFLICT (tenant) DO NOTHING;
            PERFORM 1 FROM tenants t WHERE t.tenant = ANY (p_tenants) ORDER BY t.tenant FOR UPDATE;
            FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
                RETURN QUERY SELECT i, s.outcome, s.active, s.max_active, s.run_id
                FROM flowd_submit(p_ids[i], p_tenants[i], p_workflows[i], p_versions[i], p_inputs[i], p_triggers[i],
                                  p_transports[i], p_users[i], NULLIF(p_keys[i], ''), p_fingerprints[i], p_now[i],
                                  p_expires[i], p_default_limits[i]) AS s;
            END LOOP;
        END
        $$
        """

    /// `flowd_submit_many` for a batch in which some submissions carry a trace context
    /// (`p_trace_contexts`, '' for none), in the same transaction: the runs it created get
    /// theirs (a replayed or refused submission's id names no row). Batches without any trace
    /// context call `flowd_submit_many` itself.
    static let submitManyTracedFunction = """
        CREATE FUNCTION flowd_submit_many_traced(p_ids TEXT[], p_tenants TEXT[], p_workflows TEXT[], p_versions TEXT[],
                                                 p_inputs TEXT[], p_triggers TEXT[], p_transports TEXT[], p_users TEXT[],
                                                 p_keys TEXT[], p_fingerprints TEXT[], p_now BIGINT[], p_expires BIGINT[],
                                                 p_default_limits BIGINT[], p_trace_contexts TEXT[])
        RETURNS TABLE (ord INT, outcome TEXT, active BIGINT, max_active BIGINT, run_id TEXT)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            RETURN QUERY SELECT s.ord, s.outcome, s.active, s.max_active, s.run_id
            FROM flowd_submit_many(p_ids, p_tenants, p_workflows, p_versions, p_inputs, p_triggers, p_transports, p_users,
                                   p_keys, p_fingerprints, p_now, p_expires, p_default_limits) AS s;
            UPDATE runs r SET trace_context = u.context
            FROM unnest(p_ids, p_trace_contexts) AS u(id, context)
            WHERE r.id = u.id AND u.context <> '' AND r.state = 'scheduled' AND r.trace_context IS NULL;
        END
        $$
        """
}
