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
        let head = HTTPRequest(method: HTTPMethod(rawValue: method), uri: uri, headers: headers, body: ByteBuffer())
        var verdict = HeadVerdict.admit
        if let http, http.checksHead(head) { verdict = http.verdictAtOnce(forHead: head) }
        let admitted = if case .admit = verdict { true } else { false }
        streams[streamID] = Stream(
            machine: ServerStream(http: method, uri: uri, headers: headers,
                                  maxBodySize: httpConfiguration.maxRequestBodySize, admitted: admitted),
            call: nil)
        switch verdict {
        case .admit:
            break
        case .refuse(let response):
            credentialsChecked(streamID: streamID, refusal: .http(response))
        case .undecided:
            // The body waits, uncredited, for the verdict on the key.
            if let http { checkCredentials(streamID: streamID) { await http.refusal(forHead: head).map(Refusal.http) } }
        }
        if endStream, let stream = streams[streamID] {
            perform(stream.machine.receiveEnd(budget: &budget), streamID: streamID)
        }
    }

    func startHTTPHandler(streamID: Int32, request: HTTPRequest) {
        guard let http, let context, let loopBound else { return }
        let sink = HTTPStreamSink(streamID: streamID, eventLoop: context.eventLoop, connection: loopBound)
        streams[streamID]!.task = Task(executorPreference: taskExecutor) {
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
        guard let stream = streams[streamID], let session else { return }
        stream.machine.httpResponseStarted()
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
            session.sendData(streamID: streamID, buffer: body)
            session.finishBody(streamID: streamID)
        }
        scheduleFlush()
    }

    func sendHTTPBody(streamID: Int32, bytes: ByteBuffer, writer: CheckedContinuation<Void, any Error>) {
        guard streams[streamID] != nil, let session else {
            writer.resume(throwing: CancellationError())
            return
        }
        session.sendData(streamID: streamID, buffer: bytes)
        scheduleFlush()
        parkOrResume(streamID: streamID, writer)
    }

    func finishHTTPBody(streamID: Int32) {
        guard streams[streamID] != nil else { return }
        session?.finishBody(streamID: streamID)
        scheduleFlush()
    }

    func httpHandlerFinished() {
        runningHandlers -= 1
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
