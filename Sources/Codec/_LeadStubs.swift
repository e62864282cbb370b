// TEMPORARY: stand-ins until the codec branch lands. Delete on merge.
public struct RPCStatus: Sendable, Equatable {
    public var code: StatusCode
    public var message: String
    public var details: [ErrorDetail]
    public init(code: StatusCode, message: String, details: [ErrorDetail] = []) {
        self.code = code; self.message = message; self.details = details
    }
    public func serializedBytes() -> [UInt8] { [] }
}
public enum ErrorDetail: Sendable, Equatable { case other(typeURL: String, value: [UInt8]) }
public enum HealthV1 {
    public struct ServingStatus: RawRepresentable, Sendable, Hashable {
        public var rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }
        public static let unknown = Self(rawValue: 0), serving = Self(rawValue: 1),
            notServing = Self(rawValue: 2), serviceUnknown = Self(rawValue: 3)
    }
    public struct CheckRequest: ProtoMessage, Equatable {
        public var service: String
        public init(service: String = "") { self.service = service }
        public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
            // field 1, length-delimited
            if bytes.count >= 2, bytes[0] == 0x0a { service = String(decoding: bytes[2...], as: UTF8.self) } else { service = "" }
        }
        public func serializedBytes() -> [UInt8] { service.isEmpty ? [] : [0x0a, UInt8(service.utf8.count)] + Array(service.utf8) }
    }
    public struct CheckResponse: ProtoMessage, Equatable {
        public var status: ServingStatus
        public init(status: ServingStatus) { self.status = status }
        public init(serializedBytes bytes: [UInt8], limits: DecodingLimits) throws(CodecError) {
            status = ServingStatus(rawValue: bytes.count == 2 ? Int(bytes[1]) : 0)
        }
        public func serializedBytes() -> [UInt8] { status.rawValue == 0 ? [] : [0x08, UInt8(status.rawValue)] }
    }
}
