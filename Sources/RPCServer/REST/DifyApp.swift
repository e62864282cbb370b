import Engine
import Foundation

/// What Dify says about an app (its workflow) on `GET /v1/parameters` and `GET /v1/info`, and
/// how Dify reads a submission's `inputs` against the declared variables
/// (`base_app_generator._prepare_user_inputs`): undeclared keys are dropped, a number sent as a
/// string is converted (blank means absent). Only the REST shim does this; gRPC stays strict.
enum DifyApp {
    /// The form type Dify's `user_input_form` uses for a declared input type. Dify has no list
    /// variable: an array is offered as a JSON value too.
    static func formType(_ type: InputType) -> String {
        switch type {
        case .string: "text-input"
        case .number, .integer: "number"
        case .boolean: "checkbox"
        case .object, .array: "json_object"
        }
    }

    /// `inputs` as Dify passes them on: only the declared names, number strings converted.
    /// Throws Dify's `invalid_param` "`<name>` in input form must be a valid number".
    static func inputs(_ submitted: [String: JSONValue], declared: [InputDeclaration]) throws -> [String: JSONValue] {
        var result: [String: JSONValue] = [:]
        for input in declared {
            guard let value = submitted[input.name] else { continue }
            guard input.type == .number || input.type == .integer, case .string(let text) = value else {
                result[input.name] = value
                continue
            }
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }  // Dify: an empty number is absent
            if let number = number(trimmed) {
                result[input.name] = number
            } else {
                throw RESTError.invalidParam("\(input.name) in input form must be a valid number")
            }
        }
        return result
    }

    /// Python's `float(text)` when it has a ".", else `int(text)` (what Dify calls).
    private static func number(_ text: String) -> JSONValue? {
        let digits = text.replacingOccurrences(of: "_", with: "")
        if text.contains(".") {
            guard let value = Double(digits), value.isFinite else { return nil }
            return .number(value)
        }
        return Int64(digits).map(JSONValue.integer)
    }

    /// `GET /v1/parameters` for a workflow app: the input form (by input name), every other
    /// feature disabled (`controllers/common/helpers.get_parameters_from_feature_dict` with an
    /// empty feature dict).
    static func parameters(_ definition: WorkflowDescription?) -> DifyJSON {
        let form: [DifyJSON] = (definition?.inputs ?? []).sorted { $0.name < $1.name }.map { input in
            let type = formType(input.type)
            return .object([(type, .object([
                ("label", .string(input.name)), ("variable", .string(input.name)), ("type", .string(type)),
                ("required", .bool(input.required)), ("default", input.defaultValue.map(DifyJSON.init) ?? .null),
                ("options", .array([])), ("description", .string(input.description ?? "")),
            ]))])
        }
        let disabled: DifyJSON = .object([("enabled", false)])
        return .object([
            ("opening_statement", .null), ("suggested_questions", .array([])),
            ("suggested_questions_after_answer", disabled), ("speech_to_text", disabled),
            ("text_to_speech", disabled), ("retriever_resource", disabled), ("annotation_reply", disabled),
            ("more_like_this", disabled), ("user_input_form", .array(form)),
            ("sensitive_word_avoidance", .object([("enabled", false), ("type", ""), ("configs", .array([]))])),
            ("file_upload", .object([("image", .object([
                ("enabled", false), ("number_limits", 3), ("detail", "high"),
                ("transfer_methods", .array(["remote_url", "local_file"])),
            ]))])),
            ("system_parameters", .object([
                ("image_file_size_limit", 10), ("video_file_size_limit", 100), ("audio_file_size_limit", 50),
                ("file_size_limit", 15), ("workflow_file_upload_limit", 10),
            ])),
        ])
    }

    /// `GET /v1/info`.
    static func info(workflow: String, definition: WorkflowDescription?) -> DifyJSON {
        .object([
            ("name", .string(definition?.name ?? workflow)), ("description", .string(definition?.description ?? "")),
            ("tags", .array([])), ("mode", "workflow"), ("author_name", ""),
        ])
    }

    /// A `created_at__before/after` value read with ISO 8601 rules as Dify's `isoparse` does:
    /// `YYYY-MM-DD` or `YYYYMMDD`, optionally followed by one separator character and
    /// `HH[:MM[:SS[.ffffff]]]` (or `HHMMSS`), optionally a zone (`Z`, `±HH`, `±HH:MM`,
    /// `±HHMM`). A date alone is its midnight; without a zone the time is UTC (Dify's stored times).
    static func parseDate(_ text: String) -> Date? {
        var scanner = Array(text.utf8)[...]
        func digits(_ count: Int) -> Int? {
            guard scanner.count >= count else { return nil }
            var value = 0
            for byte in scanner.prefix(count) {
                guard byte >= 0x30, byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            scanner = scanner.dropFirst(count)
            return value
        }
        func skip(_ character: Character) -> Bool {
            guard scanner.first == character.asciiValue else { return false }
            scanner = scanner.dropFirst()
            return true
        }
        guard let year = digits(4) else { return nil }
        let dashed = skip("-")
        guard let month = digits(2) else { return nil }
        guard !dashed || skip("-"), let day = digits(2) else { return nil }
        var components = DateComponents(year: year, month: month, day: day, hour: 0, minute: 0, second: 0)
        var offset = 0
        if !scanner.isEmpty {
            scanner = scanner.dropFirst()  // the separator, any one character
            guard let hour = digits(2) else { return nil }
            components.hour = hour
            let colon = skip(":")
            if let minute = digits(2) {
                components.minute = minute
                if !colon || skip(":"), let second = digits(2) {
                    components.second = second
                    if skip(".") || skip(",") {
                        var fraction = 0.0, scale = 0.1
                        while let byte = scanner.first, byte >= 0x30, byte <= 0x39 {
                            fraction += Double(byte - 0x30) * scale
                            scale /= 10
                            scanner = scanner.dropFirst()
                        }
                        components.nanosecond = Int(fraction * 1e9)
                    }
                } else if colon && scanner.first == UInt8(ascii: ":") {
                    return nil
                }
            } else if colon {
                return nil
            }
            if skip("Z") {
            } else if let sign = scanner.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                scanner = scanner.dropFirst()
                guard let hours = digits(2) else { return nil }
                var minutes = 0
                if !scanner.isEmpty {
                    _ = skip(":")
                    guard let m = digits(2) else { return nil }
                    minutes = m
                }
                offset = (hours * 60 + minutes) * 60 * (sign == UInt8(ascii: "-") ? -1 : 1)
            }
        }
        guard scanner.isEmpty, (1...12).contains(month), (1...31).contains(day),
              (0...24).contains(components.hour ?? 0), (0...59).contains(components.minute ?? 0),
              (0...59).contains(components.second ?? 0) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: offset) ?? TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: components),
              calendar.component(.day, from: date) == day || components.hour == 24 else { return nil }
        return date
    }
}
