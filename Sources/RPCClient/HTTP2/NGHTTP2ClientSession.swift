private import CNGHTTP2
import NGHTTP2Support
import NIOCore

typealias HTTP2ClientSessionError = NGHTTP2Error

/// Something the server did, recorded by an nghttp2 callback during `receive(_:)`.
///
/// Callbacks only record; the connection acts on the events after `nghttp2_session_mem_recv`
/// has returned.
enum HTTP2ClientEvent: Equatable {
    /// A complete header block: the response headers first, then (if any) the trailers.
    /// `tooLarge` is set when the block went over the header list limit; its fields were dropped.
    case headers(streamID: Int32, fields: [HTTP2HeaderField], tooLarge: Bool, endStream: Bool)
    /// A chunk of response body.
    case data(streamID: Int32, bytes: [UInt8])
    /// END_STREAM on a DATA frame (a response that ends without trailers).
    case endOfResponse(streamID: Int32)
    /// The stream is closed; `errorCode` is not 0 when it was reset.
    case streamClosed(streamID: Int32, errorCode: UInt32)
    /// The server sent GOAWAY: no new stream will be accepted on this connection.
    case goAway
}

typealias HTTP2HeaderField = HeaderField

/// HTTP/2 error codes the client sends in RST_STREAM and GOAWAY.
enum HTTP2ClientErrorCode: UInt32, Sendable {
    case noError = 0x0
    case cancel = 0x8
}

/// An nghttp2 client session driven through its memory-buffer API.
///
/// Confined to one thread (the connection's event loop). Bytes read from the socket go in
/// through `receive(_:)`; bytes to write come out of `drainOutput(into:)`. A request body is
/// handed over whole with the request and pulled by nghttp2 within the server's flow-control
/// windows; the request half ends with the body.
final class NGHTTP2ClientSession {
    private struct StreamIO {
        var headerFields: [HTTP2HeaderField] = []
        var headerBytes = 0
        var headersTooLarge = false
        var outbound = ByteBuffer()
    }

    /// Settings sent to the server, and limits kept on what it sends.
    struct Settings {
        /// SETTINGS_INITIAL_WINDOW_SIZE: how much response data a stream may have in flight.
        var initialWindowSize: UInt32
        /// Advertised and enforced: the sum of `name + value + 32` over a header block.
        var maxHeaderListSize: UInt32
    }

    private let session: OpaquePointer
    private let maxHeaderListSize: Int
    private var streams: [Int32: StreamIO] = [:]
    private var events: [HTTP2ClientEvent] = []

