import Testing
import InputParsing

/// The parsers the fuzz-headers and fuzz-json harnesses drive, on the cases their properties
/// name (Sources/FuzzHeaders, Sources/FuzzJSON).
@Suite("Parsers of untrusted input")
struct InputParsingTests {
    @Test("grpc-timeout: 1-8 digits and a unit, saturating; the effective value never exceeds the cap")
    func grpcTimeout() {
        #expect(GRPCTimeout.parse("100m") == 100_000_000)
        #expect(GRPCTimeout.parse("99999999H") == Int64.max)
        for bad in ["", "1", "m", "123456789S", "1x", "-1S", "1 S", "１S"] {
            #expect(GRPCTimeout.parse(bad) == nil, "\(bad)")
        }
        let day: Int64 = 86_400_000_000_000
        #expect(GRPCTimeout.effective("99999999H", cap: day) == day)
        #expect(GRPCTimeout.effective("2S", cap: day) == 2_000_000_000)
        #expect(GRPCTimeout.effective("2S", cap: 0) == 0)
        #expect(GRPCTimeout.effective("2", cap: day) == nil)
    }

    @Test("content-type: the media type is what precedes the first ';' (fuzz-headers found ';application/grpc' accepted)")
    func grpcContentType() {
        #expect(GRPCContentType.isGRPC("application/grpc"))
        #expect(GRPCContentType.isGRPC("Application/GRPC+proto; charset=utf-8"))
        #expect(!GRPCContentType.isGRPC("application/grpc-web"))
        #expect(!GRPCContentType.isGRPC(""))
        #expect(!GRPCContentType.isGRPC(";application/grpc"))
        // Tests/Fuzz/Corpus/fuzz-headers/crash-content-type-leading-semicolons, after the selector byte.
        #expect(!GRPCContentType.isGRPC(String(decoding: Array(";;;;;;;;application/grpc;".utf8) + [0xC5, 0x27], as: UTF8.self)))
        // Bytes, not Characters: U+037E (Greek question mark) is canonically equivalent to ';' for
        // Swift's String comparison, but separates nothing in an HTTP field value
        // (Tests/Fuzz/Corpus/fuzz-headers/crash-content-type-greek-question-mark).
        #expect(!GRPCContentType.isGRPC("application/grpc+proto\u{37E}"))
        #expect(!GRPCContentType.isGRPC("APPLICATION/GRPC\u{37E} charset=utf-8"))
        #expect(GRPCContentType.isGRPC("APPLICATION/GRPC;\u{37E}"))
    }

