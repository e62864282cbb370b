import NIOCore

/// Counts frames that cost the server work without doing anything useful, per connection
/// (hardening.md 1.2: PING, SETTINGS, empty-frame and invalid-frame floods, which nghttp2 1.52
/// leaves to the application), and premature stream resets (Rapid Reset and its kin beyond
/// nghttp2's token bucket).
///
/// A plain value: every method takes the time it is called at, so tests drive it with any clock.
struct AbuseGuard {
    enum Verdict: Equatable {
        case ok
        case goAway(reason: String)
    }

    struct Limits {
        var window: TimeAmount
        var maxPings: Int
        var maxSettings: Int
        var maxConsecutiveEmptyFrames: Int
        var maxEmptyFramesPerWindow: Int
        var maxInvalidFrames: Int
        var prematureResetMinStreams: Int
        var prematureResetLifetime: TimeAmount

        init(configuration: ServerConfiguration) {
            window = configuration.abuseWindow
            maxPings = configuration.maxPingsPerWindow
            maxSettings = configuration.maxSettingsPerWindow
            maxConsecutiveEmptyFrames = configuration.maxConsecutiveEmptyFrames
            maxEmptyFramesPerWindow = configuration.maxEmptyFramesPerWindow
            maxInvalidFrames = configuration.maxInvalidFramesPerWindow
            prematureResetMinStreams = configuration.prematureResetMinStreams
            prematureResetLifetime = configuration.prematureResetLifetime
        }
    }

    let limits: Limits
    private var windowStart: NIODeadline
    private var pings = 0
    private var settings = 0
    private var invalidFrames = 0
    private var emptyFrames = 0
    private var consecutiveEmptyFrames = 0
    private(set) var streamsOpened = 0
    private(set) var prematureResets = 0

    init(limits: Limits, now: NIODeadline) {
        self.limits = limits
        self.windowStart = now
    }

    init(configuration: ServerConfiguration, now: NIODeadline = .now()) {
        self.init(limits: Limits(configuration: configuration), now: now)
    }

    private mutating func rollWindow(now: NIODeadline) {
        if now - windowStart > limits.window {
            windowStart = now
            pings = 0
            settings = 0
            invalidFrames = 0
            emptyFrames = 0
        }
    }

    mutating func ping(now: NIODeadline) -> Verdict {
        rollWindow(now: now)
        pings += 1
        return pings > limits.maxPings ? .goAway(reason: "too_many_pings") : .ok
    }

    mutating func settingsFrame(now: NIODeadline) -> Verdict {
        rollWindow(now: now)
        settings += 1
        return settings > limits.maxSettings ? .goAway(reason: "too_many_settings") : .ok
    }

    mutating func invalidFrame(now: NIODeadline) -> Verdict {
        rollWindow(now: now)
        invalidFrames += 1
        return invalidFrames > limits.maxInvalidFrames ? .goAway(reason: "too_many_invalid_frames") : .ok
    }

    /// An empty DATA frame without END_STREAM, on any stream (closed ones included). Counted
    /// twice: consecutively (reset by a DATA frame that carries bytes) and per window, so that
    /// a byte between every few empty frames does not make the flood free.
    mutating func emptyDataFrame(now: NIODeadline) -> Verdict {
        rollWindow(now: now)
        consecutiveEmptyFrames += 1
        emptyFrames += 1
        if consecutiveEmptyFrames > limits.maxConsecutiveEmptyFrames || emptyFrames > limits.maxEmptyFramesPerWindow {
            return .goAway(reason: "empty_frames")
        }
        return .ok
    }

    /// A DATA frame with payload.
    mutating func dataWithPayload() {
        consecutiveEmptyFrames = 0
    }

    /// A request stream was opened (its headers arrived).
    mutating func streamOpened() {
        streamsOpened += 1
    }

    /// The peer reset a stream `lifetime` after its headers arrived (nil: a stream the
    /// connection never tracked, counted as premature). Once `prematureResetMinStreams`
    /// streams were opened, more than half of them reset prematurely is a GOAWAY.
    mutating func peerReset(lifetime: TimeAmount?) -> Verdict {
        if lifetime.map({ $0 < limits.prematureResetLifetime }) ?? true {
            prematureResets += 1
        }
        if streamsOpened >= limits.prematureResetMinStreams, prematureResets * 2 > streamsOpened {
            return .goAway(reason: "premature_resets")
        }
        return .ok
    }
}
