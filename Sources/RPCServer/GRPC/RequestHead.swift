import InputParsing
import NGHTTP2Support
import Codec
import NIOCore

/// A response the transport sends itself before any handler runs: a single HEADERS frame with
/// END_STREAM carrying the gRPC status (Trailers-Only), with an HTTP status other than 200 for
/// the cases PROTOCOL-HTTP2.md and grpc-go answer that way.
struct EarlyResponse: Sendable, Equatable {
    var httpStatus: Int = 200
    var code: StatusCode
    var message: String
    var extraFields: [HeaderField] = []
}

/// The validated parts of a gRPC request's header block.
struct RequestHead: Sendable {
    var path: String
    var metadata: Metadata
    /// From `grpc-timeout`; nil when absent.
    var timeout: TimeAmount?

    /// Validates a request header block (PROTOCOL-HTTP2.md; status choices follow grpc-go).
    static func parse(_ fields: [HeaderField]) -> Parsed {
        var method: String?
        var path: String?
        var contentType: String?
        var encoding: String?
        var timeoutText: String?
        for field in fields {
            // By length first: two Strings of different texts are compared byte by byte, a
            // few dozen instructions each, and most fields match none of these names.
            let name = field.name
            switch name.utf8.count {
            case 5 where name == ":path": path = field.value
            case 7 where name == ":method": method = field.value
            case 12 where name == "content-type": contentType = field.value
            case 12 where name == "grpc-timeout": timeoutText = field.value
            case 13 where name == "grpc-encoding": encoding = field.value
            default: break
            }
        }
        guard method == "POST" else {
            return .rejected(EarlyResponse(httpStatus: 405, code: .internalError,
                                          message: "gRPC requires POST, got \(method ?? "no method")"))
        }
        guard let contentType, Self.isGRPCContentType(contentType) else {
            return .rejected(EarlyResponse(httpStatus: 415, code: .invalidArgument,
                                          message: "invalid gRPC content-type \"\(contentType ?? "")\""))
        }
        if let encoding, encoding != "identity" {
            return .rejected(EarlyResponse(
                code: .unimplemented, message: "grpc-encoding \"\(encoding)\" is not supported",
                extraFields: [HeaderField(name: "grpc-accept-encoding", value: "identity")]))
        }
        var timeout: TimeAmount?
        if let timeoutText {
            guard let parsed = Self.parseTimeout(timeoutText) else {
                return .rejected(EarlyResponse(httpStatus: 400, code: .internalError,
                                              message: "malformed grpc-timeout \"\(timeoutText)\""))
            }
            timeout = parsed
        }
        guard let metadata = Metadata(requestFields: fields) else {
            return .rejected(EarlyResponse(httpStatus: 400, code: .internalError,
                                          message: "malformed base64 in -bin metadata"))
        }
        return .accepted(RequestHead(path: path ?? "", metadata: metadata, timeout: timeout))
    }

    enum Parsed {
        case accepted(RequestHead)
        case rejected(EarlyResponse)
    }

    /// `application/grpc` or `application/grpc+proto` (with optional parameters).
    static func isGRPCContentType(_ value: String) -> Bool { GRPCContentType.isGRPC(value) }

    /// `grpc-timeout` (`GRPCTimeout.parse`); nil when malformed.
    static func parseTimeout(_ text: String) -> TimeAmount? { GRPCTimeout.parse(text).map(TimeAmount.nanoseconds) }
}
