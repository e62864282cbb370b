/// `google.protobuf.Timestamp`: a point in time as seconds and nanoseconds since the Unix
/// epoch (UTC). `nanos` is 0...999_999_999, also for times before 1970.
public struct Timestamp: Hashable, Comparable, Sendable {
    public var seconds: Int64
    public var nanos: Int32

    public init(seconds: Int64, nanos: Int32 = 0) {
        self.seconds = seconds
        self.nanos = nanos
    }

    /// The time `milliseconds` after the epoch (negative: before it).
    public init(millisecondsSince1970 milliseconds: Int64) {
        let (quotient, remainder) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        if remainder < 0 {
            self.init(seconds: quotient - 1, nanos: Int32(remainder + 1000) * 1_000_000)
        } else {
            self.init(seconds: quotient, nanos: Int32(remainder) * 1_000_000)
        }
    }

    /// Whole milliseconds since the epoch, rounded down.
    public var millisecondsSince1970: Int64 {
        seconds * 1000 + Int64(nanos) / 1_000_000
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        (lhs.seconds, lhs.nanos) < (rhs.seconds, rhs.nanos)
    }
}