    init(settings: Settings) throws(HTTP2ClientSessionError) {
        maxHeaderListSize = Int(settings.maxHeaderListSize)
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_closed_streams(option, 1)
        nghttp2_option_set_max_settings(option, 32)
        nghttp2_option_set_max_outbound_ack(option, 1000)
        nghttp2_option_set_max_continuations(option, 8)

        var raw: OpaquePointer?
        let rc = nghttp2_session_client_new2(&raw, Self.callbacks, nil, option)
        guard rc == 0, let raw else { throw HTTP2ClientSessionError(libraryCode: Int(rc)) }
        session = raw
        nghttp2_session_set_user_data(raw, Unmanaged.passUnretained(self).toOpaque())

        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: settings.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: settings.maxHeaderListSize),
        ]
        try Self.check(nghttp2_submit_settings(raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count))
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: Input

    /// Feeds bytes read from the socket; what the server did is then in `takeEvents()`. Any
    /// error is fatal for the session.
    func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2ClientSessionError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let rc = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rc < 0 { throw HTTP2ClientSessionError(libraryCode: rc) }
    }

    /// The events recorded since the last call (by `receive` and by `drainOutput`).
    func takeEvents() -> [HTTP2ClientEvent] {
        guard !events.isEmpty else { return [] }
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    // MARK: Output

    /// Appends every pending outbound byte (the connection preface first) to `buffer`.
    @discardableResult
    func drainOutput(into buffer: inout ByteBuffer) throws(HTTP2ClientSessionError) -> Int {
        var total = 0
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            if n < 0 { throw HTTP2ClientSessionError(libraryCode: n) }
            guard n > 0, let chunk else { return total }
            buffer.writeBytes(UnsafeRawBufferPointer(start: chunk, count: n))
            total += n
        }
    }

    /// True while the session still wants to read or write.
    var isActive: Bool {
        nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0
    }

    // MARK: Requests

    /// Opens a stream with request `fields` and `body`; the request half ends after the body.
    /// Returns the new stream's id.
    func submitRequest(fields: [HTTP2HeaderField], body: [UInt8]) throws(HTTP2ClientSessionError) -> Int32 {
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readCallback)
        let id = withNameValues(fields) { nva, count in
            nghttp2_submit_request(session, nil, nva, count, &provider, nil)
        }
        try Self.check(id)
        var stream = StreamIO()
        stream.outbound.writeBytes(body)
        streams[id] = stream
        return id
    }

    /// Resets a stream (a cancelled call or an expired deadline).
    func resetStream(streamID: Int32, errorCode: HTTP2ClientErrorCode) {
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode.rawValue)
    }

    /// GOAWAY(NO_ERROR): the session ends once it has been sent.
    func terminate() {
        nghttp2_session_terminate_session(session, HTTP2ClientErrorCode.noError.rawValue)
    }

    // MARK: Internals

    private static func check(_ rc: Int32) throws(HTTP2ClientSessionError) {
        try NGHTTP2Error.check(rc)
    }

    private static func owner(_ userData: UnsafeMutableRawPointer?) -> NGHTTP2ClientSession {
        Unmanaged<NGHTTP2ClientSession>.fromOpaque(userData!).takeUnretainedValue()
    }

    // MARK: Callbacks (record only)

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) {
        let id = flowd_h2_frame_stream_id(frame)
        guard streams[id] != nil else { return }
        streams[id]!.headerFields = []
        streams[id]!.headerBytes = 0
        streams[id]!.headersTooLarge = false
    }

    private func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeRawBufferPointer,
                          value: UnsafeRawBufferPointer) {
        let id = flowd_h2_frame_stream_id(frame)
        guard flowd_h2_frame_is_headers(frame) != 0, var stream = streams[id] else { return }
        stream.headerBytes += name.count + value.count + 32
        if stream.headersTooLarge || stream.headerBytes > maxHeaderListSize {
            stream.headersTooLarge = true
            stream.headerFields = []
        } else {
            stream.headerFields.append(HTTP2HeaderField(
                name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
        }
        streams[id] = stream
    }

    private func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) {
        let id = flowd_h2_frame_stream_id(frame)
        let endStream = flowd_h2_frame_has_end_stream(frame) != 0
        if flowd_h2_frame_is_headers(frame) != 0 {
            guard var stream = streams[id] else { return }
            let fields = stream.headerFields
            stream.headerFields = []
            streams[id] = stream
            events.append(.headers(streamID: id, fields: fields, tooLarge: stream.headersTooLarge, endStream: endStream))
        } else if flowd_h2_frame_is_data(frame) != 0 {
            if endStream, streams[id] != nil { events.append(.endOfResponse(streamID: id)) }
        } else if flowd_h2_frame_is_goaway(frame) != 0 {
            events.append(.goAway)
        }
    }

    private func onDataChunk(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        guard streams[streamID] != nil else { return }
        events.append(.data(streamID: streamID, bytes: Array(bytes)))
    }

    private func onStreamClose(streamID: Int32, errorCode: UInt32) {
        guard streams.removeValue(forKey: streamID) != nil else { return }
        events.append(.streamClosed(streamID: streamID, errorCode: errorCode))
    }

    /// nghttp2 pulls request body bytes here, within the server's windows.
    private func read(streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int,
                      flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard var stream = streams[streamID] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        let count = min(length, stream.outbound.readableBytes)
        if count > 0 {
            stream.outbound.withUnsafeReadableBytes { bytes in
                buffer.update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count)
            }
            stream.outbound.moveReaderIndex(forwardBy: count)
        }
        if stream.outbound.readableBytes == 0 {
            flowd_h2_set_data_flags(flags, 1, 0)
            stream.outbound = ByteBuffer()
        }
        streams[streamID] = stream
        return count
    }

    private static let readCallback: nghttp2_data_source_read_callback = {
        _, streamID, buffer, length, flags, _, userData in
        owner(userData).read(streamID: streamID, into: buffer!, length: length, flags: flags!)
    }

    /// The callback table, built once and never mutated; nghttp2 copies it into every session.
    nonisolated(unsafe) private static let callbacks: OpaquePointer = {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            owner(userData).onBeginHeaders(frame!)
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) {
            _, frame, name, nameLength, value, valueLength, _, userData in
            owner(userData).onHeader(frame!, name: UnsafeRawBufferPointer(start: name, count: nameLength),
                                     value: UnsafeRawBufferPointer(start: value, count: valueLength))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            owner(userData).onFrameRecv(frame!)
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) {
            _, _, streamID, data, length, userData in
            owner(userData).onDataChunk(streamID: streamID, bytes: UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            owner(userData).onStreamClose(streamID: streamID, errorCode: errorCode)
            return 0
        }
        return callbacks!
    }()
}
