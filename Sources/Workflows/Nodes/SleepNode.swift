import Engine

/// `sleep`: waits `seconds` (a number or a template) times `fraction`, on the runner's clock.
struct SleepNode: NodeBehavior {
    static let kind = NodeKind.sleep
    static let configFields: Set<String> = ["seconds", "fraction"]

    /// Seconds (a number, or a template that resolves to one).
    let seconds: ValueTemplate
    /// Multiplies `seconds`: four sleeps of `fraction: 0.25` add up to `seconds`.
    let fraction: Double

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard let value = config["seconds"] else { throw config.missing("seconds", "a number or a template") }
        switch value {
        case .integer, .number:
            if value.doubleValue! < 0 { throw config.invalid("config.seconds must not be negative") }
        case .string: break
        default: throw config.invalid("config.seconds must be a number or a template")
        }
        seconds = try config.template(value, path: "config.seconds")
        var fraction = 1.0
        if let value = config["fraction"] {
            guard let number = value.doubleValue, number > 0 else { throw config.invalid("config.fraction must be a positive number") }
            fraction = number
        }
        self.fraction = fraction
    }

    var templates: [ValueTemplate] { [seconds] }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let value = seconds.resolve(scope.context)
        guard let number = value.doubleValue ?? value.stringValue.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }),
              number.isFinite, number >= 0 else {
            throw WorkflowNodeError(code: .invalidValue, message: "seconds must be a number of seconds, not \(value.jsonText)")
        }
        let total = number * fraction
        return PreparedNode(eventInputs: ["seconds": .number(total)]) { environment in
            try await environment.clock.sleep(for: .milliseconds(Int64((total * 1000).rounded())))
            return ["seconds": .number(total)]
        }
    }
}
