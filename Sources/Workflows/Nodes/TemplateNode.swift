import Engine

/// `template`: renders text (Mustache) from the run's inputs and earlier outputs; `{text}`.
struct TemplateNode: NodeBehavior {
    static let kind = NodeKind.template
    static let configFields: Set<String> = ["template"]

    let template: TextTemplate

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard case .string? = config["template"] else { throw config.missing("template", "a string") }
        template = try config.text(config["template"]!, path: "config.template")
    }

    var templates: [ValueTemplate] { [.text(template)] }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let text = template.renderText(scope.context)
        return PreparedNode(eventInputs: ["template": .string(template.source)], instant: { ["text": .string(text)] })
    }
}
