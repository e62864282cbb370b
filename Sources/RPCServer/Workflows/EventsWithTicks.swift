import Engine

/// An item of a run's event stream merged with a timer.
enum EventStreamItem: Sendable {
    case event(RunEvent)
    /// The timer fired (heartbeats, SSE pings).
    case tick
    /// The events ended (after the terminal one, or with nothing past the watcher's position).
    case end
}

/// A run's events with a tick about every `interval`, ending with `.end` when the events end.
/// Demand-driven: nothing is read from the event sequence ahead of the consumer, so a slow
/// client slows the reading of stored events down instead of growing a buffer. The ticks come
/// through the watcher's own subscription from a clock shared by all watchers of the interval
/// (`RunEventSequence.ticking(every:)`): a watcher is its handler's task alone, with no merge
/// tasks and no timer of its own.
func eventsWithTicks(_ events: RunEventSequence, every interval: Duration) -> EventsWithTicks {
    EventsWithTicks(base: events.ticking(every: interval))
}

struct EventsWithTicks: AsyncSequence, Sendable {
    typealias Element = EventStreamItem

    let base: TickingRunEventSequence

    func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator())
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: TickingRunEventSequence.Iterator
        var ended = false

        mutating func next() async throws -> EventStreamItem? {
            guard !ended else { return nil }
            switch try await base.next() {
            case .event(let event)?: return .event(event)
            case .tick?: return .tick
            case nil:
                ended = true
                return .end
            }
        }
    }
}
