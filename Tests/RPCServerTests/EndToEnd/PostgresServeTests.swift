@testable import Engine
import PostgresNIO
import Foundation
import Testing

/// The `flowd` executable, built next to the test bundle by `swift build --build-tests`.
private let flowdBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0])
    .deletingLastPathComponent().appendingPathComponent("flowd")

private let postgresURL: String? = {
    guard let url = ProcessInfo.processInfo.environment["FLOWD_TEST_POSTGRES_URL"], !url.isEmpty else { return nil }
    return url
}()

/// Runs SQL on the test server's base database.
private func admin(_ sql: String) async throws {
    let connector = try await PostgresConnector(configuration: try PostgresStoreConfiguration(url: try #require(postgresURL)),
                                                logger: .init(label: "test"))
    do { try await connector.execute(sql) } catch {
        await connector.close()
        throw error
    }
    await connector.close()
}

/// Runs `body` with the `--store` URL of a new database of its own, dropped afterwards.
private func withFreshDatabase(_ body: (String) async throws -> Void) async throws {
    let database = "flowd_e2e_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
    try await admin("CREATE DATABASE \(database)")
    var configuration = try PostgresStoreConfiguration(url: try #require(postgresURL))
    configuration.database = database
    let store = "postgres://\(configuration.username)@\(configuration.host):\(configuration.port)/\(database)?sslmode=disable"
    do {
        try await body(store)
    } catch {
        try? await admin("DROP DATABASE \(database) WITH (FORCE)")
        throw error
    }
    try? await admin("DROP DATABASE \(database) WITH (FORCE)")
}

private func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let child = try ChildProcess(arguments)
    return await child.finish(timeout: .seconds(120))
}

/// Starts `flowd serve` on 127.0.0.1 port 0 with `store` and the example workflows (`environment`
/// are `NAME=VALUE` words before the command); the process and its `host:port`.
private func serve(store: String, environment: [String] = [], _ extra: [String] = []) async throws -> (ChildProcess, String) {
    let server = try ChildProcess(environment + [flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0",
                                                 "--store", store, "--workflows", "examples/workflows"] + extra)
    #expect(await server.waitForLine(startingWith: "flowd: listening on "))
    let port = try #require(server.snapshot().output.split(separator: "\n")
        .first { $0.hasPrefix("flowd: listening on ") }?.split(separator: ":").last.map(String.init))
    return (server, "127.0.0.1:\(port)")
}

@Suite("Two flowd serve processes on one PostgreSQL database",
       .enabled(if: postgresURL != nil, "FLOWD_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server and sets it)"))
struct PostgresServeTests {
    @Test("keys and runs shared: 4 idempotency keys sent 3 times each over both processes make 4 runs; watches on the other process see them end")
    func twoProcesses() async throws {
        try await withFreshDatabase { store in
            var servers: [ChildProcess] = []
            var targets: [String] = []
            for _ in 0..<2 {
                let (server, target) = try await serve(store: store)
                servers.append(server)
                targets.append(target)
            }

            let created = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "hello", "--store", store])
            #expect(created.status == 0, "\(created.output)")
            let key = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let listed = try await run([flowdBinary.path, "keys", "list", "--store", store])
            #expect(listed.output.contains("\tdemo\thello\t"), "\(listed.output)")

            var runIDs: [String: Set<String>] = [:]
            for attempt in 0..<3 {
                for k in 0..<4 {
                    let target = targets[(attempt + k) % 2]
                    let submitted = try await run(["python3", "tools/interop/flowd_client.py", "--target", target, "--key", key,
                                                   "run", "--inputs", #"{"name":"K\#(k)"}"#, "--mode", "async",
                                                   "--idempotency-key", "key-\(k)"])
                    #expect(submitted.status == 0, "\(submitted.output)")
                    let json = try #require(submitted.output.range(of: "{").map { String(submitted.output[$0.lowerBound...]) })
                    let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
                    let runID = try #require((object?["run"] as? [String: Any])?["id"] as? String)
                    runIDs["key-\(k)", default: []].insert(runID)
                }
            }
            #expect(runIDs.count == 4)
            #expect(runIDs.values.allSatisfy { $0.count == 1 }, "one run per key: \(runIDs)")

