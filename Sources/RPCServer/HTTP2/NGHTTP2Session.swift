private import CNGHTTP2
private import CFlowdHTTP2
import Codec
import NGHTTP2Support
import NIOCore

typealias HTTP2SessionError = NGHTTP2Error

/// HTTP/2 error codes this server sends in RST_STREAM and GOAWAY.
enum HTTP2ErrorCode: UInt32, Sendable {
    case noError = 0x0
    case protocolError = 0x1
    case internalError = 0x2
    case refusedStream = 0x7
    case cancel = 0x8
    case enhanceYourCalm = 0xB
}

/// Something the peer did, recorded by an nghttp2 callback during `receive(_:)`.
///
/// Callbacks only record; the connection acts on the events after `nghttp2_session_mem_recv`
/// has returned.
enum HTTP2Event {
    /// A complete request header block: its place in the session's header bytes of this read
    /// (`NGHTTP2Session.withHeaderBlock`). `tooLarge` is set when the block went over the
    /// header list limits; its fields were then not kept.
    case requestHeaders(streamID: Int32, block: Range<Int>, tooLarge: Bool, endStream: Bool)
    /// A chunk of request body: its place in the session's bytes of this read
    /// (`NGHTTP2Session.withReceivedData`).
    case data(streamID: Int32, range: Range<Int>)
    /// END_STREAM on a DATA frame (END_STREAM on the request HEADERS is in `requestHeaders`).
    case endOfRequest(streamID: Int32)
    /// An empty DATA frame without END_STREAM (counted against empty-frame floods), on any
    /// stream, closed ones included (seen by `FrameHeaderScanner`, before nghttp2 looks at it).
    case emptyDataFrame(streamID: Int32)
    /// The peer reset a stream (RST_STREAM received); `streamClosed` follows.
    case peerReset(streamID: Int32, errorCode: UInt32)
    /// A PING acknowledgement with its opaque data.
    case pingAck(UInt64)
    /// A PING that is not an acknowledgement (nghttp2 answers it itself).
    case ping
    /// A SETTINGS frame that is not an acknowledgement.
    case settings
    /// The stream is closed; `errorCode` is not `noError` when the peer (or nghttp2) reset it.
    case streamClosed(streamID: Int32, errorCode: UInt32)
    /// nghttp2 found an invalid frame and reset a stream or will end the session.
    case invalidFrame(streamID: Int32)
}

/// An nghttp2 server session driven through its memory-buffer API.
///
/// Confined to one thread (the connection's event loop). Inbound bytes go in through
/// `receive(_:)`, which returns what happened; outbound bytes come out of `drainOutput(into:)`.
/// Response bodies are pulled by nghttp2 from per-stream buffers filled with `sendData`,
/// so nghttp2 enforces the peer's flow-control windows; a stream with nothing to send is
/// parked (`NGHTTP2_ERR_DEFERRED`) and resumed by the next `sendData` or `sendTrailers`.
final class NGHTTP2Session {
    /// Per-stream bookkeeping owned by the session.
    /// A class, changed in place through the map: a struct copied out and written back copied
    /// its header list on every header field and its outbound buffer on every DATA frame.
    private final class StreamIO {
        var requestEnded = false
        /// A gRPC message waiting whole in front of `outbound` (a unary response is one):
        /// nghttp2 copies it from its own array, its prefix made as it goes, instead of it
        /// being copied into `outbound` first. `messageSent` counts prefix and message bytes taken.
        var message: [UInt8]?
        var messageSent = 0
        var outbound = ByteBuffer()
        var trailers: HeaderBlock?
        /// The body ends with END_STREAM on its last DATA frame, without trailers (plain HTTP).
        var endsWithoutTrailers = false
        var deferred = false
        /// Request body bytes received and not yet given back as flow-control credit.
        var unconsumed = 0
        /// Response body bytes nghttp2 has taken for DATA frames (write-stall detection).
        var sentBytes = 0
        /// Neighbours in the session's list of open streams (`openStreams`). Not counted
        /// references: each stream is retained once, by hand, from its request headers until
        /// nghttp2 closes it (`onBeginHeaders`, `onStreamClose`), so that linking and unlinking
        /// cost no atomic operation.
        var next: Unmanaged<StreamIO>?
        var previous: Unmanaged<StreamIO>?
    }

