import Engine
import Foundation
import Synchronization

/// What the runner keeps out of events, outputs and error texts: credentials in headers, URL
/// queries and user info, and long upstream bodies.
enum Redaction {
    /// What a hidden value is shown as.
    static let mask = "[redacted]"
    /// Longest excerpt of an upstream body or error an error text quotes.
    static let excerptLimit = 120

    private static let secretHeaderNames: Set<String> = [
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "apikey",
        "x-auth-token", "x-access-token", "x-csrf-token", "x-amz-security-token",
    ]
    private static let secretHeaderWords = ["token", "secret", "password", "passwd", "session", "api-key", "apikey", "credential", "signature"]

    /// Whether a header of this name carries a credential (`authorization`, cookies, tokens, ...).
    static func isSecretHeader(_ name: String) -> Bool {
        let name = name.lowercased()
        return secretHeaderNames.contains(name) || secretHeaderWords.contains { name.contains($0) }
    }

    /// `url` without user info, query and fragment (a query is shown as `?…`): what error
    /// texts and events name.
    static func url(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.scheme != nil, components.host != nil else {
            // Not a URL we can take apart: cut at the first '?' or '#', and drop user info.
            var cut = String(text.prefix { $0 != "?" && $0 != "#" })
            if let at = cut.firstIndex(of: "@"), let scheme = cut.range(of: "://"), scheme.upperBound < at {
                cut.removeSubrange(scheme.upperBound...at)
            }
            return cut.count < text.count ? cut + "?…" : cut
        }
        let hadQuery = components.percentEncodedQuery != nil
        components.user = nil
        components.password = nil
        components.percentEncodedQuery = nil
        components.fragment = nil
        return (components.string ?? "") + (hadQuery ? "?…" : "")
    }

    /// The start of `text` (at most `excerptLimit` characters, one line), with anything that
    /// looks like a credential (`Bearer …`, `token=…`, `"password": "…"`) masked.
    static func excerpt(_ text: String) -> String {
        var line = text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
            .trimmingCharacters(in: .whitespaces)
        line = maskCredentials(line)
        guard line.count > excerptLimit else { return line }
        return line.prefix(excerptLimit) + "…"
    }

    private static let credentialPatterns: [NSRegularExpression] = [
        #"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]+"#,
        #"(?i)((?:[a-z0-9_-]*(?:token|secret|password|passwd|api[_-]?key|session|credential|signature|auth)[a-z0-9_-]*)"?\s*[:=]\s*"?)[^"&\s,}]+"#,
    ].map { try! NSRegularExpression(pattern: $0) }

    static func maskCredentials(_ text: String) -> String {
        var result = text
        for (index, pattern) in credentialPatterns.enumerated() {
            let range = NSRange(result.startIndex..., in: result)
            result = pattern.stringByReplacingMatches(in: result, range: range, withTemplate: index == 0 ? "$1 \(mask)" : "$1\(mask)")
        }
        return result
    }
}

/// The secret values one run has handled so far (credential header values, secret-named
/// environment values, headers a definition lists in `secret_headers`): the runner replaces
/// every occurrence of them, raw or JSON-escaped, with `[redacted]` in the run's node events,
/// outputs and error, wherever an upstream echoed them or a template copied them.
final class SecretValues: Sendable {
    /// Shorter values are not scrubbed (they would mask ordinary text).
    static let minimumLength = 4

    private let values = Mutex<[String]>([])

    func add(_ secrets: [String]) {
        let kept = secrets.filter { $0.count >= Self.minimumLength }
        guard !kept.isEmpty else { return }
        values.withLock { values in
            for secret in kept where !values.contains(secret) {
                values.append(secret)
                // A secret with a scheme word (`Bearer abc`) also travels as its token alone.
                if let token = secret.split(separator: " ").last.map(String.init), token != secret,
                   token.count >= Self.minimumLength, !values.contains(token) {
                    values.append(token)
                }
            }
            values.sort { $0.count > $1.count }  // the longest first: a part never splits a whole
        }
    }

    func scrub(_ text: String) -> String {
        let secrets = values.withLock { $0 }
        guard !secrets.isEmpty else { return text }
        var result = text
        for secret in secrets {
            result = result.replacingOccurrences(of: secret, with: Redaction.mask)
            let escaped = String(JSONValue.string(secret).jsonText.dropFirst().dropLast())
            if escaped != secret { result = result.replacingOccurrences(of: escaped, with: Redaction.mask) }
        }
        return result
    }
}
