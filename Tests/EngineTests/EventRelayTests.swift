@testable import Engine
import Foundation
import Testing

@Suite("Event relay: a shared store's events reach this process's watchers")
struct EventRelayTests {
    @Test("with every notification lost, the periodic re-read (sharedEventRereadInterval) delivers the stored events in order",
          .timeLimit(.minutes(1)))
    func rereadIsTheSafetyNet() async throws {
        try await withDataDirectory { directory in
            let store = try makeStore(directory)
            try await StoreFixture.create(store, StoreFixture.submission("r"))
            _ = try await StoreFixture.claim(store)
            // As if another process executed the run: its events are only in the store.
            _ = try await store.appendEvents(runID: "r", attempt: 1, events: (0..<3).map {
                NewEvent(kind: .nodeStarted, payloadJSON: #"{"n":\#($0)}"#)
            }, stepsDelta: 0, now: StoreFixture.t0)
            let hub = EventHub(bufferSize: 64)
            let watcher = hub.subscribe(runID: "r")
            let clock = ManualClock()
            let relay = EventRelay(store: store, hub: hub, clock: clock, logger: quietLogger(), rereadInterval: .seconds(1),
                                   pageSize: 2, isLocal: { _ in false })
            // A notification stream that never yields: every notification is lost.
            let (notifications, continuation) = AsyncStream.makeStream(of: String.self)
            let relaying = Task { await relay.run(notifications) }
            await clock.waitForSleepers(atLeast: 1)
            clock.advance(by: .seconds(1))
            var sequences: [Int64] = []
            for await item in watcher {
                guard case .event(let event) = item else { continue }
                sequences.append(event.sequence)
                if sequences.count == 4 { break }
            }
            #expect(sequences == [1, 2, 3, 4])
            relaying.cancel()
            continuation.finish()
            await relaying.value
        }
    }
}
