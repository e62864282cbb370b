import InputParsing
import NIOCore

/// The first handler of every accepted connection: reads until the bytes either are the
/// HTTP/2 client preface (gRPC and h2c, the nghttp2 pipeline) or diverge from it (HTTP/1.1),
/// installs the matching pipeline after itself, hands it what it has read, and leaves.
/// A connection that sends too little within `timeout` is closed.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    typealias Detected = ProtocolDetection.Verdict

    private let timeout: TimeAmount
    private let install: (Detected, ChannelHandlerContext) throws -> Void
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var decided = false
    private let closeNote: ConnectionCloseNote?
    private let detectTLS: Bool

    /// `install` adds the pipeline for the detected protocol after this handler; `closeNote`
    /// learns why this handler closes the connection. With `detectTLS`, a first byte 0x16 (a
    /// TLS handshake record) is `.tls`.
    init(timeout: TimeAmount, closeNote: ConnectionCloseNote? = nil, detectTLS: Bool = false,
         install: @escaping (Detected, ChannelHandlerContext) throws -> Void) {
        self.timeout = timeout
        self.closeNote = closeNote
        self.detectTLS = detectTLS
        self.install = install
    }

    /// TLS (when asked) when the first byte opens a TLS handshake record, HTTP/2 when `bytes`
    /// start with the preface, HTTP/1 once they diverge, nil while undecided.
    static func detect(_ bytes: ByteBuffer, tls: Bool = false) -> Detected? {
        ProtocolDetection.detect(bytes.readableBytesView, tls: tls)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimer(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    private func startTimer(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let channel = context.channel
        let closeNote = self.closeNote
        timer = context.eventLoop.scheduleTask(in: timeout) {
            closeNote?.note(.handshakeTimeout)
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !decided else {
            context.fireChannelRead(data)
            return
        }
        if var previous = buffered {
            previous.writeBuffer(&bytes)
            bytes = previous
        }
        guard let detected = Self.detect(bytes, tls: detectTLS) else {
            buffered = bytes
            return
        }
        decided = true
        buffered = nil
        timer?.cancel()
        do {
            try install(detected, context)
        } catch {
            closeNote?.note(.protocolError)
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !decided, event is GracefulShutdownEvent {
            closeNote?.note(.shutdown)
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
