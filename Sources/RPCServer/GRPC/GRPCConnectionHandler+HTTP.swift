import Codec
import Logging
import NGHTTP2Support
import NIOCore
import NIOHTTP1

/// Plain HTTP requests on an HTTP/2 connection: the REST shim and `/metrics` over h2c (and h2).
extension GRPCConnectionHandler {
    // MARK: Plain HTTP over h2c (the REST shim)

    func beginHTTPCall(streamID: Int32, fields: [HeaderField], endStream: Bool) {
        var headers = HTTPHeaders()
        var method = "GET", uri = "/"
        for field in fields {
            switch field.name {
            case ":method": method = field.value
            case ":path": uri = field.value
            case ":authority": headers.add(name: "host", value: field.value)
            case let name where name.hasPrefix(":"): continue
            default: headers.add(name: field.name, value: field.value)
            }
        }
        httpCalls[streamID] = HTTPCall(method: method, uri: uri, headers: headers)
        if endStream { startHTTPHandler(streamID: streamID) }
    }

    func receiveHTTPBody(streamID: Int32, bytes: [UInt8]) {
        guard var call = httpCalls[streamID], !call.rejected else { return }
        let overLimit = call.body.readableBytes + bytes.count > httpConfiguration.maxRequestBodySize
        if overLimit || !budget.reserve(bytes.count) {
            call.rejected = true
            call.body = ByteBuffer()
            budget.release(call.buffered)
            call.buffered = 0
            httpCalls[streamID] = call
            sendHTTPHead(streamID: streamID, overLimit
                ? RESTError.payloadTooLarge(limit: httpConfiguration.maxRequestBodySize).response
                : RESTError.serverBusy.response)
            return
        }
        call.buffered += bytes.count
        call.body.writeBytes(bytes)
        httpCalls[streamID] = call
    }

    func startHTTPHandler(streamID: Int32) {
        guard let call = httpCalls[streamID], !call.rejected, call.task == nil, let http, let context, let loopBound else { return }
        guard runningHandlers < configuration.maxRunningHandlersPerConnection else {
            session?.resetStream(streamID: streamID, errorCode: .refusedStream)
            scheduleFlush()
            return
        }
        runningHandlers += 1
        // The body is handed on: the connection no longer holds it.
        budget.release(call.buffered)
        httpCalls[streamID]!.buffered = 0
        httpCalls[streamID]!.body = ByteBuffer()
        let request = HTTPRequest(method: HTTPMethod(rawValue: call.method), uri: call.uri, headers: call.headers, body: call.body)
        let sink = HTTPStreamSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
        httpCalls[streamID]!.task = Task(executorPreference: taskExecutor) {
            let response = await http.respond(to: request)
            sink.head(response)
            if case .stream(let produce) = response.body {
                try? await produce(HTTPBodyWriter(write: { bytes in try await sink.write(bytes) }))
                sink.finish()
            }
            sink.done()
        }
    }

    /// Submits the response head; a complete body goes with it.
    func sendHTTPHead(streamID: Int32, _ response: HTTPResponse) {
        guard httpCalls[streamID] != nil, let session else { return }
        var fields = [HeaderField(name: ":status", value: String(response.status.code))]
        for (name, value) in response.headers {
            let lowered = name.lowercased()
            guard !["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "content-length"]
                .contains(lowered) else { continue }
            fields.append(HeaderField(name: lowered, value: value))
        }
        var body: ByteBuffer?
        if case .full(let bytes) = response.body {
            fields.append(HeaderField(name: "content-length", value: String(bytes.readableBytes)))
            body = bytes
        }
        let endStream = body.map { $0.readableBytes == 0 } ?? false
        do {
            try session.sendResponseHeaders(streamID: streamID, fields: fields, endStream: endStream)
        } catch {
            logger.debug("could not send an HTTP response", metadata: ["stream": "\(streamID)", "error": "\(error)"])
            return
        }
        if let body, body.readableBytes > 0 {
            session.sendData(streamID: streamID, bytes: Array(body.readableBytesView))
            session.finishBody(streamID: streamID)
        }
        scheduleFlush()
    }

    func sendHTTPBody(streamID: Int32, bytes: ByteBuffer, writer: CheckedContinuation<Void, any Error>) {
        guard httpCalls[streamID] != nil, let session else {
            writer.resume(throwing: CancellationError())
            return
        }
        session.sendData(streamID: streamID, bytes: Array(bytes.readableBytesView))
        scheduleFlush()
        if session.bufferedOutboundBytes(streamID: streamID) > configuration.streamWriteHighWaterMark {
            httpCalls[streamID]!.waitingWriters.append(writer)
        } else {
            writer.resume()
        }
    }

    func finishHTTPBody(streamID: Int32) {
        guard httpCalls[streamID] != nil else { return }
        session?.finishBody(streamID: streamID)
        scheduleFlush()
    }

    func httpHandlerFinished() {
        runningHandlers -= 1
    }

    func cancel(_ call: HTTPCall) {
        call.task?.cancel()
        for writer in call.waitingWriters { writer.resume(throwing: CancellationError()) }
    }
}

/// The connection's side of a running HTTP handler (REST over h2c): every call hops to the loop.
struct HTTPStreamSink: Sendable {
    let streamID: Int32
    let eventLoop: any EventLoop
    let connection: NIOLoopBound<GRPCConnectionHandler>

    func head(_ response: HTTPResponse) {
        eventLoop.execute { [connection, streamID] in connection.value.sendHTTPHead(streamID: streamID, response) }
    }

    func write(_ bytes: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { (writer: CheckedContinuation<Void, any Error>) in
            eventLoop.execute { [connection, streamID] in
                connection.value.sendHTTPBody(streamID: streamID, bytes: bytes, writer: writer)
            }
        }
    }

    func finish() {
        eventLoop.execute { [connection, streamID] in connection.value.finishHTTPBody(streamID: streamID) }
    }

    func done() {
        eventLoop.execute { [connection] in connection.value.httpHandlerFinished() }
    }
}
