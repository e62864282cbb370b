import Codec

/// A failed gRPC call: the status the server sent (or the one the client concluded, such as
/// UNAVAILABLE for a connection that could not be made or was lost), with the decoded
/// `google.rpc.Status` details.
public struct GRPCCallError: Error, Sendable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    /// From `grpc-status-details-bin`; empty when the server sent none.
    public var details: [ErrorDetail]
    /// The local error behind the status, if any (a refused connection, a decoding error).
    public var cause: (any Error & Sendable)?

    public init(code: StatusCode, message: String, details: [ErrorDetail] = [],
                cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.details = details
        self.cause = cause
    }

    /// The first `google.rpc.ErrorInfo` detail.
    public var errorInfo: ErrorInfo? {
        for case .errorInfo(let info) in details { return info }
        return nil
    }

    /// The first `google.rpc.RetryInfo` detail.
    public var retryInfo: RetryInfo? {
        for case .retryInfo(let info) in details { return info }
        return nil
    }

    public var description: String {
        var text = "\(code)"
        if let reason = errorInfo?.reason { text += " (\(reason))" }
        if !message.isEmpty { text += ": \(message)" }
        if let cause { text += " (\(cause))" }
        return text
    }
}
