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

/// The validated parts of a gRPC request's header block (its `:path` is read from the block
/// by the caller, as bytes).
struct RequestHead: Sendable {
    /// The application metadata as bytes (`Metadata.requestBlockBytes`).
    var metadataBytes: [UInt8]
    var metadata: Metadata { Metadata(requestBlockBytes: metadataBytes) }
    /// From `grpc-timeout`; nil when absent.
    var timeout: TimeAmount?

    /// Validates a request header block (PROTOCOL-HTTP2.md; status choices follow grpc-go).
    static func parse(_ block: RequestHeaderBlock) -> Parsed {
        var method: UnsafeRawBufferPointer?
        var contentType: UnsafeRawBufferPointer?
        var encoding: UnsafeRawBufferPointer?
        var timeoutBytes: UnsafeRawBufferPointer?
        for field in block {
            // By length first: most fields match none of these names.
            let name = field.name
            switch name.count {
            case 7 where name.equals(":method"): method = field.value
            case 12 where name.equals("content-type"): contentType = field.value
            case 12 where name.equals("grpc-timeout"): timeoutBytes = field.value
            case 13 where name.equals("grpc-encoding"): encoding = field.value
            default: break
            }
        }
        guard let method, method.equals("POST") else {
            return .rejected(EarlyResponse(httpStatus: 405, code: .internalError,
                                          message: "gRPC requires POST, got \(method.map(HeaderText.value) ?? "no method")"))
        }
        // What nearly every client sends, compared as bytes; anything else as a String.
        let exactGRPC = contentType?.equals("application/grpc") ?? false
        let contentTypeText = exactGRPC ? "application/grpc" : contentType.map(HeaderText.value)
        guard let contentTypeText, exactGRPC || Self.isGRPCContentType(contentTypeText) else {
            return .rejected(EarlyResponse(httpStatus: 415, code: .invalidArgument,
                                          message: "invalid gRPC content-type \"\(contentTypeText ?? "")\""))
        }
        if let encoding, !encoding.equals("identity") {
            return .rejected(EarlyResponse(
                code: .unimplemented, message: "grpc-encoding \"\(HeaderText.value(encoding))\" is not supported",
                extraFields: [HeaderField(name: "grpc-accept-encoding", value: "identity")]))
        }
        var timeout: TimeAmount?
        if let timeoutBytes {
            let timeoutText = HeaderText.value(timeoutBytes)
            guard let parsed = Self.parseTimeout(timeoutText) else {
                return .rejected(EarlyResponse(httpStatus: 400, code: .internalError,
                                              message: "malformed grpc-timeout \"\(timeoutText)\""))
            }
            timeout = parsed
        }
        guard let metadataBytes = Metadata.requestBlockBytes(block) else {
            return .rejected(EarlyResponse(httpStatus: 400, code: .internalError,
                                          message: "malformed base64 in -bin metadata"))
        }
        return .accepted(RequestHead(metadataBytes: metadataBytes, timeout: timeout))
    }

    /// `parse` of fields held as Strings.
    static func parse(_ fields: [HeaderField]) -> Parsed {
        RequestHeaderBlock.encode(fields).withUnsafeReadableBytes { parse(RequestHeaderBlock(bytes: $0)) }
    }

    enum Parsed {
        case accepted(RequestHead)
        indirect case rejected(EarlyResponse)  // boxed: the accepted head is what every call copies
    }

    /// `application/grpc` or `application/grpc+proto` (with optional parameters).
    static func isGRPCContentType(_ value: String) -> Bool { GRPCContentType.isGRPC(value) }

    /// `grpc-timeout` (`GRPCTimeout.parse`); nil when malformed.
    static func parseTimeout(_ text: String) -> TimeAmount? { GRPCTimeout.parse(text).map(TimeAmount.nanoseconds) }
}
