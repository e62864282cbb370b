import ArgumentParser

/// The flowd command line.
@main
struct Flowd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flowd",
        abstract: "A workflow-run service that speaks gRPC.",
        subcommands: [Serve.self, Keys.self, Validate.self])
}
