import AsyncAlgorithms
import Engine

/// An item of a run's event stream merged with a timer.
enum EventStreamItem: Sendable {
    case event(RunEvent)
    /// The timer fired (heartbeats, SSE pings).
    case tick
    /// The events ended (after the terminal one, or with nothing past the watcher's position).
    case end
}

/// A run's events merged with a tick every `interval`, ending with `.end` when the events end.
/// Demand-driven: nothing is read from the event sequence ahead of the consumer, so a slow
/// client slows the reading of stored events down instead of growing a buffer.
func eventsWithTicks(_ events: RunEventSequence, every interval: Duration) -> some AsyncSequence<EventStreamItem, any Error> {
    let ticks = AsyncTimerSequence(interval: interval, clock: ContinuousClock()).map { _ in EventStreamItem.tick }
    return merge(chain(events.map { EventStreamItem.event($0) }, [EventStreamItem.end].async), ticks)
}
