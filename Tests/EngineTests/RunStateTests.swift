import Testing
import Engine

@Suite("Run states")
struct RunStateTests {
    @Test("terminal states never change again; scheduled and running move forward only")
    func transitions() {
        for state in RunState.allCases where state.isTerminal {
            for next in RunState.allCases { #expect(!state.canTransition(to: next), "\(state) -> \(next)") }
        }
        #expect(RunState.scheduled.canTransition(to: .running))
        #expect(RunState.scheduled.canTransition(to: .stopped))
        #expect(!RunState.running.canTransition(to: .scheduled))
        #expect(RunState.running.canTransition(to: .partialSucceeded))
    }
}
