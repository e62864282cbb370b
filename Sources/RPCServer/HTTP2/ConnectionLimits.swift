import NIOCore

/// Open connections in total and per source address (IP, port ignored). A plain value kept
/// under the server's lock.
struct ConnectionLimits {
    let maxTotal: Int
    let maxPerAddress: Int
    private(set) var total = 0
    private(set) var perAddress: [String: Int] = [:]

    init(maxTotal: Int, maxPerAddress: Int) {
        self.maxTotal = maxTotal
        self.maxPerAddress = maxPerAddress
    }

    /// Counts a new connection from `address` if both limits allow it.
    mutating func open(address: String) -> Bool {
        let fromAddress = perAddress[address, default: 0]
        guard total < maxTotal, fromAddress < maxPerAddress else { return false }
        total += 1
        perAddress[address] = fromAddress + 1
        return true
    }

    mutating func close(address: String) {
        guard let fromAddress = perAddress[address] else { return }
        total -= 1
        perAddress[address] = fromAddress > 1 ? fromAddress - 1 : nil
    }

    /// The key a connection is counted under: its IP address.
    static func addressKey(_ address: SocketAddress?) -> String {
        address?.ipAddress ?? address?.description ?? "unknown"
    }
}
