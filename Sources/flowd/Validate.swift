import ArgumentParser
import Engine
import Workflows
import Foundation

/// `flowd validate DIR`: loads a workflows directory as `flowd serve` would and reports every
/// problem (file, node, reason), exiting non-zero when there is one.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check the workflow definitions in a directory.")

    @Argument(help: "The workflows directory (*.yaml, *.yml, *.json).")
    var directory: String

    func run() throws {
        let catalog: WorkflowCatalog
        do {
            catalog = try WorkflowCatalog.load(directory: URL(fileURLWithPath: directory, isDirectory: true))
        } catch {
            for problem in error.problems {
                FileHandle.standardError.write(Data("\(directory)/\(problem)\n".utf8))
            }
            FileHandle.standardError.write(Data("\(error.problems.count) problem(s) found\n".utf8))
            throw ExitCode.failure
        }
        guard !catalog.workflows.isEmpty else {
            FileHandle.standardError.write(Data("\(directory): no workflow definitions (*.yaml, *.yml, *.json)\n".utf8))
            throw ExitCode.failure
        }
        for definition in catalog.workflows.values.sorted(by: { $0.name < $1.name }) {
            print("ok  \(definition.name)  version \(definition.version)  \(definition.nodes.count) nodes  (\(definition.file))")
        }
    }
}
