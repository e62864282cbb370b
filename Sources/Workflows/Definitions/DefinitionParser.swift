import Crypto
import Engine
import Foundation
import Yams

/// Reads one definition file and checks it, collecting every problem it finds.
struct DefinitionParser {
    private static let topLevelKeys: Set<String> = ["name", "version", "description", "inputs", "outputs", "nodes", "on_error"]
    private static let nodeKeys: Set<String> = ["id", "kind", "title", "needs", "config", "timeout", "retries", "retry_backoff", "on_error"]

    let file: String
    private var problems: [WorkflowDefinitionError] = []
    private var nodeLines: [Int: Int] = [:]

    init(file: String) { self.file = file }

    /// The definition in `data`, or every problem found in it.
    static func parse(_ data: Data, file: String) -> Result<WorkflowDefinition, WorkflowCatalogError> {
        var parser = DefinitionParser(file: file)
        if let definition = parser.parse(data), parser.problems.isEmpty { return .success(definition) }
        return .failure(WorkflowCatalogError(problems: parser.problems))
    }

    // MARK: Reading

    private mutating func parse(_ data: Data) -> WorkflowDefinition? {
        guard let text = String(data: data, encoding: .utf8) else {
            report(.syntax, "the file is not UTF-8 text")
            return nil
        }
        guard let root = document(text) else { return nil }
        guard case .object(let object) = root else {
            report(.invalid, "the file must hold a mapping (name, inputs, nodes, ...), not \(root.typeName)")
            return nil
        }
        return definition(object, hash: SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined())
    }

