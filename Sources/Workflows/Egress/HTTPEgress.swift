import AsyncHTTPClient

/// How `http` nodes reach the network.
struct HTTPEgress: Sendable {
    let client: HTTPClient
}
