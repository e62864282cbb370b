import Engine
import Foundation
import Mustache

/// A name a template looks up, split at dots (`inputs.name` is `["inputs", "name"]`).
struct TemplateReference: Sendable, Hashable {
    let path: [String]
    /// Inside a section, an unknown first name may be a field of the section's item.
    let inSection: Bool
}

/// Why a template does not parse.
struct TemplateSyntaxError: Error, Sendable, CustomStringConvertible {
    let reason: String
    let line: Int
    let column: Int
    var description: String { "\(reason) at line \(line), column \(column)" }
}

/// A string from a definition, compiled once at load. Strings without `{{` are literals.
/// A string that is exactly one variable tag (`"{{ fetch.body }}"`) is a *reference*: where a
/// value is expected (bodies, outputs, comparisons) it yields the referenced JSON value itself,
/// not its text.
struct TextTemplate: Sendable {
    /// Renders plain text: Mustache escapes HTML by default, workflows do not want that.
    private static let textPragma = "{{% CONTENT_TYPE: TEXT}}"

    let source: String
    private let mustache: MustacheTemplate?
    private let reference: [String]?
    let references: [TemplateReference]

    init(_ source: String) throws(TemplateSyntaxError) {
        self.source = source
        guard source.contains("{{") else {
            mustache = nil
            reference = nil
            references = []
            return
        }
        do {
            mustache = try MustacheTemplate(string: Self.textPragma + source)
        } catch let error as MustacheTemplate.ParserError {
            let column = error.context.lineNumber == 1
                ? max(1, error.context.columnNumber - Self.textPragma.count) : error.context.columnNumber
            throw TemplateSyntaxError(reason: Self.describe(error.error), line: error.context.lineNumber, column: column)
        } catch {
            throw TemplateSyntaxError(reason: "\(error)", line: 1, column: 1)
        }
        references = Self.scanReferences(source)
        reference = Self.wholeReference(source)
    }

    var isLiteral: Bool { mustache == nil }

    /// The text this template renders in `context`.
    func renderText(_ context: TemplateContext) -> String {
        guard let mustache else { return source }
        if let reference { return context.root.value(at: reference)?.renderedText ?? "" }
        return mustache.render(context.mustacheRoot)
    }

    /// The value this template stands for: the referenced value for a reference, else the text.
    func resolve(_ context: TemplateContext) -> JSONValue {
        if let reference, mustache != nil { return context.root.value(at: reference) ?? .null }
        return .string(renderText(context))
    }

    private static func describe(_ error: any Error) -> String {
        switch error as? MustacheTemplate.Error {
        case .sectionCloseNameIncorrect: "a section is closed with the wrong name"
        case .unfinishedName: "a tag is not finished"
        case .expectedSectionEnd: "a section is not closed"
        case .invalidSetDelimiter: "the set-delimiter tag is malformed"
        case .invalidConfigVariableSyntax, .unrecognisedConfigVariable: "a pragma tag is malformed"
        case .some(let other): "\(other)"
        case nil: "\(error)"
        }
    }

    /// The names looked up by the tags of `source` (comments, partials and pragmas skipped).
    /// Stops at a set-delimiter tag: what follows uses other delimiters.
    static func scanReferences(_ source: String) -> [TemplateReference] {
        var references: [TemplateReference] = []
        var depth = 0
        var rest = source[...]
        while let open = rest.range(of: "{{") {
            var tagStart = rest[open.upperBound...]
            let triple = tagStart.first == "{"
            if triple { tagStart = tagStart.dropFirst() }
            guard let close = tagStart.range(of: triple ? "}}}" : "}}") else { break }
            let tag = tagStart[..<close.lowerBound].trimmingCharacters(in: .whitespaces)
            rest = tagStart[close.upperBound...]
            guard let sigil = tag.first else { continue }
            func add(_ name: Substring) {
                if let path = referencePath(name) { references.append(TemplateReference(path: path, inSection: depth > 0)) }
            }
            switch sigil {
            case "!", ">", "<", "$", "%": continue
            case "=": return references
            case "#", "^":
                add(tag.dropFirst())
                depth += 1
            case "/": depth = max(0, depth - 1)
            case "&": add(tag.dropFirst())
            default: add(tag[...])
            }
        }
        return references
    }

