/// The `grpc.reflection.v1` messages (grpc/reflection/v1/reflection.proto). `v1alpha` has the
/// same fields and numbers, so these types encode and decode both.
public enum ReflectionV1 {
    /// `ServerReflectionRequest`.
    public struct Request: Hashable, Sendable {
        /// The `message_request` oneof.
        public enum Kind: Hashable, Sendable {
            case fileByFilename(String)
            case fileContainingSymbol(String)
            case fileContainingExtension(containingType: String, number: Int32)
            case allExtensionNumbersOfType(String)
            case listServices(String)
        }

        public var host: String
        /// nil when the client set none of the oneof's fields.
        public var kind: Kind?

        public init(host: String = "", kind: Kind?) {
            self.host = host
            self.kind = kind
        }
    }

    /// `ServerReflectionResponse`.
    public struct Response: Hashable, Sendable {
        /// The `message_response` oneof.
        public enum Body: Hashable, Sendable {
            /// Serialized `google.protobuf.FileDescriptorProto`s.
            case fileDescriptors([[UInt8]])
            case extensionNumbers(baseType: String, numbers: [Int32])
            case services([String])
            case error(code: Int32, message: String)
        }

        public var validHost: String
        public var originalRequest: Request
        public var body: Body

        public init(validHost: String, originalRequest: Request, body: Body) {
            self.validHost = validHost
            self.originalRequest = originalRequest
            self.body = body
        }
    }
}
