import Engine
import Foundation

/// The workflows a server runs, loaded from a directory of definition files (`*.yaml`, `*.yml`,
/// `*.json`). Loading checks every file and fails with all the problems found, each naming its
/// file, node and reason.
public struct WorkflowCatalog: Sendable {
    /// By name.
    public let workflows: [String: WorkflowDefinition]

    public static let fileExtensions: Set<String> = ["yaml", "yml", "json"]

    /// A catalog of `definitions`; two with one name are refused.
    public init(definitions: [WorkflowDefinition]) throws(WorkflowCatalogError) {
        var workflows: [String: WorkflowDefinition] = [:]
        var problems: [WorkflowDefinitionError] = []
        for definition in definitions {
            if let earlier = workflows[definition.name] {
                problems.append(WorkflowDefinitionError(
                    code: .duplicateWorkflow, file: definition.file,
                    message: "workflow '\(definition.name)' is already defined in \(earlier.file)"))
                continue
            }
            workflows[definition.name] = definition
        }
        guard problems.isEmpty else { throw WorkflowCatalogError(problems: problems) }
        self.workflows = workflows
    }

    /// Loads every definition file in `directory` (not its subdirectories).
    public static func load(directory: URL) throws(WorkflowCatalogError) -> WorkflowCatalog {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw WorkflowCatalogError(problems: [WorkflowDefinitionError(
                code: .syntax, file: directory.path, message: "cannot read the directory: \(error.localizedDescription)")])
        }
        var definitions: [WorkflowDefinition] = []
        var problems: [WorkflowDefinitionError] = []
        for name in names.sorted() where fileExtensions.contains((name as NSString).pathExtension.lowercased()) {
            let data: Data
            do {
                data = try Data(contentsOf: directory.appendingPathComponent(name))
            } catch {
                problems.append(WorkflowDefinitionError(code: .syntax, file: name, message: "cannot read the file: \(error.localizedDescription)"))
                continue
            }
            switch DefinitionParser.parse(data, file: name) {
            case .success(let definition): definitions.append(definition)
            case .failure(let error): problems += error.problems
            }
        }
        let catalog: WorkflowCatalog
        do {
            catalog = try WorkflowCatalog(definitions: definitions)
        } catch {
            throw WorkflowCatalogError(problems: problems + error.problems)
        }
        guard problems.isEmpty else { throw WorkflowCatalogError(problems: problems) }
        return catalog
    }

    /// Parses one definition (YAML, or JSON when `file` ends in `.json`).
    public static func parse(_ text: String, file: String) throws(WorkflowCatalogError) -> WorkflowDefinition {
        try DefinitionParser.parse(Data(text.utf8), file: file).get()
    }

    public func workflow(named name: String) -> WorkflowDefinition? { workflows[name] }

    /// A submission of `workflow` with its inputs checked against the declaration and the
    /// defaults applied; `invalidRequest` naming the field (`workflow`, `inputs.<name>`) otherwise.
    public func runRequest(tenant: String, workflow: String, inputsJSON: String, user: String, trigger: Trigger,
                           transport: Transport, idempotencyKey: String? = nil) throws(EngineError) -> RunRequest {
        guard let definition = workflows[workflow] else {
            throw EngineError(code: .invalidRequest, message: "unknown workflow '\(workflow)'", field: "workflow")
        }
        let inputs = try definition.validateInputs(json: inputsJSON)
        return RunRequest(tenant: tenant, workflow: definition.name, workflowVersion: definition.version,
                          inputsJSON: JSONValue.object(inputs).jsonText, user: user, trigger: trigger,
                          transport: transport, idempotencyKey: idempotencyKey)
    }
}

extension WorkflowDefinition {
    /// The submitted inputs (a JSON object as text) checked against the declaration, with
    /// defaults applied. Missing required inputs, wrong types and undeclared names are
    /// `invalidRequest` errors whose `field` is `inputs.<name>`.
    public func validateInputs(json: String) throws(EngineError) -> [String: JSONValue] {
        let value: JSONValue
        do {
            value = try JSONValue(parsing: json)
        } catch {
            throw EngineError(code: .invalidRequest, message: "inputs are not valid JSON", field: "inputs")
        }
        guard case .object(let submitted) = value else {
            throw EngineError(code: .invalidRequest, message: "inputs must be a JSON object", field: "inputs")
        }
        return try validateInputs(submitted)
    }

    /// `validateInputs(json:)` for a parsed object.
    public func validateInputs(_ submitted: [String: JSONValue]) throws(EngineError) -> [String: JSONValue] {
        // Every submitted name is declared when as many declared names were submitted (names
        // are unique on both sides); only then is the first unknown one (by name) looked for.
        if inputs.reduce(0, { $0 + (submitted[$1.name] == nil ? 0 : 1) }) != submitted.count {
            let declared = Set(inputs.map(\.name))
            if let unknown = submitted.keys.sorted().first(where: { !declared.contains($0) }) {
                throw EngineError(code: .invalidRequest, message: "inputs.\(unknown) is not an input of workflow '\(name)'",
                                  field: "inputs.\(unknown)")
            }
        }
        var result: [String: JSONValue] = [:]
        result.reserveCapacity(inputs.count)
        for input in inputs {
            guard let value = submitted[input.name], value != .null else {
                if let defaultValue = input.defaultValue {
                    result[input.name] = defaultValue
                } else if input.required {
                    let field = "inputs.\(input.name)"
                    throw EngineError(code: .invalidRequest, message: "\(field) is required", field: field)
                }
                continue
            }
            guard input.type.accepts(value) else {
                let field = "inputs.\(input.name)"
                throw EngineError(code: .invalidRequest, message: "\(field) must be \(input.type.rawValue), not \(value.typeName)",
                                  field: field)
            }
            if input.type == .integer, case .number(let number) = value {
                result[input.name] = .integer(Int64(number))
            } else {
                result[input.name] = value
            }
        }
        return result
    }
}