    private let session: OpaquePointer
    /// The session's user data (`CFlowdHTTP2`): nghttp2's memory pool and the request header
    /// recorder, which keeps the request header blocks of the current `receive` one after the
    /// other in `RequestHeaderBlock`'s layout (a `.requestHeaders` event names its range). A
    /// block still arriving when a read ends (a block can span reads) is moved to the front by
    /// the next `receive`, which drops the rest.
    private let context: UnsafeMutablePointer<flowd_h2_context>
    /// `withHeaderBlock` or `withReceivedData` is running: `receive` may not move the bytes
    /// being read.
    private var readingReceived = 0
    /// Each stream's bookkeeping from its request headers until nghttp2 closes it, in a list
    /// linked through the streams themselves (a map cost two look-ups a call, and look-ups go
    /// through `withStream`, nghttp2's stream user data, anyway). The streams in it hold one
    /// retain each, which `onStreamClose` (or the session's end) gives back.
    private var openStreams: Unmanaged<StreamIO>?
    private var events: [HTTP2Event] = []
    /// Free blocks nghttp2's memory pool keeps per size class (64 to 512 bytes) for the next
    /// stream's allocations; above it they go back to malloc. At most 32 KiB a connection
    /// (the blocks with their 16-byte headers).
    static let poolBlocksPerClass: UInt32 = 32
    /// Streams whose response ended while the request was still open: RST_STREAM(NO_ERROR)
    /// must follow the frame with END_STREAM, and may only be submitted after it was sent.
    private var earlyClosedStreams: [Int32] = []
    /// Bytes that arrived for streams that are gone: credited to the connection after
    /// `mem_recv`/`mem_send` return (callbacks must not call back into nghttp2).
    private var orphanedCredit = 0
    /// Frame boundaries of the input, for what nghttp2 drops unseen (empty DATA on closed streams).
    private var frameHeaders = FrameHeaderScanner()

    struct Settings {
        var maxConcurrentStreams: UInt32
        var initialWindowSize: UInt32
        var connectionWindowSize: Int32
        var maxHeaderListSize: UInt32
        var maxFieldCount: Int
        var resetBurst: UInt64
        var resetRatePerSecond: UInt64
    }

