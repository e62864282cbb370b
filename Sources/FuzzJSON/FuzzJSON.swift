import InputParsing

/// libFuzzer target (tools/fuzz.sh): JSON text (the Engine's parser, what every REST body and
/// run input goes through) and the REST run payload. Invariants: parse -> write -> parse gives
/// the same value and the written text is a fixpoint; the predicted length is the written
/// length; a payload the REST layer accepts has a user and re-encodes to the same payload.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    checkRoundTrip(bytes)
    checkRunPayload(bytes)
    return 0
}

private func checkRoundTrip(_ bytes: [UInt8]) {
    guard let value = try? JSONText.parse(bytes) else { return }
    var written: [UInt8] = []
    JSONText.write(value, into: &written)
    guard let again = try? JSONText.parse(written) else {
        preconditionFailure("written JSON does not parse: \(String(decoding: written, as: UTF8.self))")
    }
    precondition(again == value, "JSON round trip changed the value")
    var rewritten: [UInt8] = []
    JSONText.write(again, into: &rewritten)
    precondition(rewritten == written, "canonical JSON is not a fixpoint")
    precondition(JSONText.length(of: value, stoppingPast: Int.max) == written.count, "predicted length differs")
    if !written.isEmpty {
        precondition(JSONText.length(of: value, stoppingPast: written.count - 1) > written.count - 1, "early stop too early")
    }
}

private let contentTypes: [String?] = [
    "application/json", "Application/JSON; charset=utf-8", " application/json ;x=1", "text/plain", ";application/json", nil,
]

private func checkRunPayload(_ bytes: [UInt8]) {
    let contentType = contentTypes[Int(bytes.first ?? 0) % contentTypes.count]
    let acceptsType = contentType.map { ($0.lowercased().split(separator: ";", omittingEmptySubsequences: false).first ?? "")
        .trimmingBlanks() == "application/json" } ?? false
    let object = RESTRequestBody.object(contentType: contentType, body: bytes)
    let run = RESTRequestBody.run(contentType: contentType, body: bytes)
    guard acceptsType else {
        guard case .failure(.unsupportedMediaType) = object, run == .failure(.unsupportedMediaType) else {
            preconditionFailure("a body under content-type \(contentType.debugDescription) was read")
        }
        return
    }
    switch (object, run) {
    case (.failure(let a), .failure(let b)):
        precondition(a == b, "object and run refuse the same body differently")
    case (.success(let body), .failure(let failure)):
        guard case .invalidField = failure else { preconditionFailure("run refused an accepted object: \(failure)") }
        precondition(!body.user.isEmpty, "empty user accepted")
    case (.success(let body), .success(let payload)):
        precondition(!payload.user.isEmpty && payload.user == body.user, "user")
        let again: JSONValue = .object(["inputs": .object(payload.inputs), "user": .string(payload.user),
                                        "response_mode": .string(payload.responseMode.rawValue)])
        var text: [UInt8] = []
        JSONText.write(again, into: &text)
        precondition(RESTRequestBody.run(contentType: "application/json", body: text) == .success(payload),
                     "a re-encoded payload decodes differently")
    case (.failure(let failure), .success):
        preconditionFailure("run accepted a body object refused: \(failure)")
    }
}

extension Substring {
    fileprivate func trimmingBlanks() -> Substring {
        var slice = self
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return slice
    }
}