    /// `name`, `a.b.c` or a transform `uppercased(a.b)` as a path; nil for `.` and `.x` (the
    /// current item).
    private static func referencePath(_ tag: Substring) -> [String]? {
        var name = tag.trimmingCharacters(in: .whitespaces)[...]
        if let open = name.lastIndex(of: "(") {
            name = name[name.index(after: open)...]
            if let close = name.firstIndex(of: ")") { name = name[..<close] }
        }
        name = name.trimmingCharacters(in: .whitespaces)[...]
        guard !name.isEmpty, name.first != "." else { return nil }
        return name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    }

    /// The path when `source` is exactly one plain variable tag.
    private static func wholeReference(_ source: String) -> [String]? {
        var body = source.trimmingCharacters(in: .whitespacesAndNewlines)[...]
        if body.hasPrefix("{{{") && body.hasSuffix("}}}") {
            body = body.dropFirst(3).dropLast(3)
        } else if body.hasPrefix("{{") && body.hasSuffix("}}") {
            body = body.dropFirst(2).dropLast(2)
            if body.first == "&" { body = body.dropFirst() }
        } else {
            return nil
        }
        let name = body.trimmingCharacters(in: .whitespaces)
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
        guard !name.isEmpty, name.first != ".", name.allSatisfy(allowed.contains) else { return nil }
        return name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    }
}

/// A JSON value from a definition whose strings may be templates.
indirect enum ValueTemplate: Sendable {
    case literal(JSONValue)
    case text(TextTemplate)
    case array([ValueTemplate])
    case object([String: ValueTemplate])

    /// Compiles every string in `value`; the error names the path of the bad string.
    static func compile(_ value: JSONValue, path: String) throws(TemplateCompileError) -> ValueTemplate {
        switch value {
        case .string(let string):
            do {
                let template = try TextTemplate(string)
                return template.isLiteral ? .literal(value) : .text(template)
            } catch {
                throw TemplateCompileError(path: path, error: error)
            }
        case .array(let elements):
            var compiled: [ValueTemplate] = []
            for (index, element) in elements.enumerated() {
                compiled.append(try compile(element, path: "\(path)[\(index)]"))
            }
            return .array(compiled)
        case .object(let object):
            var compiled: [String: ValueTemplate] = [:]
            for key in object.keys.sorted() {
                compiled[key] = try compile(object[key]!, path: "\(path).\(key)")
            }
            return .object(compiled)
        default:
            return .literal(value)
        }
    }

    var references: [TemplateReference] {
        switch self {
        case .literal: []
        case .text(let template): template.references
        case .array(let elements): elements.flatMap(\.references)
        case .object(let object): object.values.flatMap(\.references)
        }
    }

    func resolve(_ context: TemplateContext) -> JSONValue {
        switch self {
        case .literal(let value): value
        case .text(let template): template.resolve(context)
        case .array(let elements): .array(elements.map { $0.resolve(context) })
        case .object(let object): .object(object.mapValues { $0.resolve(context) })
        }
    }
}

/// A string in a definition that does not parse as a template, and where it is.
struct TemplateCompileError: Error, Sendable {
    let path: String
    let error: TemplateSyntaxError
}

/// What templates see: `inputs` (the run's inputs) and, by node id, the outputs of the nodes
/// that finished before. Built and used inside one node's task.
struct TemplateContext {
    let root: JSONValue
    let mustacheRoot: Any

    init(inputs: [String: JSONValue], outputs: [String: JSONValue]) {
        var object = outputs
        object["inputs"] = .object(inputs)
        root = .object(object)
        mustacheRoot = Self.mustacheValue(root)
    }

    private static func mustacheValue(_ value: JSONValue) -> Any {
        switch value {
        case .null: NSNull()
        case .bool(let value): value
        case .integer(let value): Int(value)
        case .number(let value): value
        case .string(let value): value
        case .array(let elements): MustacheJSONArray(elements: elements.map(mustacheValue), json: value)
        case .object(let object): MustacheJSONObject(children: object.mapValues(mustacheValue), json: value)
        }
    }
}

/// A JSON object for Mustache: fields by name; `{{object}}` renders it as JSON.
private struct MustacheJSONObject: MustacheParent, MustacheCustomRenderable {
    let children: [String: Any]
    let json: JSONValue
    func child(named name: String) -> Any? { children[name] }
    var renderText: String { json.jsonText }
    var isNull: Bool { false }
}

/// A JSON array for Mustache: sections iterate it; `{{array}}` renders it as JSON.
private struct MustacheJSONArray: MustacheSequence, MustacheCustomRenderable {
    let elements: [Any]
    let json: JSONValue
    func makeIterator() -> IndexingIterator<[Any]> { elements.makeIterator() }
    var renderText: String { json.jsonText }
    var isNull: Bool { false }
}
