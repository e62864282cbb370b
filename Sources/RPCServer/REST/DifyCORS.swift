import NIOHTTP1

/// Cross-origin headers as Dify's Service API sends them (flask-cors on the `service_api`
/// blueprint: any origin, `allow_headers` and `methods` as configured there, no credentials).
struct DifyCORS: Sendable {
    /// Request headers a preflight may ask for (compared without regard to case).
    var allowedHeaders: [String] = ["Content-Type", "Authorization", "X-App-Code"]
    /// Methods a preflight may ask for.
    var allowedMethods: [HTTPMethod] = [.GET, .PUT, .POST, .DELETE, .OPTIONS, .PATCH]

    /// Adds the headers every response carries: `Access-Control-Allow-Origin` (the request's
    /// `Origin` with `Vary: Origin`, or `*` when there is none) and, for a preflight
    /// (`OPTIONS` with an allowed `Access-Control-Request-Method`), the allowed methods and
    /// the requested headers that are allowed.
    func apply(to headers: inout HTTPHeaders, request: HTTPRequest) {
        if let origin = request.headers.first(name: "origin"), !origin.isEmpty {
            headers.replaceOrAdd(name: "Access-Control-Allow-Origin", value: origin)
            headers.add(name: "Vary", value: "Origin")
        } else {
            headers.replaceOrAdd(name: "Access-Control-Allow-Origin", value: "*")
        }
        guard request.method == .OPTIONS,
              let asked = request.headers.first(name: "access-control-request-method")?.uppercased(),
              allowedMethods.contains(where: { $0.rawValue == asked }) else { return }
        let lowercased = Set(allowedHeaders.map { $0.lowercased() })
        let requested = request.headers[canonicalForm: "access-control-request-headers"].map(String.init)
            .filter { lowercased.contains($0.lowercased()) }.sorted()
        if !requested.isEmpty {
            headers.replaceOrAdd(name: "Access-Control-Allow-Headers", value: requested.joined(separator: ", "))
        }
        headers.replaceOrAdd(name: "Access-Control-Allow-Methods",
                             value: allowedMethods.map(\.rawValue).sorted().joined(separator: ", "))
    }
}
