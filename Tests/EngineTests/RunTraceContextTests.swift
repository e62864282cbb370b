import Engine
import Testing

@Suite("Run trace context: W3C traceparent and tracestate as received")
struct RunTraceContextTests {
    static let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @Test("a valid traceparent is kept as sent, with its trace id and flags")
    func valid() throws {
        let context = try #require(RunTraceContext(traceParent: Self.valid))
        #expect(context.traceParent == Self.valid)
        #expect(context.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(context.flags == "01")
        #expect(context.traceState == nil)
        #expect(RunTraceContext(traceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.flags == "00")
    }

    @Test("other versions, zero ids, upper-case hex, wrong lengths and garbage are ignored", arguments: [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version 01
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version ff (invalid)
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   // all-zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   // upper-case trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",   // upper-case span id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G",   // not hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  // too long
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + String(repeating: "0", count: 200),
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    // short trace id
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",   // wrong delimiters
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".replacingOccurrences(of: "4bf9", with: "4bé"),
        "", "garbage", "traceparent: 00-4bf9", "\u{0}",
    ])
    func invalid(_ value: String) {
        #expect(RunTraceContext(traceParent: value) == nil)
    }

    @Test("two traceparent values are ignored; no value is no context")
    func repeated() {
        #expect(RunTraceContext(traceParents: [Self.valid, Self.valid]) == nil)
        #expect(RunTraceContext(traceParents: []) == nil)
        #expect(RunTraceContext(traceParent: nil) == nil)
    }

    @Test("tracestate is kept with a valid traceparent, joined across values; a malformed or too long one is dropped")
    func traceState() throws {
        let context = try #require(RunTraceContext(traceParents: [Self.valid], traceStates: ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]))
        #expect(context.traceParent == Self.valid)
        #expect(context.traceState == "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
        #expect(context.headers.map(\.name) == ["traceparent", "tracestate"])

        #expect(RunTraceContext(traceParent: Self.valid, traceState: "not a list member")?.traceState == nil)
        #expect(RunTraceContext(traceParent: Self.valid, traceState: "")?.traceState == nil)
        let long = (0..<60).map { "v\($0)=\(String(repeating: "x", count: 8))" }.joined(separator: ",")
        #expect(long.utf8.count > RunTraceContext.maxTraceStateBytes)
        let kept = try #require(RunTraceContext(traceParent: Self.valid, traceState: long))
        #expect(kept.traceParent == Self.valid)
        #expect(kept.traceState == nil)
        // A tracestate alone is no trace context.
        #expect(RunTraceContext(traceParents: [], traceStates: ["rojo=1"]) == nil)
    }

    @Test("a call's traceparent keeps the trace id and flags with a new parent id; a fresh context is a valid new trace")
    func children() throws {
        let context = try #require(RunTraceContext(traceParent: Self.valid))
        #expect(context.traceParent(parentID: "b7ad6b7169203331") == "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01")
        let child = try #require(RunTraceContext(traceParent: context.childTraceParent()))
        #expect(child.traceID == context.traceID)
        #expect(child.traceParent != context.traceParent)

        let fresh = RunTraceContext.fresh()
        #expect(RunTraceContext(traceParent: fresh.traceParent) == fresh)
        #expect(fresh.flags == "01")
        #expect(fresh.traceID != RunTraceContext.fresh().traceID)
    }

    @Test("the stored text reads back to the same context, with and without tracestate")
    func storedText() throws {
        for context in [RunTraceContext(traceParent: Self.valid), RunTraceContext(traceParent: Self.valid, traceState: "a=1,b=2")] {
            let context = try #require(context)
            #expect(RunTraceContext(storedText: context.storedText) == context)
        }
    }
}
