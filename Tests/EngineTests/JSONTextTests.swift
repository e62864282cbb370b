@testable import Engine
import InputParsing
import Foundation
import Testing

@Suite("JSON text: the hand-written parser and canonical writer")
struct JSONTextTests {
    /// The Codable form the parser replaced, as the reference.
    private func reference(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    @Test("valid documents parse as the Codable decoder read them, and write back as JSONEncoder wrote them",
          arguments: [
              #"{}"#, #"[]"#, #"null"#, #"true"#, #"false"#, #"0"#, #"-0"#, #"42"#, #"-9223372036854775808"#,
              #"9223372036854775807"#, #"1.5"#, #"-2.25e-3"#, #"1e300"#, #"3.0"#, #"1E2"#, #""""#,
              #" { "b" : [1, 2.5, "x", null, true, {"z": {}}], "a": "\u00e9\ud83d\ude00\n\t\"\\\/", "c": -7 } "#,
              #"{"name":"Ada","n":1,"nested":{"k":[[],[{}]]}}"#, #""\u0001\u001f\b\f""#, #"["ünï", "☺", "🙂"]"#,
          ])
    func agreesWithCodable(_ text: String) throws {
        let ours = try JSONValue(parsing: text)
        #expect(ours == (try reference(text)), "\(text)")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let expected = String(decoding: try encoder.encode(ours), as: UTF8.self)
        #expect(ours.jsonText == expected, "\(text)")
        let length = ours.jsonText.utf8.count
        #expect(JSONText.length(of: ours, stoppingPast: length) == length, "\(text)")
        #expect(JSONText.length(of: ours, stoppingPast: length - 1) > length - 1, "\(text)")
        #expect(try JSONValue(parsing: ours.jsonText) == ours)
    }

    @Test("invalid documents are refused with the offset of the problem",
          arguments: [
              "", " ", "{", "[1,]", #"{"a":1,}"#, "01", "1.", ".5", "-", "+1", "1e", "tru", "nul", #"{"a" 1}"#, #"{a:1}"#,
              #""abc"#, "\"a\u{01}b\"", #""\x""#, #""\ud800""#, #""\udc00x""#, "[1] 2", "// c\n1", "NaN", "1e999",
          ])
    func refusesInvalid(_ text: String) {
        #expect(throws: JSONText.ParseError.self, "\(text.debugDescription)") { try JSONValue(parsing: text) }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: JSONText.ParseError.self) { try JSONValue(parsing: Data([0x22, 0xC3, 0x28, 0x22])) }
    }

    @Test("nesting deeper than the bound is refused without exhausting the stack")
    func depthBound() throws {
        let shallow = String(repeating: "[", count: JSONText.maxDepth) + String(repeating: "]", count: JSONText.maxDepth)
        #expect(throws: Never.self) { try JSONValue(parsing: shallow) }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONText.ParseError.self) { try JSONValue(parsing: deep) }
    }
}
