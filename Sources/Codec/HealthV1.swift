/// The `grpc.health.v1` messages (grpc/health/v1/health.proto).
public enum HealthV1 {
    /// `grpc.health.v1.HealthCheckResponse.ServingStatus`. Unknown numeric values are kept.
    public struct ServingStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let unknown = ServingStatus(rawValue: 0)
        public static let serving = ServingStatus(rawValue: 1)
        public static let notServing = ServingStatus(rawValue: 2)
        /// Used only by the Watch method.
        public static let serviceUnknown = ServingStatus(rawValue: 3)

        public var description: String {
            protoEnumName(rawValue, ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"])
        }
    }

    /// `grpc.health.v1.HealthCheckRequest`. An empty `service` asks about the server as a whole.
    public struct CheckRequest: Hashable, Sendable {
        public var service: String

        public init(service: String = "") {
            self.service = service
        }
    }

    /// `grpc.health.v1.HealthCheckResponse`.
    public struct CheckResponse: Hashable, Sendable {
        public var status: ServingStatus

        public init(status: ServingStatus = .unknown) {
            self.status = status
        }
    }
}

/// The proto name of an enum value, or its number for values this build does not know.
func protoEnumName(_ rawValue: Int32, _ names: [String]) -> String {
    names.indices.contains(Int(rawValue)) ? names[Int(rawValue)] : String(rawValue)
}
