import Engine
import Foundation

/// `condition`: compares two values; `{result, branch}`. The nodes of the branch not taken are
/// skipped (and so are nodes that depend only on skipped nodes).
struct ConditionNode: NodeBehavior {
    static let kind = NodeKind.condition
    static let configFields: Set<String> = ["left", "op", "right", "then", "else"]

    let left: ValueTemplate
    let op: ComparisonOperator
    let right: ValueTemplate
    let branches: NodeBranches?

    init(config: NodeConfig) throws(NodeConfigProblem) {
        guard let left = config["left"] else { throw config.missing("left", "a value or a template") }
        guard let right = config["right"] else { throw config.missing("right", "a value or a template") }
        guard case .string(let opName)? = config["op"], let op = ComparisonOperator(rawValue: opName) else {
            throw config.invalid("config.op must be one of \(ComparisonOperator.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let thenNodes = try config.nodeIDs("then")
        let elseNodes = try config.nodeIDs("else")
        guard !thenNodes.isEmpty || !elseNodes.isEmpty else {
            throw config.invalid("a condition needs a branch: config.then or config.else")
        }
        self.left = try config.template(left, path: "config.left")
        self.right = try config.template(right, path: "config.right")
        self.op = op
        branches = NodeBranches(thenNodes: thenNodes, elseNodes: elseNodes)
    }

    var templates: [ValueTemplate] { [left, right] }

    func prepare(_ scope: NodeScope) throws(WorkflowNodeError) -> PreparedNode {
        let left = left.resolve(scope.context), right = right.resolve(scope.context)
        return PreparedNode(eventInputs: ["left": left, "op": .string(op.rawValue), "right": right], instant: { [op] in
            let result = try Comparison.evaluate(left, op, right)
            return ["result": .bool(result), "branch": .string(result ? "then" : "else")]
        })
    }
}

/// The comparisons a `condition` node makes.
public enum ComparisonOperator: String, Sendable, CaseIterable {
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="
    case contains
}

/// The comparisons of `condition` nodes. Numbers compare as numbers, and a string that holds a
/// number compares with a number as that number (templates render numbers as text).
enum Comparison {
    static func evaluate(_ left: JSONValue, _ op: ComparisonOperator, _ right: JSONValue) throws(WorkflowNodeError) -> Bool {
        switch op {
        case .equal: return equal(left, right)
        case .notEqual: return !equal(left, right)
        case .contains: return try contains(left, right)
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let order: ComparisonResult
            if let a = number(left), let b = number(right) {
                order = a < b ? .orderedAscending : a > b ? .orderedDescending : .orderedSame
            } else if case .string(let a) = left, case .string(let b) = right {
                order = a < b ? .orderedAscending : a > b ? .orderedDescending : .orderedSame
            } else {
                throw WorkflowNodeError(code: .invalidValue,
                                        message: "cannot order \(left.typeName) \(left.jsonText) and \(right.typeName) \(right.jsonText)")
            }
            switch op {
            case .less: return order == .orderedAscending
            case .lessOrEqual: return order != .orderedDescending
            case .greater: return order == .orderedDescending
            default: return order != .orderedAscending
            }
        }
    }

    private static func number(_ value: JSONValue) -> Double? {
        if let number = value.doubleValue { return number }
        if case .string(let text) = value, let number = Double(text.trimmingCharacters(in: .whitespaces)), number.isFinite {
            return number
        }
        return nil
    }

    private static func equal(_ left: JSONValue, _ right: JSONValue) -> Bool {
        if left == right { return true }
        switch (left, right) {
        case (.integer, _), (.number, _), (_, .integer), (_, .number):
            guard let a = number(left), let b = number(right) else { return false }
            return a == b
        case (.bool(let flag), .string(let text)), (.string(let text), .bool(let flag)):
            return text == (flag ? "true" : "false")
        case (.null, .string(let text)), (.string(let text), .null):
            return text.isEmpty
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy(equal)
        default:
            return false
        }
    }

    private static func contains(_ container: JSONValue, _ element: JSONValue) throws(WorkflowNodeError) -> Bool {
        switch container {
        case .string(let text): return text.contains(element.renderedText)
        case .array(let elements): return elements.contains { equal($0, element) }
        case .object(let object):
            guard case .string(let key) = element else { return false }
            return object[key] != nil
        default:
            throw WorkflowNodeError(code: .invalidValue, message: "contains needs a string, an array or an object, not \(container.typeName)")
        }
    }
}
