import Engine

/// `end`: maps values (templates, usually references) to the workflow's outputs.
struct EndNode: NodeBehavior {
    static let kind = NodeKind.end
    static let configFields: Set<String> = ["outputs"]

    let outputs: [String: ValueTemplate]

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard case .object(let outputs)? = config["outputs"] else {
            throw config.missing("outputs", "a mapping of output name to value")
        }
        var compiled: [String: ValueTemplate] = [:]
        for name in outputs.keys.sorted() {
            compiled[name] = try config.template(outputs[name]!, path: "config.outputs.\(name)")
        }
        self.outputs = compiled
    }

    var templates: [ValueTemplate] { Array(outputs.values) }
    var mappedOutputs: [String]? { outputs.keys.sorted() }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let mapped = JSONValue.object(outputs.mapValues { $0.resolve(scope.context) })
        return PreparedNode(eventInputs: mapped, instant: { mapped })
    }
}
