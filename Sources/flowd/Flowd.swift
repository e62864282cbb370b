import ArgumentParser

/// The flowd command line.
@main
struct Flowd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flowd",
        abstract: "A workflow-run service that speaks gRPC.",
        discussion: "The same executable is a client of a running server: run, get, watch, stop, runs (--server HOST:PORT, --key KEY).",
        subcommands: [Serve.self, Keys.self, Validate.self,
                      RunCommand.self, GetCommand.self, WatchCommand.self, StopCommand.self, RunsCommand.self])
}
