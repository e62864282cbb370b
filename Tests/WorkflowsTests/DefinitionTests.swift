import Engine
import Workflows
import Foundation
import Testing

@Suite("Workflow definitions: loading, rejections with file, node and reason, and input checks")
struct DefinitionTests {
    /// A one-file directory whose single problem is returned.
    private func problem(_ yaml: String, file: String = "bad.yaml") throws -> WorkflowDefinitionError {
        let problems = try loadProblems([file: yaml])
        #expect(problems.count == 1, "\(problems)")
        return try #require(problems.first)
    }

    @Test("the example workflows load with their names, versions, inputs and outputs")
    func examples() throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        #expect(Set(catalog.workflows.keys) == ["hello", "slow", "call-service", "branch"])
        let hello = try #require(catalog.workflow(named: "hello"))
        #expect(hello.version == "1")
        #expect(hello.inputs == [InputDeclaration(name: "name", type: .string, required: true, description: "Who to greet")])
        #expect(hello.outputs == ["greeting"])
        let slow = try #require(catalog.workflow(named: "slow"))
        #expect(slow.inputs.first { $0.name == "seconds" }?.defaultValue == .integer(20))
        #expect(slow.nodes.filter { $0.kind == .sleep }.count == 4)
        #expect(slow.outputs == ["done"])
    }

    @Test("an unknown node kind names the file, the line, the node and the kinds there are")
    func unknownKind() throws {
        let error = try problem("""
            name: w
            nodes:
              - id: greet
                kind: tempalte
                config: { template: hi }
              - id: done
                kind: end
                needs: greet
                config: { outputs: {} }
            """)
        #expect(error.code == .unknownNodeKind)
        #expect(error.description == "bad.yaml:3: node 'greet': unknown node kind 'tempalte' (known: template, http, exec, sleep, condition, end)")
    }

    @Test("a cycle is rejected with its path")
    func cycle() throws {
        let error = try problem("""
            name: w
            nodes:
              - { id: a, kind: template, needs: c, config: { template: a } }
              - { id: b, kind: template, needs: a, config: { template: b } }
              - { id: c, kind: template, needs: b, config: { template: c } }
              - { id: done, kind: end, needs: c, config: { outputs: {} } }
            """)
        #expect(error.code == .cycle)
        #expect(error.description == "bad.yaml:3: node 'a': cycle: a -> c -> b -> a")
    }

    @Test("needs naming a node that does not exist is a dangling reference")
    func danglingNeed() throws {
        let error = try problem("""
            name: w
            nodes:
              - { id: done, kind: end, needs: [greet], config: { outputs: {} } }
            """)
        #expect(error.code == .danglingReference)
        #expect(error.description == "bad.yaml:3: node 'done': needs 'greet', which is not a node of this workflow")
    }

    @Test("a branch naming a node that does not exist is a dangling reference")
    func danglingBranch() throws {
        let error = try problem("""
            name: w
            nodes:
              - { id: check, kind: condition, config: { left: 1, op: "==", right: 1, then: big, else: small } }
              - { id: big, kind: end, config: { outputs: {} } }
            """)
        #expect(error.code == .danglingReference)
        #expect(error.description == "bad.yaml:3: node 'check': branch node 'small' is not a node of this workflow")
    }

    @Test("a template using a node the node does not depend on is refused, and so is an unknown name")
    func templateReferences() throws {
        let error = try problem("""
            name: w
            nodes:
              - { id: a, kind: template, config: { template: a } }
              - { id: b, kind: template, config: { template: "{{a.text}}" } }
              - { id: done, kind: end, needs: [a, b], config: { outputs: { x: "{{b.text}}" } } }
            """)
        #expect(error.code == .danglingReference)
        #expect(error.description == "bad.yaml:4: node 'b': a template uses node 'a', which this node does not depend on (add it to needs)")

        let unknown = try problem("""
            name: w
            nodes:
              - { id: done, kind: end, config: { outputs: { x: "{{nobody.text}}" } } }
            """)
        #expect(unknown.description == "bad.yaml:3: node 'done': a template uses 'nobody.text', which is neither inputs.<name> nor a node id")
    }

    @Test("a template using an undeclared input is refused; names inside sections may be item fields")
    func undeclaredInput() throws {
        let error = try problem("""
            name: w
            inputs:
              name: string
              items: array
            nodes:
              - id: greet
                kind: template
                config:
                  template: "{{#inputs.items}}{{title}}{{/inputs.items}} Hello {{inputs.nmae}}"
              - { id: done, kind: end, needs: greet, config: { outputs: { g: "{{greet.text}}" } } }
            """)
        #expect(error.code == .undeclaredInput)
        #expect(error.description == "bad.yaml:6: node 'greet': a template uses input 'nmae', which the workflow does not declare")
    }

    @Test("a template that does not parse is refused with where it breaks")
    func badTemplate() throws {
        let error = try problem("""
            name: w
            inputs: { items: array }
            nodes:
              - id: call
                kind: http
                config:
                  url: "http://127.0.0.1/{{#inputs.items}}x"
              - { id: done, kind: end, needs: call, config: { outputs: {} } }
            """)
        #expect(error.code == .badTemplate)
        #expect(error.description == "bad.yaml:4: node 'call': the template in config.url does not parse: a section is not closed at line 1, column 36")
    }

    @Test("a duplicate node id is refused at its second use")
    func duplicateID() throws {
        let error = try problem("""
            name: w
            nodes:
              - { id: a, kind: template, config: { template: a } }
              - { id: a, kind: template, config: { template: b } }
              - { id: done, kind: end, needs: a, config: { outputs: {} } }
            """)
        #expect(error.code == .duplicateNodeID)
        #expect(error.description == "bad.yaml:4: node 'a': duplicate node id 'a'")
    }

    @Test("an input declared twice (the list form allows it) is refused")
    func duplicateInput() throws {
        let error = try problem("""
            name: w
            inputs:
              - { name: a, type: string }
              - { name: a, type: integer }
            nodes:
              - { id: done, kind: end, config: { outputs: {} } }
            """)
        #expect(error.code == .invalid)
        #expect(error.description.hasSuffix("input 'a' is declared twice"), "\(error)")
    }

    @Test("invalid YAML names the line; a JSON file is read as JSON")
    func syntax() throws {
        let yaml = try problem("name: w\nnodes: [\n")
        #expect(yaml.code == .syntax)
        #expect(yaml.line == 3)
        #expect(yaml.description.hasPrefix("bad.yaml:3: not valid YAML"))

        let json = try problem(#"{"name": "w", "nodes": [}"#, file: "bad.json")
        #expect(json.code == .syntax)
        #expect(json.description.hasPrefix("bad.json: not valid JSON"))

        let catalog = try loadCatalog(["ok.json": #"""
            {"name": "j", "nodes": [{"id": "done", "kind": "end", "config": {"outputs": {"ok": true}}}]}
            """#])
        #expect(catalog.workflow(named: "j")?.nodes.map(\.id) == ["done"])
    }

    @Test("schema mistakes are named: unknown fields, missing config, bad inputs, outputs not mapped")
    func schema() throws {
        let problems = try loadProblems(["bad.yaml": """
            name: w
            inputs:
              n: { type: float }
            outputs: [greeting]
            nodes:
              - { id: nap, kind: sleep, config: { secs: 1 } }
              - { id: done, kind: end, needs: nap, config: { outputs: { other: 1 } } }
            """])
        let messages = problems.map(\.description)
        #expect(messages == [
            "bad.yaml: input 'n': type must be one of string, number, integer, boolean, object, array",
            "bad.yaml:6: node 'nap': unknown config field 'secs' for a sleep node (known: fraction, seconds)",
            "bad.yaml:6: node 'nap': config.seconds is required (a number or a template)",
            "bad.yaml:7: node 'done': maps output 'other', which the workflow does not declare",
            "bad.yaml:7: node 'done': does not map declared output 'greeting'",
        ])
    }

    @Test("a directory reports every problem of every file, and two files cannot define one workflow")
    func directory() throws {
        let good = "name: same\nnodes:\n  - { id: done, kind: end, config: { outputs: {} } }\n"
        let problems = try loadProblems([
            "a.yaml": good,
            "b.yml": good,
            "c.yaml": "name: c\nnodes:\n  - { id: x, kind: nope }\n  - { id: done, kind: end, needs: y, config: { outputs: {} } }\n",
            "notes.txt": "not a workflow",
        ])
        #expect(problems.map(\.description) == [
            "c.yaml:3: node 'x': unknown node kind 'nope' (known: template, http, exec, sleep, condition, end)",
            "c.yaml:4: node 'done': needs 'y', which is not a node of this workflow",
            "b.yml: workflow 'same' is already defined in a.yaml",
        ])
    }

    @Test("without a declared version the version is the content hash, and it changes with the file")
    func contentVersion() throws {
        let first = try WorkflowCatalog.parse("nodes:\n  - { id: done, kind: end, config: { outputs: { a: 1 } } }\n", file: "w.yaml")
        let second = try WorkflowCatalog.parse("nodes:\n  - { id: done, kind: end, config: { outputs: { a: 2 } } }\n", file: "w.yaml")
        #expect(first.name == "w")
        #expect(first.version.hasPrefix("sha256:") && first.version.count == 19)
        #expect(first.version != second.version)
        #expect(first.contentHash.hasPrefix(String(first.version.dropFirst(7))))
    }

    @Test("submitted inputs: defaults applied, and missing, mistyped or unknown inputs are refused naming the field")
    func inputs() throws {
        let definition = try WorkflowCatalog.parse("""
            name: w
            inputs:
              name: { type: string, required: true }
              count: { type: integer, default: 3 }
              ratio: number
              flags: { type: object }
            nodes:
              - { id: done, kind: end, config: { outputs: {} } }
            """, file: "w.yaml")
        #expect(try definition.validateInputs(json: #"{"name": "Ada", "ratio": 1}"#)
            == ["name": "Ada", "count": 3, "ratio": 1])
        #expect(try definition.validateInputs(json: #"{"name": "Ada", "count": 4.0, "flags": {"a": true}}"#)
            == ["name": "Ada", "count": 4, "flags": ["a": true]])

        func refusal(_ json: String) -> EngineError? {
            do {
                _ = try definition.validateInputs(json: json)
                return nil
            } catch {
                return error
            }
        }
        let cases: [(String, String, String)] = [
            (#"{}"#, "inputs.name", "inputs.name is required"),
            (#"{"name": null}"#, "inputs.name", "inputs.name is required"),
            (#"{"name": 7}"#, "inputs.name", "inputs.name must be string, not integer"),
            (#"{"name": "a", "count": 1.5}"#, "inputs.count", "inputs.count must be integer, not number"),
            (#"{"name": "a", "ratio": "1"}"#, "inputs.ratio", "inputs.ratio must be number, not string"),
            (#"{"name": "a", "flags": [1]}"#, "inputs.flags", "inputs.flags must be object, not array"),
            (#"{"name": "a", "nmae": "b"}"#, "inputs.nmae", "inputs.nmae is not an input of workflow 'w'"),
            (#"{"nmae": "b"}"#, "inputs.nmae", "inputs.nmae is not an input of workflow 'w'"),
            (#"{"name": "a", "count": 1, "ratio": 1, "flags": {}, "zz": 1, "aa": 2}"#, "inputs.aa",
             "inputs.aa is not an input of workflow 'w'"),
            (#"[1]"#, "inputs", "inputs must be a JSON object"),
            (#"{"#, "inputs", "inputs are not valid JSON"),
        ]
        for (json, field, message) in cases {
            let error = refusal(json)
            #expect(error?.code == .invalidRequest, "\(json)")
            #expect(error?.field == field, "\(json)")
            #expect(error?.message == message, "\(json)")
        }
    }

    @Test("the catalog builds run requests with the workflow's version and the checked inputs")
    func runRequest() throws {
        let catalog = try WorkflowCatalog.load(directory: examplesDirectory)
        let request = try catalog.runRequest(tenant: "t", workflow: "slow", inputsJSON: "{}", user: "u",
                                             trigger: .apiAsync, transport: .grpc)
        #expect(request.workflowVersion == "1")
        #expect(request.inputsJSON == #"{"seconds":20}"#)
        #expect(throws: EngineError.self) {
            try catalog.runRequest(tenant: "t", workflow: "nope", inputsJSON: "{}", user: "u", trigger: .apiAsync, transport: .grpc)
        }
    }
}
