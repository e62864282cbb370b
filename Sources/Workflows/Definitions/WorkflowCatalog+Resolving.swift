import Engine

extension WorkflowCatalog: WorkflowResolving {
    /// The workflow's version and its inputs checked against the declaration, defaults applied.
    public func resolve(workflow: String, inputsJSON: String) throws -> ResolvedWorkflow {
        guard let definition = self.workflow(named: workflow) else {
            throw EngineError(code: .invalidRequest, message: "unknown workflow '\(workflow)'", field: "workflow")
        }
        let inputs = try definition.validateInputs(json: inputsJSON)
        return ResolvedWorkflow(name: definition.name, version: definition.version, inputsJSON: JSONValue.object(inputs).jsonText)
    }

    /// The workflow's name, version, description and declared inputs.
    public func describe(workflow: String) -> WorkflowDescription? {
        self.workflow(named: workflow).map {
            WorkflowDescription(name: $0.name, version: $0.version, description: $0.description, inputs: $0.inputs)
        }
    }
}
