#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Codec

/// The response side of one client call, as a plain state machine: HTTP/2 stream events in,
/// actions out. It checks the gRPC response grammar (PROTOCOL-HTTP2.md): `:status 200` and a
/// gRPC `content-type`, then length-prefixed messages, then trailers with `grpc-status`; or a
/// single Trailers-Only block. Whatever ends the call first (trailers, a reset, a lost
/// connection, the deadline, a cancellation) decides its status; later events are ignored.
struct ClientCallStateMachine {
    enum Action: Equatable {
        /// A complete response message (without its prefix).
        case deliver([UInt8])
        /// The call is over; nil means OK.
        case finish(FinishedStatus?)
        /// Reset the stream (the client gives up on it).
        case resetStream
    }

    /// A non-OK end of the call (an `Equatable` stand-in for `GRPCCallError`).
    struct FinishedStatus: Equatable {
        var code: StatusCode
        var message: String
        var details: [ErrorDetail] = []
    }

    private enum State {
        case awaitingHeaders
        case receivingMessages
        case finished
    }

    private var state = State.awaitingHeaders
    private var deframer: GRPCMessageDeframer

    init(maxMessageSize: Int) {
        deframer = GRPCMessageDeframer(maxMessageSize: maxMessageSize)
    }

    var isFinished: Bool { state == .finished }

    /// A header block: the response headers, or the trailers once headers were received.
    mutating func receiveHeaders(_ fields: [HTTP2HeaderField], tooLarge: Bool, endStream: Bool) -> [Action] {
        switch state {
        case .finished:
            return []
        case .awaitingHeaders:
            if tooLarge { return fail(.internalError, "response headers over the header list limit", reset: !endStream) }
            let status = fields.first { $0.name == ":status" }?.value
            guard status == "200" else {
                let http = Int(status ?? "") ?? 0
                return fail(Self.code(forHTTPStatus: http), "HTTP status \(status ?? "missing") from the server",
                            reset: !endStream)
            }
            let contentType = fields.first { $0.name == "content-type" }?.value ?? ""
            guard contentType.hasPrefix("application/grpc") else {
                return fail(.internalError, "response content-type \"\(contentType)\" is not gRPC", reset: !endStream)
            }
            if endStream { return finish(trailers: fields) }
            state = .receivingMessages
            return []
        case .receivingMessages:
            if tooLarge { return fail(.internalError, "response trailers over the header list limit", reset: !endStream) }
            guard endStream else { return fail(.internalError, "a second header block without END_STREAM", reset: true) }
            if deframer.hasPartialMessage { return fail(.internalError, "the response ended inside a message", reset: false) }
            return finish(trailers: fields)
        }
    }

    mutating func receiveData(_ bytes: [UInt8]) -> [Action] {
        guard state == .receivingMessages else {
            if state == .finished { return [] }
            return fail(.internalError, "response data before response headers", reset: true)
        }
        var failure: CodecError?
        bytes.withUnsafeBytes { buffer in
            do throws(CodecError) { try deframer.append(buffer) } catch { failure = error }
        }
        if let error = failure {
            let code: StatusCode = error.code == .messageTooLarge ? .resourceExhausted : .internalError
            return fail(code, "bad response message: \(error.message)", reset: true)
        }
        var actions: [Action] = []
        while let message = deframer.next() { actions.append(.deliver(message)) }
        return actions
    }

    /// END_STREAM on a DATA frame: a gRPC response must end with trailers.
    mutating func receiveEndOfResponse() -> [Action] {
        guard state != .finished else { return [] }
        return fail(.internalError, "the response ended without trailers", reset: false)
    }

    /// The stream closed; a close before the status is an error (a reset, or a server bug).
    mutating func streamClosed(errorCode: UInt32) -> [Action] {
        guard state != .finished else { return [] }
        switch errorCode {
        case 0x8: return fail(.cancelled, "the server cancelled the call (RST_STREAM CANCEL)", reset: false)
        case 0x7: return fail(.unavailable, "the server refused the stream (REFUSED_STREAM)", reset: false)
        case 0xB: return fail(.resourceExhausted, "the server reset the stream (ENHANCE_YOUR_CALM)", reset: false)
        case 0: return fail(.internalError, "the stream closed without a gRPC status", reset: false)
        default: return fail(.internalError, "the server reset the stream (HTTP/2 error \(errorCode))", reset: false)
        }
    }

    /// The server reset the stream with CANCEL after the call's deadline had passed: its own
    /// deadline timer won the race with ours, so the call ends as ours would have (no reset
    /// of our own: the stream is already closed).
    mutating func cancelledAfterDeadline() -> [Action] {
        guard state != .finished else { return [] }
        return fail(.deadlineExceeded, "the call's deadline passed", reset: false)
    }

    mutating func connectionLost(_ reason: String) -> [Action] {
        guard state != .finished else { return [] }
        return fail(.unavailable, reason, reset: false)
    }

    mutating func deadlineExpired() -> [Action] {
        guard state != .finished else { return [] }
        return fail(.deadlineExceeded, "the call's deadline passed", reset: true)
    }

    mutating func cancel() -> [Action] {
        guard state != .finished else { return [] }
        return fail(.cancelled, "the call was cancelled", reset: true)
    }

    // MARK: Internals

    private mutating func fail(_ code: StatusCode, _ message: String, reset: Bool) -> [Action] {
        state = .finished
        let finish = Action.finish(FinishedStatus(code: code, message: message))
        return reset ? [.resetStream, finish] : [finish]
    }

    private mutating func finish(trailers: [HTTP2HeaderField]) -> [Action] {
        state = .finished
        guard let statusText = trailers.first(where: { $0.name == "grpc-status" })?.value,
              let raw = Int(statusText) else {
            return [.finish(FinishedStatus(code: .internalError, message: "the response has no valid grpc-status"))]
        }
        let code = StatusCode(rawValue: raw)
        if code == .ok { return [.finish(nil)] }
        let message = trailers.first { $0.name == "grpc-message" }.map { GRPCStatusMessage.percentDecode(Array($0.value.utf8)) } ?? ""
        var details: [ErrorDetail] = []
        if let encoded = trailers.first(where: { $0.name == "grpc-status-details-bin" })?.value,
           let bytes = Self.base64Decode(encoded),
           let status = try? RPCStatus(serializedBytes: bytes) {
            details = status.details
        }
        return [.finish(FinishedStatus(code: code, message: message, details: details))]
    }

    /// gRPC's mapping for responses that are not gRPC (doc/http-grpc-status-mapping.md).
    static func code(forHTTPStatus status: Int) -> StatusCode {
        switch status {
        case 400: .internalError
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .unimplemented
        case 429, 502, 503, 504: .unavailable
        default: .unknown
        }
    }

    /// Base64 with or without padding (`-bin` metadata is often sent unpadded).
    static func base64Decode(_ text: String) -> [UInt8]? {
        var padded = String(text.filter { $0 != " " })
        let remainder = padded.utf8.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { padded += String(repeating: "=", count: 4 - remainder) }
        return Data(base64Encoded: padded).map(Array.init)
    }
}
