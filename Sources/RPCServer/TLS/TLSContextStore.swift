import NIOCore
import NIOSSL
import Synchronization

/// Where the server's certificate chain and private key live (PEM files).
public struct ServerTLSFiles: Sendable, Equatable {
    public var certificateChainPath: String
    public var privateKeyPath: String

    public init(certificateChainPath: String, privateKeyPath: String) {
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
    }
}

/// Why TLS could not be set up: unreadable files, a key that does not match the certificate.
public struct ServerTLSError: Error, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var cause: (any Error & Sendable)?

    public var description: String { "\(message)\(cause.map { ": \($0)" } ?? "")" }
}

/// The current TLS context of the server. Every new connection reads it once; `reload()`
/// (SIGHUP) builds a new one from the files and swaps it in only if that worked, so a bad
/// certificate on disk never takes the listener down.
final class TLSContextStore: Sendable {
    let files: ServerTLSFiles
    private let current: Mutex<NIOSSLContext>

    /// Loads the files (blocking disk I/O: not on an event loop).
    init(files: ServerTLSFiles) throws(ServerTLSError) {
        self.files = files
        self.current = Mutex(try Self.makeContext(files))
    }

    var context: NIOSSLContext { current.withLock { $0 } }

    func reload() throws(ServerTLSError) {
        let context = try Self.makeContext(files)
        current.withLock { $0 = context }
    }

    /// TLS 1.2+ with AEAD suites only (RFC 9113 section 9.2), ALPN `h2` then `http/1.1`.
    /// The throwing loaders, not `.file(...)` sources, which trap on a missing file.
    static func makeContext(_ files: ServerTLSFiles) throws(ServerTLSError) -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(files.certificateChainPath)
        } catch {
            throw ServerTLSError(code: "certificate", message: "cannot read the certificate chain \(files.certificateChainPath)", cause: error)
        }
        do {
            key = try NIOSSLPrivateKey(file: files.privateKeyPath, format: .pem)
        } catch {
            throw ServerTLSError(code: "key", message: "cannot read the private key \(files.privateKeyPath)", cause: error)
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.cipherSuites = "ECDHE+AESGCM:ECDHE+CHACHA20"
        configuration.applicationProtocols = ["h2", "http/1.1"]
        configuration.shutdownTimeout = .seconds(1)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ServerTLSError(code: "context", message: "the certificate and key do not make a TLS context", cause: error)
        }
    }
}

/// Sits after the TLS handlers until ALPN has chosen a protocol: closes a connection whose
/// handshake takes longer than `timeout` (NIOSSL has no handshake timeout) or that is still
/// undecided when the server shuts down.
final class PendingTLSHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeout: TimeAmount
    private let closeNote: ConnectionCloseNote?
    private var timer: Scheduled<Void>?

    init(timeout: TimeAmount, closeNote: ConnectionCloseNote?) {
        self.timeout = timeout
        self.closeNote = closeNote
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let closeNote = self.closeNote
        timer = context.eventLoop.scheduleTask(in: timeout) {
            closeNote?.note(.handshakeTimeout)
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is GracefulShutdownEvent {
            closeNote?.note(.shutdown)
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed handshake (a plaintext client, a bad ClientHello): nothing to answer.
        closeNote?.note(.protocolError)
        context.close(promise: nil)
    }
}