    @Test("REST bodies: the media type before ';', blanks around it dropped, is application/json in any ASCII case")
    func restMediaType() {
        let body = Array(#"{"user":"u"}"#.utf8)
        for accepted in ["application/json", "Application/JSON; charset=utf-8", " application/json ", "\tapplication/json;x=1",
                         "APPLICATION/json ;"] {
            #expect((try? RESTRequestBody.object(contentType: accepted, body: body).get())?.user == "u", "\(accepted)")
        }
        for refused in [nil, "", "application/jsonx", "text/json", "application/json\u{301}", "application /json",
                        ";application/json", "application/j\u{17F}on", "applicatıon/json"] as [String?] {
            guard case .failure(let failure) = RESTRequestBody.object(contentType: refused, body: body) else {
                Issue.record("accepted \(String(describing: refused))")
                continue
            }
            #expect(failure == .unsupportedMediaType, "\(String(describing: refused))")
        }
    }

    @Test("authorization: the key after a case-insensitive Bearer, blanks around it dropped; blanks alone are no key")
    func bearer() {
        #expect(BearerCredentials.parse("Bearer abc") == .success("abc"))
        #expect(BearerCredentials.parse("bEaReR \t abc \t") == .success("abc"))
        #expect(BearerCredentials.parse("Bearer a b") == .success("a b"))
        #expect(BearerCredentials.parse(nil) == .failure(.missingCredentials))
        #expect(BearerCredentials.parse("Bearer") == .failure(.missingCredentials))
        #expect(BearerCredentials.parse("Bearer\tabc") == .failure(.missingCredentials))
        #expect(BearerCredentials.parse("Basic abc") == .failure(.wrongScheme))
        #expect(BearerCredentials.parse("Bearerx abc") == .failure(.wrongScheme))
        #expect(BearerCredentials.parse("Bearer ") == .failure(.emptyKey))
        #expect(BearerCredentials.parse("Bearer \t ") == .failure(.emptyKey))
    }

    @Test("idempotency keys: 1-255 printable ASCII, spaces inside only (HTTP strips them at either end)")
    func idempotencyKey() {
        #expect(IdempotencyKey.isValid("order-42"))
        #expect(IdempotencyKey.isValid("order 42"))
        #expect(IdempotencyKey.isValid(String(repeating: "k", count: 255)))
        #expect(!IdempotencyKey.isValid(String(repeating: "k", count: 256)))
        #expect(!IdempotencyKey.isValid(""))
        #expect(!IdempotencyKey.isValid(" order"))
        #expect(!IdempotencyKey.isValid("order "))
        #expect(!IdempotencyKey.isValid(" "))
        #expect(!IdempotencyKey.isValid("order\t42"))
        #expect(!IdempotencyKey.isValid("ordér"))
    }

    @Test("-bin metadata: comma-separated base64, padded or not; anything else refused")
    func binaryMetadata() {
        #expect(BinaryMetadata.decode("AAEC, AQID==") == [[0, 1, 2], [1, 2, 3]])
        #expect(BinaryMetadata.decode("AQ") == [[1]])
        #expect(BinaryMetadata.decode("A") == nil)
        #expect(BinaryMetadata.decode("A*==") == nil)
        #expect(Base64.encodeUnpadded([1]) == "AQ")
    }

    @Test("the sniffer's verdict is final: every prefix is undecided or agrees, and more bytes change nothing")
    func snifferStable() {
        let preface = ProtocolDetection.preface
        let inputs: [([UInt8], Bool, ProtocolDetection.Verdict)] = [
            (preface + [0, 0, 4], false, .http2),
            (Array("PRI * HTTP/1.1\r\n".utf8), false, .http1),
            (Array("POST /v1/workflows/run HTTP/1.1\r\n".utf8), false, .http1),
            ([0x16, 0x03, 0x01], true, .tls),
            ([0x16, 0x03, 0x01], false, .http1),
        ]
        for (bytes, tls, verdict) in inputs {
            #expect(ProtocolDetection.detect(bytes, tls: tls) == verdict)
            for count in 0..<bytes.count {
                let early = ProtocolDetection.detect(bytes.prefix(count), tls: tls)
                #expect(early == nil || early == verdict, "\(bytes.prefix(count))")
            }
            #expect(ProtocolDetection.detect(bytes + [0xFF], tls: tls) == verdict)
        }
        #expect(ProtocolDetection.detect(preface.dropLast(), tls: true) == nil)
        #expect(ProtocolDetection.detect([UInt8](), tls: true) == nil)
    }

    @Test("JSON written canonically parses back to the same value and the same text")
    func jsonRoundTrip() throws {
        for text in [#"{"b":[1,2.5,-0,1e2,true,null],"a":"\u00e9\ud83d\ude00\n\t\"\\ \/"}"#,
                     "[1.5e300,-9223372036854775808,9223372036854775808,0.1,1E-7,5e-324]", #""\u0000\u001f""#] {
            let value = try JSONValue(parsing: text)
            let written = value.jsonText
            let again = try JSONValue(parsing: written)
            #expect(again == value)
            #expect(again.jsonText == written)
            #expect(JSONText.length(of: value, stoppingPast: .max) == written.utf8.count)
        }
    }

    @Test("REST run payload: JSON media type (parameters allowed, nothing before it), an object with a user and inputs")
    func runPayload() {
        func run(_ body: String, _ contentType: String? = "application/json") -> Result<RESTRequestBody.RunPayload, RESTRequestBody.Failure> {
            RESTRequestBody.run(contentType: contentType, body: Array(body.utf8))
        }
        #expect(run(#"{"inputs":{"a":1},"user":"u"}"#) == .success(.init(inputs: ["a": 1], responseMode: .blocking, user: "u")))
        #expect(run(#"{"inputs":{},"user":7,"response_mode":"async","files":null}"#, "Application/JSON; charset=utf-8")
                == .success(.init(inputs: [:], responseMode: .async, user: "7")))
        #expect(run(#"{"inputs":{},"user":"u"}"#, ";application/json") == .failure(.unsupportedMediaType))
        #expect(run(#"{"inputs":{},"user":"u"}"#, nil) == .failure(.unsupportedMediaType))
        #expect(run(#"{"inputs":{},"user":"u""#) == .failure(.notJSON))
        #expect(run(#"[1]"#) == .failure(.notObject))
        #expect(run(#"{"inputs":{},"user":""}"#) == .failure(.missingUser))
        #expect(run(#"{"user":"u"}"#) == .failure(.invalidField(field: "inputs", problem: "Field required [type=missing]")))
        guard case .failure(.invalidField(field: "response_mode", _)) = run(#"{"inputs":{},"user":"u","response_mode":"x"}"#) else {
            Issue.record("response_mode not refused")
            return
        }
        guard case .failure(.invalidField(field: "files", _)) = run(#"{"inputs":{},"user":"u","files":{}}"#) else {
            Issue.record("files not refused")
            return
        }
    }
}