    private mutating func document(_ text: String) -> JSONValue? {
        if file.lowercased().hasSuffix(".json") {
            do {
                return try JSONValue(parsing: text)
            } catch {
                report(.syntax, "not valid JSON: \(error)", cause: error)
                return nil
            }
        }
        do {
            guard let node = try Yams.compose(yaml: text) else {
                report(.syntax, "the file is empty")
                return nil
            }
            if case .mapping(let mapping) = node {
                for (key, value) in mapping where key.string == "nodes" {
                    if case .sequence(let sequence) = value {
                        for (index, element) in sequence.enumerated() { nodeLines[index] = element.mark?.line }
                    }
                }
            }
            return try Self.json(from: node)
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
                 .composer(_, let problem, let mark, _):
                report(.syntax, "not valid YAML: \(problem)", line: mark.line, cause: error)
            default:
                report(.syntax, "not valid YAML: \(error)", cause: error)
            }
            return nil
        } catch {
            report(.syntax, "not valid YAML: \(error)")
            return nil
        }
    }

    private struct YAMLShapeError: Error, CustomStringConvertible {
        let description: String
    }

    private static func json(from node: Yams.Node) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.description) {
            case .null: return .null
            case .bool: if let value = node.bool { return .bool(value) }
            case .int: if let value = node.int { return .integer(Int64(value)) }
            case .float: if let value = node.float, value.isFinite { return .number(value) }
            default: break
            }
            return .string(scalar.string)
        case .sequence(let sequence):
            return .array(try sequence.map(json(from:)))
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping {
                guard case .scalar(let scalar) = key else {
                    throw YAMLShapeError(description: "a mapping key at line \(key.mark?.line ?? 0) is not a plain value")
                }
                guard object[scalar.string] == nil else {
                    throw YAMLShapeError(description: "duplicate key '\(scalar.string)' at line \(key.mark?.line ?? 0)")
                }
                object[scalar.string] = try json(from: value)
            }
            return .object(object)
        case .alias(let alias):
            throw YAMLShapeError(description: "unresolved alias at line \(alias.mark?.line ?? 0)")
        }
    }

    // MARK: The workflow

    private mutating func definition(_ object: [String: JSONValue], hash: String) -> WorkflowDefinition? {
        for key in object.keys.sorted() where !Self.topLevelKeys.contains(key) {
            report(.invalid, "unknown field '\(key)' (known: \(Self.topLevelKeys.sorted().joined(separator: ", ")))")
        }
        let stem = (file as NSString).deletingPathExtension
        let name: String
        switch object["name"] {
        case nil: name = stem
        case .string(let value) where Self.isName(value): name = value
        default:
            report(.invalid, "name must be letters, digits, '_', '-' or '.'")
            name = stem
        }
        let version: String
        switch object["version"] {
        case nil: version = "sha256:" + hash.prefix(12)
        case .string(let value) where !value.isEmpty: version = value
        case .integer(let value): version = String(value)
        case .number(let value): version = String(value)
        default:
            report(.invalid, "version must be a string or a number")
            version = "sha256:" + hash.prefix(12)
        }
        var description: String?
        if let value = object["description"] {
            if case .string(let text) = value { description = text } else { report(.invalid, "description must be a string") }
        }
        let onError = errorStrategy(object["on_error"], default: .fail, node: nil) ?? .fail
        let inputs = inputDeclarations(object["inputs"])
        let outputs = outputNames(object["outputs"])

        guard case .array(let entries)? = object["nodes"], !entries.isEmpty else {
            report(.invalid, "nodes must be a non-empty list")
            return nil
        }
        var parsed: [ParsedNode] = []
        var seen: Set<String> = []
        for (index, entry) in entries.enumerated() {
            let id = entry.objectValue?["id"]?.stringValue
            if let id, !seen.insert(id).inserted {
                report(.duplicateNodeID, "duplicate node id '\(id)'", node: id, index: index)
                continue
            }
            if let node = parseNode(entry, index: index, defaultStrategy: onError) { parsed.append(node) }
        }
        // Nodes already reported as invalid are known: naming them is no dangling reference.
        let nodes = checkGraph(parsed, known: seen, inputs: inputs, outputs: outputs)
        guard problems.isEmpty, let nodes else { return nil }
        return WorkflowDefinition(
            name: name, version: version, contentHash: hash, file: file, description: description, inputs: inputs,
            nodes: nodes, outputs: outputs, onError: onError)
    }

    private mutating func inputDeclarations(_ value: JSONValue?) -> [InputDeclaration] {
        var entries: [(String, JSONValue)] = []
        switch value {
        case nil: return []
        case .object(let object):
            entries = object.keys.sorted().map { ($0, object[$0]!) }
        case .array(let array):
            for element in array {
                guard case .string(let name)? = element.objectValue?["name"] else {
                    report(.invalid, "inputs: each entry of the list needs a name")
                    continue
                }
                var spec = element.objectValue!
                spec["name"] = nil
                entries.append((name, .object(spec)))
            }
        default:
            report(.invalid, "inputs must be a mapping of name to declaration")
            return []
        }
        var declarations: [InputDeclaration] = []
        var names = Set<String>()
        for (name, spec) in entries {
            guard Self.isIdentifier(name) else {
                report(.invalid, "input '\(name)': a name is a letter or '_' followed by letters, digits, '_' or '-'")
                continue
            }
            // (The list form could name one input twice; `validateInputs` relies on unique names.)
            guard names.insert(name).inserted else {
                report(.invalid, "input '\(name)' is declared twice")
                continue
            }
            var fields: [String: JSONValue]
            switch spec {
            case .string: fields = ["type": spec]
            case .object(let object): fields = object
            default:
                report(.invalid, "input '\(name)': a declaration is a type name or a mapping")
                continue
            }
            for key in fields.keys.sorted() where !["type", "required", "default", "description"].contains(key) {
                report(.invalid, "input '\(name)': unknown field '\(key)'")
            }
            guard case .string(let typeName)? = fields["type"], let type = InputType(rawValue: typeName) else {
                report(.invalid, "input '\(name)': type must be one of \(InputType.allCases.map(\.rawValue).joined(separator: ", "))")
                continue
            }
            var required = false
            if let value = fields["required"] {
                guard case .bool(let flag) = value else {
                    report(.invalid, "input '\(name)': required must be true or false")
                    continue
                }
                required = flag
            }
            let defaultValue = fields["default"].flatMap { $0 == .null ? nil : $0 }
            if let defaultValue, !type.accepts(defaultValue) {
                report(.invalid, "input '\(name)': the default is \(defaultValue.typeName), not \(type.rawValue)")
            }
            declarations.append(InputDeclaration(
                name: name, type: type, required: required, defaultValue: defaultValue,
                description: fields["description"]?.stringValue))
        }
        return declarations
    }

    private mutating func outputNames(_ value: JSONValue?) -> [String] {
        switch value {
        case nil: return []
        case .array(let array):
            let names = array.compactMap(\.stringValue)
            if names.count != array.count { report(.invalid, "outputs must be a list of names") }
            return names
        case .object(let object): return object.keys.sorted()
        default:
            report(.invalid, "outputs must be a list of names")
            return []
        }
    }

    // MARK: Nodes

    private struct ParsedNode {
        let index: Int
        let id: String
        let kind: NodeKind
        let title: String
        let needs: [String]
        let config: JSONValue
        let timeout: Duration?
        let retry: RetryPolicy
        let onError: ErrorStrategy
        let behavior: any NodeBehavior
    }

    private mutating func parseNode(_ entry: JSONValue, index: Int, defaultStrategy: ErrorStrategy) -> ParsedNode? {
        guard case .object(let object) = entry else {
            report(.invalid, "nodes[\(index)] must be a mapping", index: index)
            return nil
        }
        guard case .string(let id)? = object["id"], Self.isIdentifier(id), id != "inputs" else {
            report(.invalid, "nodes[\(index)]: id must be a letter or '_' followed by letters, digits, '_' or '-' (and not 'inputs')",
                   index: index)
            return nil
        }
        var valid = true
        for key in object.keys.sorted() where !Self.nodeKeys.contains(key) {
            report(.invalid, "unknown field '\(key)'", node: id, index: index)
            valid = false
        }
        guard case .string(let kindName)? = object["kind"] else {
            report(.invalid, "kind is missing", node: id, index: index)
            return nil
        }
        let kind = NodeKind(rawValue: kindName)
        guard let behaviorType = NodeKinds.registry[kind] else {
            report(.unknownNodeKind,
                   "unknown node kind '\(kindName)' (known: \(NodeKinds.names.joined(separator: ", ")))",
                   node: id, index: index)
            return nil
        }
        var title = id
        if let value = object["title"] {
            if case .string(let text) = value { title = text } else {
                report(.invalid, "title must be a string", node: id, index: index)
                valid = false
            }
        }
        var needs: [String] = []
        switch object["needs"] {
        case nil: break
        case .string(let need): needs = [need]
        case .array(let array) where array.allSatisfy({ $0.stringValue != nil }): needs = array.compactMap(\.stringValue)
        default:
            report(.invalid, "needs must be a node id or a list of node ids", node: id, index: index)
            valid = false
        }
        let config = object["config"] ?? .object([:])
        guard case .object(let configObject) = config else {
            report(.invalid, "config must be a mapping", node: id, index: index)
            return nil
        }
        for key in configObject.keys.sorted() where !behaviorType.configFields.contains(key) {
            report(.invalid, "unknown config field '\(key)' for a \(kind.rawValue) node (known: \(behaviorType.configFields.sorted().joined(separator: ", ")))",
                   node: id, index: index)
            valid = false
        }
        var timeout: Duration?
        if let value = object["timeout"] {
            timeout = Self.duration(value)
            if timeout == nil || timeout! <= .zero {
                report(.invalid, "timeout must be a positive duration (seconds, or \"500ms\", \"2s\", \"1m\")", node: id, index: index)
                valid = false
            }
        }
        var retry = RetryPolicy()
        if let value = object["retries"] {
            guard case .integer(let count) = value, count >= 0, count <= 100 else {
                report(.invalid, "retries must be an integer from 0 to 100", node: id, index: index)
                return nil
            }
            retry.maxRetries = Int(count)
        }
        if let value = object["retry_backoff"] {
            guard let backoff = Self.duration(value), backoff >= .zero else {
                report(.invalid, "retry_backoff must be a duration", node: id, index: index)
                return nil
            }
            retry.backoff = backoff
        }
        guard let onError = errorStrategy(object["on_error"], default: defaultStrategy, node: id, index: index) else { return nil }
        let behavior: any NodeBehavior
        do {
            behavior = try behaviorType.init(config: NodeConfig(fields: configObject))
        } catch {
            report(error.code, error.message, node: id, index: index, cause: error.cause)
            return nil
        }
        guard valid else { return nil }
        return ParsedNode(index: index, id: id, kind: kind, title: title, needs: needs, config: config, timeout: timeout,
                          retry: retry, onError: onError, behavior: behavior)
    }

    // MARK: The graph

    /// Checks references, branches, cycles and template names; the nodes with their
    /// dependencies, or nil when the graph is broken.
    private mutating func checkGraph(_ parsed: [ParsedNode], known: Set<String>, inputs: [InputDeclaration],
                                     outputs: [String]) -> [NodeDefinition]? {
        let byID = Dictionary(uniqueKeysWithValues: parsed.map { ($0.id, $0) })
        var dependencies: [String: [String]] = [:]
        for node in parsed { dependencies[node.id] = node.needs.filter { byID[$0] != nil } }
        var branchOwner: [String: String] = [:]
        var broken = false

        for node in parsed {
            for need in node.needs where !known.contains(need) {
                report(.danglingReference, "needs '\(need)', which is not a node of this workflow", node: node.id, index: node.index)
                broken = true
            }
            guard let branches = node.behavior.branches else { continue }
            for target in branches.thenNodes + branches.elseNodes {
                guard byID[target] != nil else {
                    if !known.contains(target) {
                        report(.danglingReference, "branch node '\(target)' is not a node of this workflow", node: node.id, index: node.index)
                        broken = true
                    }
                    continue
                }
                if let owner = branchOwner[target] {
                    report(.invalid, "'\(target)' is already a branch of condition '\(owner)'", node: node.id, index: node.index)
                    broken = true
                    continue
                }
                branchOwner[target] = node.id
                if !dependencies[target]!.contains(node.id) { dependencies[target]!.append(node.id) }
            }
        }
        if broken { return nil }

        if let cycle = Self.findCycle(parsed.map(\.id), dependencies) {
            let first = byID[cycle[0]]!
            report(.cycle, "cycle: " + cycle.joined(separator: " -> "), node: first.id, index: first.index)
            return nil
        }

        var ancestors: [String: Set<String>] = [:]
        func collect(_ id: String) -> Set<String> {
            if let known = ancestors[id] { return known }
            var result: Set<String> = []
            for dependency in dependencies[id]! { result.insert(dependency); result.formUnion(collect(dependency)) }
            ancestors[id] = result
            return result
        }
        let declared = Set(inputs.map(\.name))
        for node in parsed {
            let reachable = collect(node.id)
            var reported: Set<String> = []
            for reference in node.behavior.templates.flatMap(\.references) {
                let head = reference.path[0]
                let key = reference.path.joined(separator: ".")
                guard reported.insert(key).inserted else { continue }
                if head == "inputs" {
                    if reference.path.count > 1, !declared.contains(reference.path[1]) {
                        report(.undeclaredInput, "a template uses input '\(reference.path[1])', which the workflow does not declare",
                               node: node.id, index: node.index)
                    }
                } else if known.contains(head) {
                    if byID[head] != nil && !reachable.contains(head) {
                        report(.danglingReference,
                               "a template uses node '\(head)', which this node does not depend on (add it to needs)",
                               node: node.id, index: node.index)
                    }
                } else if !reference.inSection {
                    report(.danglingReference,
                           "a template uses '\(key)', which is neither inputs.<name> nor a node id", node: node.id, index: node.index)
                }
            }
        }

        let ends = parsed.filter { $0.kind == .end }
        if ends.isEmpty { report(.invalid, "the workflow has no end node (it maps the outputs)") }
        if !outputs.isEmpty {
            for end in ends {
                let mapped = end.behavior.mappedOutputs ?? []
                for name in mapped where !outputs.contains(name) {
                    report(.invalid, "maps output '\(name)', which the workflow does not declare", node: end.id, index: end.index)
                }
                for name in outputs where !mapped.contains(name) {
                    report(.invalid, "does not map declared output '\(name)'", node: end.id, index: end.index)
                }
            }
        }

        return parsed.map { node in
            NodeDefinition(id: node.id, kind: node.kind, title: node.title, needs: node.needs,
                           dependencies: dependencies[node.id]!, config: node.config, timeout: node.timeout,
                           retry: node.retry, onError: node.onError, behavior: node.behavior)
        }
    }

    /// A dependency cycle as a path that ends where it starts, or nil.
    private static func findCycle(_ ids: [String], _ dependencies: [String: [String]]) -> [String]? {
        enum Mark { case visiting, done }
        var marks: [String: Mark] = [:]
        var stack: [String] = []
        func visit(_ id: String) -> [String]? {
            switch marks[id] {
            case .done: return nil
            case .visiting:
                let start = stack.firstIndex(of: id)!
                return Array(stack[start...]) + [id]
            case nil: break
            }
            marks[id] = .visiting
            stack.append(id)
            for dependency in dependencies[id] ?? [] {
                if let cycle = visit(dependency) { return cycle }
            }
            stack.removeLast()
            marks[id] = .done
            return nil
        }
        for id in ids {
            // Reported in dependency order: "a -> b" reads "a needs b".
            if let cycle = visit(id) { return cycle }
        }
        return nil
    }

    // MARK: Helpers

    private mutating func errorStrategy(_ value: JSONValue?, default fallback: ErrorStrategy, node: String?, index: Int? = nil) -> ErrorStrategy? {
        guard let value else { return fallback }
        guard case .string(let name) = value, let strategy = ErrorStrategy(rawValue: name) else {
            report(.invalid, "on_error must be 'fail' or 'continue'", node: node, index: index)
            return nil
        }
        return strategy
    }

    private mutating func report(_ code: WorkflowDefinitionError.Code, _ message: String, node: String? = nil,
                                 index: Int? = nil, line: Int? = nil, cause: (any Error & Sendable)? = nil) {
        problems.append(WorkflowDefinitionError(
            code: code, file: file, line: line ?? index.flatMap { nodeLines[$0] }, node: node, message: message, cause: cause))
    }

    static func isIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || (first.isASCII && CharacterSet.letters.contains(first)) else {
            return false
        }
        return text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-") }
    }

    private static func isName(_ text: String) -> Bool {
        !text.isEmpty && text.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-.".unicodeScalars.contains($0))
        }
    }

    /// Seconds as a number, or a string such as `500ms`, `1.5s`, `2m`, `1h`.
    static func duration(_ value: JSONValue) -> Duration? {
        if let seconds = value.doubleValue { return seconds.isFinite ? .milliseconds(Int64((seconds * 1000).rounded())) : nil }
        guard case .string(let text) = value else { return nil }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let number = Double(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), number.isFinite else {
                continue
            }
            return .milliseconds(Int64((number * scale * 1000).rounded()))
        }
        return nil
    }
}