            // Each run watched on both processes: whichever executed it, both see it to its end.
            for runID in runIDs.values.compactMap(\.first) {
                for target in targets {
                    let watched = try await run(["python3", "tools/interop/flowd_client.py", "--target", target, "--key", key,
                                                 "watch", runID])
                    let lines = watched.output.split(separator: "\n")
                    #expect(lines.first?.contains("run_started") == true, "\(watched.output)")
                    #expect(lines.last?.contains("run_finished") == true && lines.last?.contains("succeeded") == true,
                            "\(watched.output)")
                }
            }

            for server in servers { server.terminate() }
            for server in servers {
                let (status, output) = await server.finish(timeout: .seconds(30))
                #expect(status == 0, "flowd serve exited with \(status):\n\(output)")
            }
        }
    }

    @Test("three processes, 3,000 async submissions (100 idempotency keys sent 20 times each, over all three): one run per key, every run succeeded and ran once, and the tenant's limit of 20 never exceeded (a count query every 10 ms while the load runs), and its counters back to zero",
          .timeLimit(.minutes(10)))
    func threeProcesses() async throws {
        try await withFreshDatabase { store in
            var servers: [ChildProcess] = []
            var targets: [String] = []
            for _ in 0..<3 {
                let (server, target) = try await serve(store: store, ["--max-concurrent", "20"])
                servers.append(server)
                targets.append(target)
            }
            let created = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "hello", "--store", store])
            #expect(created.status == 0, "\(created.output)")
            let key = created.output.trimmingCharacters(in: .whitespacesAndNewlines)

            let database = try await PostgresConnector(configuration: try PostgresStoreConfiguration(url: store),
                                                       logger: PostgresConnector.silent)
            func count(_ sql: String) async throws -> Int {
                Int(try await database.rows(PostgresQuery(unsafeSQL: sql)).first?.decode(Int64.self) ?? -1)
            }
            // The tenant's active runs, sampled every 10 ms while the load runs.
            let sampling = Task { () -> (max: Int, samples: Int) in
                var (highest, samples) = (0, 0)
                while !Task.isCancelled {
                    if let active = try? await count("SELECT count(*) FROM runs WHERE tenant = 'demo' AND state IN ('scheduled', 'running')") {
                        highest = max(highest, active)
                        samples += 1
                    }
                    try? await Task.sleep(for: .milliseconds(10))
                }
                return (highest, samples)
            }
            let load = try ChildProcess(["python3", "tools/interop/scaleout_load.py", "--targets", targets.joined(separator: ","),
                                         "--key", key, "--plain", "1000", "--keys", "100", "--repeats", "20"])
            let (status, output) = await load.finish(timeout: .seconds(540))
            // Every run ends (each one is instant): at most 60 s more, polled every 50 ms.
            for _ in 0..<1_200 {
                if try await count("SELECT count(*) FROM runs WHERE state IN ('scheduled', 'running')") == 0 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            sampling.cancel()
            let sampled = await sampling.value
            #expect(status == 0, "scaleout_load.py failed:\n\(output.suffix(2000))")
            let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
            let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let byKey = try #require(result["by_key"] as? [String: [String]])
            let plain = try #require(result["plain"] as? [String])
            #expect(byKey.count == 100)
            #expect(byKey.values.allSatisfy { $0.count == 20 && Set($0).count == 1 }, "one run per key")
            #expect(Set(plain).count == 1000)

            // Every run: succeeded, claimed once (attempt 1, one run_started event).
            #expect(try await count("SELECT count(*) FROM runs") == 1100)
            #expect(try await count("SELECT count(*) FROM runs WHERE state = 'succeeded' AND attempt = 1") == 1100)
            #expect(try await count("""
                SELECT count(*) FROM (SELECT run_id FROM run_events WHERE kind = 'run_started' GROUP BY run_id HAVING count(*) > 1) twice
                """) == 0)
            // The limit, sampled: each sample is one consistent snapshot. The counters admission
            // reads are back to zero once every run ended.
            #expect(sampled.samples > 0)
            #expect(sampled.max <= 20, "sampled \(sampled.max) active runs")
            #expect(try await count("""
                SELECT count(*) FROM tenants t
                WHERE t.active - COALESCE((SELECT sum(r.released) FROM tenant_releases r WHERE r.tenant = t.tenant), 0) <> 0
                      OR t.scheduled <> 0
                """) == 0)
            // For the record, the largest overlap of the runs' [created, finished) times. Not a
            // bound: both are stamped before the transaction that admits or ends the run is
            // queued for the group commit, so they do not follow the commit order.
            var changes: [(time: Int64, delta: Int)] = []
            for row in try await database.rows(PostgresQuery(unsafeSQL: "SELECT created_at, finished_at FROM runs")) {
                let (createdAt, finishedAt) = try row.decode((Int64, Int64).self)
                changes.append((createdAt, 1))
                changes.append((finishedAt, -1))
            }
            changes.sort { ($0.time, $0.delta) < ($1.time, $1.delta) }
            var (active, highest) = (0, 0)
            for change in changes {
                active += change.delta
                highest = max(highest, active)
            }
            print("three processes: \(result["over_limit"] ?? 0) refusals for the limit; active runs at most \(sampled.max) in \(sampled.samples) samples; largest overlap of the runs' stamped times \(highest)")
            await database.close()

            for server in servers { server.terminate() }
            for server in servers {
                let (status, output) = await server.finish(timeout: .seconds(30))
                #expect(status == 0, "flowd serve exited with \(status):\n\(output.suffix(2000))")
            }
        }
    }

    @Test("a front door with --workers 0 and a worker process: 20 runs submitted and watched on the front door execute on the other process (each process's /metrics counts the runs it started), and every watch sees every event in order (the delay from write to delivery is printed)")
    func frontDoorAndWorker() async throws {
        try await withFreshDatabase { store in
            let (front, frontTarget) = try await serve(store: store, environment: [], ["--workers", "0"])
            let (worker, workerTarget) = try await serve(store: store, environment: [], ["--workers", "8"])
            let key = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "slow", "--store", store])
                .output.trimmingCharacters(in: .whitespacesAndNewlines)

            let measured = try await run(["python3", "tools/interop/watch_delay.py", "--submit", frontTarget,
                                          "--watch", frontTarget, "--key", key, "--runs", "20", "--seconds", "0.4"])
            #expect(measured.status == 0, "\(measured.output)")
            print("cross-process watch (front door --workers 0, runs on the worker): \(measured.output)")
            let json = try #require(measured.output.range(of: "{").map { String(measured.output[$0.lowerBound...]) })
            let result = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
            #expect(result["ok"] as? Bool == true, "\(json)")
            #expect(result["finished"] as? Int == 20, "\(json)")
            #expect(result["states"] as? [String] == ["RUN_STATUS_SUCCEEDED"], "\(json)")
            // slow: run_started, 5 nodes started and finished, run_finished.
            #expect(result["events"] as? Int == 20 * 12, "\(json)")

            // Which process executed them: each counts the runs it started in its schedule-delay
            // histogram. The front door started none, the worker all 20.
            func runsStarted(_ target: String) async throws -> Int {
                let scraped = try await run(["curl", "-s", "--fail", "http://\(target)/metrics"])
                #expect(scraped.status == 0 && scraped.output.contains("# TYPE "), "\(scraped.output)")
                let line = scraped.output.split(separator: "\n")
                    .first { $0.hasPrefix("flowd_run_schedule_delay_seconds_count") }
                return line.flatMap { $0.split(separator: " ").last }.flatMap { Int(Double($0) ?? -1) } ?? 0
            }
            #expect(try await runsStarted(frontTarget) == 0)
            #expect(try await runsStarted(workerTarget) == 20)
            worker.terminate()
            let (workerStatus, workerOutput) = await worker.finish(timeout: .seconds(30))
            #expect(workerStatus == 0, "\(workerOutput)")
            front.terminate()
            let (frontStatus, frontOutput) = await front.finish(timeout: .seconds(30))
            #expect(frontStatus == 0, "\(frontOutput)")
        }
    }

    @Test("--workers 0 without a PostgreSQL store is refused: nothing would execute the runs")
    func zeroWorkersNeedsSharedStore() async throws {
        let refused = try await run([flowdBinary.path, "serve", "--host", "127.0.0.1", "--port", "0", "--workers", "0",
                                     "--data-dir", FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path,
                                     "--workflows", "examples/workflows"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("--workers 0 needs a PostgreSQL --store"), "\(refused.output)")
    }

    @Test("SIGKILL of the process executing a run: another process reaps it once its lease expires, and its watcher sees the end")
    func killedProcessIsReaped() async throws {
        try await withFreshDatabase { store in
            // Short leases and a frequent reaper, so that the test does not wait half a minute.
            let environment = ["FLOWD_LEASE_SECONDS=2", "FLOWD_REAPER_INTERVAL_SECONDS=1"]
            func serve() async throws -> (ChildProcess, String) {
                try await RPCServerTests.serve(store: store, environment: environment)
            }

            let (doomed, doomedTarget) = try await serve()
            let key = try await run([flowdBinary.path, "keys", "create", "--tenant", "demo", "--workflow", "slow", "--store", store])
                .output.trimmingCharacters(in: .whitespacesAndNewlines)
            let client = ["python3", "tools/interop/flowd_client.py", "--key", key]
            let submitted = try await run(client + ["--target", doomedTarget, "run", "--inputs", #"{"seconds":600}"#, "--mode", "async"])
            let json = try #require(submitted.output.range(of: "{").map { String(submitted.output[$0.lowerBound...]) })
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let runID = try #require((object?["run"] as? [String: Any])?["id"] as? String)
            // The only process claims it at once; wait until it says so.
            var running = false
            for _ in 0..<60 where !running {
                running = try await run(client + ["--target", doomedTarget, "get", runID]).output.contains("RUN_STATUS_RUNNING")
            }
            #expect(running)
            doomed.kill()
            _ = await doomed.finish(timeout: .seconds(30))

            let (survivor, survivorTarget) = try await serve()
            let watched = try await run(client + ["--target", survivorTarget, "watch", runID])
            let lines = watched.output.split(separator: "\n")
            #expect(lines.last?.contains("run_finished") == true && lines.last?.contains("failed") == true, "\(watched.output)")
            let final = try await run(client + ["--target", survivorTarget, "get", runID])
            #expect(final.output.contains("RUN_STATUS_FAILED") && final.output.contains("lease expired"), "\(final.output)")
            survivor.terminate()
            let (status, output) = await survivor.finish(timeout: .seconds(30))
            #expect(status == 0, "\(output)")
        }
    }

    @Test("a wrong password, a refused port and a bad URL: one line naming the problem, exit 1, at once")
    func openingErrors() async throws {
        let configuration = try PostgresStoreConfiguration(url: try #require(postgresURL))
        let cases: [(String, String)] = [
            ("postgres://flowd_password_check:wrong@\(configuration.host):\(configuration.port)/\(configuration.database)",
             "refused the login of user flowd_password_check: password authentication failed"),
            ("postgres://flowd@127.0.0.1:1/flowd", "cannot connect to PostgreSQL at 127.0.0.1:1: Connection refused"),
            ("postgres://flowd@127.0.0.1:5432", "no database name"),
        ]
        for (url, message) in cases {
            for command in [["keys", "list"], ["serve", "--port", "0", "--workflows", "examples/workflows"]] {
                let result = try await run([flowdBinary.path] + command + ["--store", url])
                #expect(result.status == 1, "\(command) \(url): \(result.output)")
                let lines = result.output.split(separator: "\n")
                #expect(lines.count == 1 && lines.first?.hasPrefix("flowd: cannot open the store: ") == true
                        && result.output.contains(message), "\(command) \(url): \(result.output)")
            }
        }
    }
}
