package import CNGHTTP2

/// An error from nghttp2, mapped from its integer return codes in one place for both the
/// server session (RPCServer) and the client session (RPCClient).
package struct NGHTTP2Error: Error, CustomStringConvertible {
    /// What went wrong, in terms a connection acts on.
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        package let name: String
        package var description: String { name }
        package static let badClientMagic = Code(name: "badClientMagic")
        package static let flooded = Code(name: "flooded")
        package static let tooManyContinuations = Code(name: "tooManyContinuations")
        package static let callbackFailure = Code(name: "callbackFailure")
        package static let noMemory = Code(name: "noMemory")
        package static let invalidArgument = Code(name: "invalidArgument")
        /// The stream is closed, or no new stream can be opened (ids exhausted, GOAWAY received).
        package static let streamClosed = Code(name: "streamClosed")
        package static let protocolError = Code(name: "protocolError")
        package static let other = Code(name: "other")
    }

    package var code: Code
    package var message: String
    package var libraryCode: Int

    package init(libraryCode: Int) {
        self.libraryCode = libraryCode
        self.message = String(cString: nghttp2_strerror(Int32(libraryCode)))
        switch Int32(libraryCode) {
        case NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue: code = .badClientMagic
        case NGHTTP2_ERR_FLOODED.rawValue: code = .flooded
        case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS.rawValue: code = .tooManyContinuations
        case NGHTTP2_ERR_CALLBACK_FAILURE.rawValue: code = .callbackFailure
        case NGHTTP2_ERR_NOMEM.rawValue: code = .noMemory
        case NGHTTP2_ERR_INVALID_ARGUMENT.rawValue: code = .invalidArgument
        case NGHTTP2_ERR_STREAM_CLOSED.rawValue, NGHTTP2_ERR_STREAM_CLOSING.rawValue,
             NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue, NGHTTP2_ERR_START_STREAM_NOT_ALLOWED.rawValue:
            code = .streamClosed
        case NGHTTP2_ERR_PROTO.rawValue: code = .protocolError
        default: code = .other
        }
    }

    /// Throws when `rc` is one of nghttp2's negative error codes.
    package static func check(_ rc: Int32) throws(NGHTTP2Error) {
        if rc < 0 { throw NGHTTP2Error(libraryCode: Int(rc)) }
    }

    package var description: String { "nghttp2 \(code) (\(libraryCode)): \(message)" }
}

/// One header field. Values are kept as text; `-bin` values hold base64.
package struct HeaderField: Sendable, Equatable {
    package var name: String
    package var value: String

    package init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A header block that stays the same for the life of the process (a gRPC response's
/// `:status 200` and `content-type`, the `grpc-status: 0` trailer), encoded once into memory
/// that is never freed, so that nghttp2 takes it without copying
/// (`NGHTTP2_NV_FLAG_NO_COPY_NAME | NO_COPY_VALUE`) and a call builds no arrays for it.
package final class StaticHeaderBlock: @unchecked Sendable {
    package let fields: [HeaderField]
    // Immutable after init and never freed: safe to share across threads.
    @usableFromInline let nva: UnsafeMutablePointer<nghttp2_nv>
    @usableFromInline let count: Int

    package init(_ fields: [HeaderField]) {
        self.fields = fields
        count = fields.count
        nva = .allocate(capacity: max(1, fields.count))
        let flags = UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue)
        for (index, field) in fields.enumerated() {
            (nva + index).initialize(to: nghttp2_nv(name: Self.permanent(field.name), value: Self.permanent(field.value),
                                                    namelen: field.name.utf8.count, valuelen: field.value.utf8.count,
                                                    flags: flags))
        }
    }

    private static func permanent(_ text: String) -> UnsafeMutablePointer<UInt8> {
        let bytes = Array(text.utf8)
        let pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, bytes.count))
        pointer.initialize(from: bytes, count: bytes.count)
        return pointer
    }

    // Inlinable, as `HeaderBlock.withNameValues`: every response goes through them, and
    // unspecialised across modules they were a closure context and an indirect call each.
    @inlinable
    package func withNameValues<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        body(nva, count)
    }
}

/// Header fields to send: built for this response, or a block fixed for the process.
package enum HeaderBlock: Sendable {
    case fields([HeaderField])
    case fixed(StaticHeaderBlock)

    package var fields: [HeaderField] {
        switch self {
        case .fields(let fields): fields
        case .fixed(let block): block.fields
        }
    }

    @inlinable
    package func withNameValues<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        switch self {
        case .fields(let fields): NGHTTP2Support.withNameValues(fields, body)
        case .fixed(let block): block.withNameValues(body)
        }
    }
}

/// Calls `body` with an `nghttp2_nv` array for `fields`. All names and values are copied into
/// one buffer first (nested pointer scopes on array elements trip Swift's exclusivity checks);
/// nghttp2 copies them again during submit.
package func withNameValues<R>(_ fields: [HeaderField], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    var storage: [UInt8] = []
    storage.reserveCapacity(fields.reduce(1) { $0 + $1.name.utf8.count + $1.value.utf8.count })
    var spans: [(name: Range<Int>, value: Range<Int>)] = []
    spans.reserveCapacity(fields.count)
    for field in fields {
        let nameStart = storage.count
        storage.append(contentsOf: field.name.utf8)
        let valueStart = storage.count
        storage.append(contentsOf: field.value.utf8)
        spans.append((nameStart..<valueStart, valueStart..<storage.count))
    }
    if storage.isEmpty { storage.append(0) }
    return storage.withUnsafeMutableBufferPointer { bytes in
        let base = bytes.baseAddress!
        let nva = spans.map { span in
            nghttp2_nv(name: base + span.name.lowerBound, value: base + span.value.lowerBound,
                       namelen: span.name.count, valuelen: span.value.count,
                       flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}
