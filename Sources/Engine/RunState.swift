/// The states of a workflow run (DESIGN.md, "The run lifecycle").
///
/// ```
/// scheduled ──> running ──> succeeded | failed | stopped | partialSucceeded
///     └────────────────────> stopped | failed (reaper)
/// ```
/// Terminal states never change again.
public enum RunState: String, Sendable, CaseIterable, Codable {
    case scheduled
    case running
    case succeeded
    case failed
    case stopped
    case partialSucceeded = "partial-succeeded"

    /// Whether the run has ended; a terminal run never changes state again.
    public var isTerminal: Bool {
        switch self {
        case .scheduled, .running: false
        case .succeeded, .failed, .stopped, .partialSucceeded: true
        }
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    public func canTransition(to next: RunState) -> Bool {
        switch (self, next) {
        case (.scheduled, .running), (.scheduled, .stopped), (.scheduled, .failed): true
        case (.running, let next) where next.isTerminal: true
        default: false
        }
    }
}