    init(settings: Settings) throws(HTTP2SessionError) {
        guard let context = flowd_h2_context_new(Int(settings.maxHeaderListSize), settings.maxFieldCount,
                                                 Self.poolBlocksPerClass) else {
            throw HTTP2SessionError(libraryCode: Int(NGHTTP2_ERR_NOMEM.rawValue))
        }
        self.context = context
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_closed_streams(option, 1)
        nghttp2_option_set_max_settings(option, 32)
        nghttp2_option_set_max_outbound_ack(option, 1000)
        // Debian backports (deb12u1, deb12u2): also a load-time guard against an unpatched library.
        nghttp2_option_set_stream_reset_rate_limit(option, settings.resetBurst, settings.resetRatePerSecond)
        nghttp2_option_set_max_continuations(option, 8)
        // Credit goes back only through `consume(streamID:count:)`, once the connection has
        // put the bytes somewhere bounded (notes/tls-fuzz-reflection-metrics.md section 5).
        nghttp2_option_set_no_auto_window_update(option, 1)

        var raw: OpaquePointer?
        let rc = nghttp2_session_server_new3(&raw, Self.callbacks, context, option, flowd_h2_context_mem(context))
        guard rc == 0, let raw else {
            flowd_h2_context_free(context)
            throw HTTP2SessionError(libraryCode: Int(rc))
        }
        self.session = raw
        flowd_h2_context_set_owner(context, Unmanaged.passUnretained(self).toOpaque())

        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: settings.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: settings.initialWindowSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: settings.maxHeaderListSize),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        try Self.check(nghttp2_submit_settings(raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count))
        try Self.check(nghttp2_session_set_local_window_size(
            raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, settings.connectionWindowSize))
    }

    deinit {
        nghttp2_session_del(session)
        flowd_h2_context_free(context)
        // The streams nghttp2 did not close: their retains go back.
        while let stream = openStreams {
            openStreams = stream._withUnsafeGuaranteedRef { $0.next }
            stream.release()
        }
    }

    // MARK: Input

    /// Feeds bytes read from the socket; what the peer did is then in `takeEvents()`. Any error
    /// is fatal for the session: drain the output (it may hold a GOAWAY) and close.
    func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2SessionError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        precondition(readingReceived == 0, "a read while the bytes of the last one are being read")
        flowd_h2_next_read(context)
        frameHeaders.scan(bytes) { header in
            if header.isEmptyDataWithoutEndStream { events.append(.emptyDataFrame(streamID: header.streamID)) }
        }
        let rc = nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), bytes.count)
        if rc < 0 { throw HTTP2SessionError(libraryCode: rc) }
        creditOrphanedBytes()
    }

    /// Gives `count` received bytes of `streamID` back to the peer as flow-control credit
    /// (stream and connection); the WINDOW_UPDATE goes out with the next `drainOutput`.
    /// Bytes of a stream that has closed since are credited to the connection alone.
    func consume(streamID: Int32, count: Int) {
        guard count > 0 else { return }
        let credited = withStream(streamID) { stream in
            let credited = min(count, stream.unconsumed)
            stream.unconsumed -= credited
            return credited
        } ?? 0
        if credited > 0 { nghttp2_session_consume(session, streamID, credited) }
    }

    /// The header block of a `.requestHeaders` event, valid until the next `receive`.
    func withHeaderBlock<R>(_ range: Range<Int>, _ body: (RequestHeaderBlock) -> R) -> R {
        withReceived(range, flowd_h2_headers_bytes(context), count: flowd_h2_headers_count(context)) {
            body(RequestHeaderBlock(bytes: $0))
        }
    }

    /// The bytes of a `.data` event, valid until the next `receive`.
    func withReceivedData<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        withReceived(range, flowd_h2_data_bytes(context), count: flowd_h2_data_count(context), body)
    }

    /// `range` of one of the context's per-read buffers (`base`, `count` bytes). Only `receive`
    /// changes them, and not while this runs.
    private func withReceived<R>(_ range: Range<Int>, _ base: UnsafePointer<UInt8>?, count: Int,
                                 _ body: (UnsafeRawBufferPointer) -> R) -> R {
        precondition(range.upperBound <= count, "bytes of an earlier read")
        readingReceived += 1
        defer { readingReceived -= 1 }
        let start = range.isEmpty ? nil : UnsafeRawPointer(base! + range.lowerBound)
        return body(UnsafeRawBufferPointer(start: start, count: range.count))
    }

    /// Request bytes of `streamID` received and not yet credited back.
    func unconsumedBytes(streamID: Int32) -> Int { withStream(streamID) { $0.unconsumed } ?? 0 }

    /// Received bytes not yet credited back to the connection (a gauge for tests).
    var unconsumedConnectionBytes: Int { Int(nghttp2_session_get_effective_recv_data_length(session)) }

    /// Streams whose bookkeeping the session holds (tests: the list of open streams).
    var openStreamCount: Int {
        var count = 0
        var stream = openStreams
        while let current = stream {
            count += 1
            stream = current._withUnsafeGuaranteedRef { $0.next }
        }
        return count
    }

    /// Free blocks nghttp2's memory pool holds for reuse (tests: at most four size classes of
    /// `poolBlocksPerClass`).
    var pooledBlocks: Int { flowd_h2_pool_free_blocks(context) }

    /// Response body bytes nghttp2 has taken from `streamID`'s buffer so far.
    func sentBodyBytes(streamID: Int32) -> Int { withStream(streamID) { $0.sentBytes } ?? 0 }

    /// True while `streamID` has response bytes waiting for the peer's window.
    func hasPendingOutput(streamID: Int32) -> Bool { bufferedOutboundBytes(streamID: streamID) > 0 }

    private func creditOrphanedBytes() {
        guard orphanedCredit > 0 else { return }
        nghttp2_session_consume_connection(session, orphanedCredit)
        orphanedCredit = 0
    }

    /// The events recorded since the last call, by `receive` and also by `drainOutput`
    /// (a stream closes once its final frame has been sent).
    func takeEvents() -> [HTTP2Event] {
        guard !events.isEmpty else { return [] }
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    // MARK: Output

    /// Appends every pending outbound byte to `buffer`. Returns the number of bytes added.
    @discardableResult
    func drainOutput(into buffer: inout ByteBuffer) throws(HTTP2SessionError) -> Int {
        var total = 0
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            if n < 0 { throw HTTP2SessionError(libraryCode: n) }
            if n > 0, let chunk {
                buffer.writeBytes(UnsafeRawBufferPointer(start: chunk, count: n))
                total += n
                continue
            }
            if orphanedCredit > 0 {
                creditOrphanedBytes()
                continue
            }
            if earlyClosedStreams.isEmpty { return total }
            let pending = earlyClosedStreams
            earlyClosedStreams.removeAll()
            for id in pending {
                nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, HTTP2ErrorCode.noError.rawValue)
            }
        }
    }

    /// True while the session still wants to read or write; when both are false the
    /// connection can be closed.
    var isActive: Bool {
        nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0
    }

    /// Frames queued inside nghttp2 (control frames included).
    var outboundQueueSize: Int { nghttp2_session_get_outbound_queue_size(session) }

    var lastProcessedStreamID: Int32 { nghttp2_session_get_last_proc_stream_id(session) }

    /// Response bytes buffered for `streamID` and not yet handed to nghttp2.
    func bufferedOutboundBytes(streamID: Int32) -> Int {
        withStream(streamID) { stream in
            stream.outbound.readableBytes
                + (stream.message.map { GRPCFraming.prefixLength + $0.count - stream.messageSent } ?? 0)
        } ?? 0
    }

    // MARK: Responses

    /// Sends response headers. With `endStream` this is a complete response (Trailers-Only or
    /// an HTTP error); otherwise the body follows through `sendData` and `sendTrailers`.
    func sendResponseHeaders(streamID: Int32, fields: [HeaderField], endStream: Bool) throws(HTTP2SessionError) {
        try sendResponseHeaders(streamID: streamID, block: .fields(fields), endStream: endStream)
    }

    func sendResponseHeaders(streamID: Int32, block: HeaderBlock, endStream: Bool) throws(HTTP2SessionError) {
        guard let data = nghttp2_session_get_stream_user_data(session, streamID) else {
            throw HTTP2SessionError(libraryCode: Int(NGHTTP2_ERR_STREAM_CLOSED.rawValue))
        }
        let rc: Int32 = block.withNameValues { nva, count in
            if endStream {
                return nghttp2_submit_response(session, streamID, nva, count, nil)
            }
            // The body's reads get the stream's bookkeeping straight from the provider.
            var provider = nghttp2_data_provider(
                source: nghttp2_data_source(ptr: data), read_callback: Self.readCallback)
            return nghttp2_submit_response(session, streamID, nva, count, &provider)
        }
        try Self.check(rc)
    }

    /// Queues body bytes (already gRPC-framed) on a stream whose headers were sent without
    /// `endStream`.
    func sendData(streamID: Int32, buffer: ByteBuffer) {
        withStream(streamID) { stream in
            stream.outbound.writeImmutableBuffer(buffer)
            resumeIfDeferred(stream, streamID: streamID)
        }
    }

    /// Queues a gRPC message (framed on the way out).
    func sendMessage(streamID: Int32, _ bytes: [UInt8]) {
        withStream(streamID) { stream in
            if stream.message == nil, stream.outbound.readableBytes == 0 {
                stream.message = bytes
                stream.messageSent = 0
            } else {
                stream.outbound.reserveCapacity(minimumWritableBytes: GRPCFraming.prefixLength + bytes.count)
                _ = GRPCFraming.withPrefix(forLength: bytes.count) { stream.outbound.writeBytes($0) }
                stream.outbound.writeBytes(bytes)
            }
            resumeIfDeferred(stream, streamID: streamID)
        }
    }

    /// Ends the response with trailers once every queued byte has been sent.
    func sendTrailers(streamID: Int32, block: HeaderBlock) {
        withStream(streamID) { stream in
            stream.trailers = block
            resumeIfDeferred(stream, streamID: streamID)
        }
    }

    /// Ends a plain HTTP response once every queued byte has been sent (END_STREAM on the
    /// last DATA frame, no trailers).
    func finishBody(streamID: Int32) {
        withStream(streamID) { stream in
            stream.endsWithoutTrailers = true
            resumeIfDeferred(stream, streamID: streamID)
        }
    }

    /// Resets a stream; any output still queued for it is discarded.
    func resetStream(streamID: Int32, errorCode: HTTP2ErrorCode) {
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode.rawValue)
    }

    /// First step of a graceful shutdown: GOAWAY with the maximum stream id, then a PING whose
    /// acknowledgement tells when the peer has seen it.
    func sendShutdownNotice(pingOpaque: UInt64) throws(HTTP2SessionError) {
        try Self.check(nghttp2_submit_shutdown_notice(session))
        try Self.check(flowd_h2_submit_ping(session, pingOpaque))
    }

    /// Final GOAWAY: streams above the last processed one are refused.
    func sendGoAway(errorCode: HTTP2ErrorCode, debugData: String = "") throws(HTTP2SessionError) {
        let rc = Array(debugData.utf8).withUnsafeBufferPointer { debug in
            nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastProcessedStreamID,
                                  errorCode.rawValue, debug.baseAddress, debug.count)
        }
        try Self.check(rc)
    }

    /// GOAWAY with `errorCode`; the session stops once it has been sent.
    func terminate(errorCode: HTTP2ErrorCode) {
        nghttp2_session_terminate_session(session, errorCode.rawValue)
    }

    // MARK: Internals

    private func resumeIfDeferred(_ stream: StreamIO, streamID: Int32) {
        guard stream.deferred else { return }
        stream.deferred = false
        nghttp2_session_resume_data(session, streamID)
    }

    /// Runs `body` with the bookkeeping of an open stream, borrowed: nghttp2 holds an unretained
    /// pointer to it as the stream's user data, and `streams` keeps it alive until the stream
    /// closes (every look-up of a call's dozen went through a retain and a release before).
    @discardableResult
    private func withStream<R>(_ streamID: Int32, _ body: (StreamIO) -> R) -> R? {
        guard let data = nghttp2_session_get_stream_user_data(session, streamID) else { return nil }
        return Unmanaged<StreamIO>.fromOpaque(data)._withUnsafeGuaranteedRef(body)
    }

    private static func check(_ rc: Int32) throws(HTTP2SessionError) {
        try NGHTTP2Error.check(rc)
    }

    /// Runs `body` with the session behind a callback's user data, borrowed: the session
    /// outlives every callback it makes, and a strong reference (`takeUnretainedValue`) cost a
    /// retain and a release per callback, a few dozen per call.
    private static func withOwner<R>(_ userData: UnsafeMutableRawPointer?, _ body: (NGHTTP2Session) -> R) -> R {
        Unmanaged<NGHTTP2Session>.fromOpaque(flowd_h2_context_owner(userData)!)._withUnsafeGuaranteedRef(body)
    }

    // MARK: Callbacks (record only)

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) {
        guard flowd_h2_frame_is_request_headers(frame) != 0 else { return }
        let stream = Unmanaged.passRetained(StreamIO())  // released in onStreamClose
        let id = flowd_h2_frame_stream_id(frame)
        stream._withUnsafeGuaranteedRef { $0.next = openStreams }
        openStreams?._withUnsafeGuaranteedRef { $0.previous = stream }
        openStreams = stream
        nghttp2_session_set_stream_user_data(session, id, stream.toOpaque())
        // Its fields go to the recorder (`flowd_h2_callbacks_set_header_recorder`).
        flowd_h2_headers_begin(context, id)
    }

    private func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) {
        let id = flowd_h2_frame_stream_id(frame)
        let endStream = flowd_h2_frame_has_end_stream(frame) != 0
        if flowd_h2_frame_is_request_headers(frame) != 0 {
            var start = 0, end = 0, tooLarge: Int32 = 0
            guard flowd_h2_headers_end(context, id, &start, &end, &tooLarge) != 0 else { return }
            withStream(id) { stream in
                stream.requestEnded = endStream
                events.append(.requestHeaders(streamID: id, block: start..<end, tooLarge: tooLarge != 0, endStream: endStream))
            }
        } else if flowd_h2_frame_is_headers(frame) != 0 || flowd_h2_frame_is_data(frame) != 0 {
            // END_STREAM on DATA, or on request trailers (gRPC clients do not send them).
            guard endStream else { return }
            withStream(id) { stream in
                stream.requestEnded = true
                events.append(.endOfRequest(streamID: id))
            }
        } else if flowd_h2_frame_is_ping(frame) != 0 {
            events.append(flowd_h2_frame_has_ack(frame) != 0 ? .pingAck(flowd_h2_ping_opaque(frame)) : .ping)
        } else if flowd_h2_frame_is_settings(frame) != 0, flowd_h2_frame_has_ack(frame) == 0 {
            events.append(.settings)
        } else if flowd_h2_frame_is_rst_stream(frame) != 0 {
            events.append(.peerReset(streamID: id, errorCode: flowd_h2_frame_rst_error_code(frame)))
        }
    }

    /// False when the bytes could not be kept (out of memory: the session fails).
    private func onDataChunk(streamID: Int32, bytes: UnsafeRawBufferPointer) -> Bool {
        let kept: Bool? = withStream(streamID) { stream in
            let start = flowd_h2_data_append(context, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
            guard start >= 0 else { return false }
            stream.unconsumed += bytes.count
            events.append(.data(streamID: streamID, range: start..<start + bytes.count))
            return true
        }
        guard let kept else {
            orphanedCredit += bytes.count
            return true
        }
        return kept
    }

    private func onFrameSend(_ frame: UnsafePointer<nghttp2_frame>) {
        // A response ends with END_STREAM on HEADERS (gRPC) or on DATA (plain HTTP).
        guard flowd_h2_frame_is_headers(frame) != 0 || flowd_h2_frame_is_data(frame) != 0,
              flowd_h2_frame_has_end_stream(frame) != 0 else { return }
        let id = flowd_h2_frame_stream_id(frame)
        if withStream(id, { !$0.requestEnded }) == true {
            earlyClosedStreams.append(id)
        }
    }

    private func onStreamClose(streamID: Int32, errorCode: UInt32) {
        // The block's bytes stay until the next `receive`: this can run during `drainOutput`
        // while a handler reads a block of the same read.
        flowd_h2_headers_stream_closed(context, streamID)
        guard let data = nghttp2_session_get_stream_user_data(session, streamID) else { return }
        nghttp2_session_set_stream_user_data(session, streamID, nil)
        let stream = Unmanaged<StreamIO>.fromOpaque(data)
        let (previous, next, unconsumed) = stream._withUnsafeGuaranteedRef { ($0.previous, $0.next, $0.unconsumed) }
        if let previous { previous._withUnsafeGuaranteedRef { $0.next = next } } else { openStreams = next }
        next?._withUnsafeGuaranteedRef { $0.previous = previous }
        stream.release()  // the retain of onBeginHeaders
        // Credit nobody will consume any more: without it the connection window would leak.
        orphanedCredit += unconsumed
        events.append(.streamClosed(streamID: streamID, errorCode: errorCode))
    }

    private func onInvalidFrame(_ frame: UnsafePointer<nghttp2_frame>) {
        events.append(.invalidFrame(streamID: flowd_h2_frame_stream_id(frame)))
    }

    /// nghttp2 pulls response body bytes here while it writes DATA frames within the peer's window.
    private func read(_ stream: StreamIO, streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int,
                      flags: UnsafeMutablePointer<UInt32>) -> Int {
        var count = 0
        if let message = stream.message {
            count = Self.copy(message, from: stream.messageSent, into: buffer, length: length)
            stream.messageSent += count
            if stream.messageSent == GRPCFraming.prefixLength + message.count { stream.message = nil }
        }
        let fromOutbound = stream.message == nil ? min(length - count, stream.outbound.readableBytes) : 0
        if fromOutbound > 0 {
            stream.outbound.withUnsafeReadableBytes { bytes in
                (buffer + count).update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: fromOutbound)
            }
            stream.outbound.moveReaderIndex(forwardBy: fromOutbound)
            count += fromOutbound
            // Sent: the storage goes (`clear()` would keep its capacity, and a long-lived
            // stream such as a WatchRun would hold it between its messages). The next message
            // allocates what it needs.
            if stream.outbound.readableBytes == 0 { stream.outbound = ByteBuffer() }
        }
        stream.sentBytes += count
        let drained = stream.message == nil && stream.outbound.readableBytes == 0
        if drained, stream.endsWithoutTrailers {
            flowd_h2_set_data_flags(flags, 1, 0)
            return count
        }
        if drained, let trailers = stream.trailers {
            flowd_h2_set_data_flags(flags, 1, 1)
            stream.trailers = nil
            let rc = trailers.withNameValues { nva, n in nghttp2_submit_trailer(session, streamID, nva, n) }
            return rc < 0 ? Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) : count
        }
        if count == 0 {
            stream.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return count
    }

    /// Copies up to `length` bytes of `message` framed (prefix, then message), starting at
    /// `offset` into the framed bytes; returns how many.
    private static func copy(_ message: [UInt8], from offset: Int, into buffer: UnsafeMutablePointer<UInt8>,
                             length: Int) -> Int {
        let count = min(length, GRPCFraming.prefixLength + message.count - offset)
        var written = 0
        if offset < GRPCFraming.prefixLength {
            written = min(count, GRPCFraming.prefixLength - offset)
            GRPCFraming.withPrefix(forLength: message.count) { prefix in
                UnsafeMutableRawPointer(buffer).copyMemory(from: prefix.baseAddress! + offset, byteCount: written)
            }
        }
        if written < count {
            let start = offset + written - GRPCFraming.prefixLength
            message.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(buffer + written).copyMemory(from: bytes.baseAddress! + start, byteCount: count - written)
            }
        }
        return count
    }

    /// The source's pointer is the stream's `StreamIO` (see `sendResponseHeaders`), alive while
    /// nghttp2 reads the stream's body.
    private static let readCallback: nghttp2_data_source_read_callback = {
        _, streamID, buffer, length, flags, source, userData in
        withOwner(userData) { session in
            Unmanaged<StreamIO>.fromOpaque(source!.pointee.ptr)._withUnsafeGuaranteedRef { stream in
                session.read(stream, streamID: streamID, into: buffer!, length: length, flags: flags!)
            }
        }
    }

    /// The callback table, built once and never mutated; nghttp2 copies it into every session.
    nonisolated(unsafe) private static let callbacks: OpaquePointer = {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            withOwner(userData) { $0.onBeginHeaders(frame!) }
            return 0
        }
        flowd_h2_callbacks_set_header_recorder(callbacks)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            withOwner(userData) { $0.onFrameRecv(frame!) }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) {
            _, _, streamID, data, length, userData in
            let kept = withOwner(userData) {
                $0.onDataChunk(streamID: streamID, bytes: UnsafeRawBufferPointer(start: data, count: length))
            }
            return kept ? 0 : Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue)
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, userData in
            withOwner(userData) { $0.onFrameSend(frame!) }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            withOwner(userData) { $0.onStreamClose(streamID: streamID, errorCode: errorCode) }
            return 0
        }
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks) { _, frame, _, userData in
            withOwner(userData) { $0.onInvalidFrame(frame!) }
            return 0
        }
        return callbacks!
    }()
}
