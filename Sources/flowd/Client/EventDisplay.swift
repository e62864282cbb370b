import Codec
import Foundation
import RPCClient

/// What the display loop reacts to: the follower's output and the spinner's clock.
private enum DisplayInput: Sendable {
    case event(FlowdV1.RunEvent)
    case resumption(EventFollower.Resumption)
    case tick
    /// Ctrl-C (only while the live screen of `run --mode stream` is up).
    case interrupt
    /// The answer to "stop the run?"; nil at the end of input.
    case answer(String?)
    case finished(Result<FlowdV1.Run, GRPCCallError>)
}

/// How often the live screen is redrawn while nothing happens (spinners, elapsed times).
private let liveRedrawInterval: Duration = .milliseconds(100)

/// Follows a run and shows it: the live screen in a terminal, else one line per event (plain
/// or `--json`). Resumptions after a lost connection are shown: a line on the live screen, a
/// line on stderr (plain), or a `{"type": "resume"}` object (`--json`). Returns the exit status
/// for the run's outcome.
///
/// With `offerStop` on the live screen, Ctrl-C asks whether to stop the run (then follows it to
/// its stopped end) or to leave it running (exit 130); a second Ctrl-C while asking leaves it.
func showEvents(_ follower: EventFollower, _ start: EventFollower.Start, options: ClientOptions,
                offerStop: Bool) async throws(GRPCCallError) -> ClientExit {
    let live = !options.json && TerminalBlock.isTerminal
    let (inputs, sink) = AsyncStream<DisplayInput>.makeStream()
    let following = Task {
        let result: Result<FlowdV1.Run, GRPCCallError>
        do throws(GRPCCallError) {
            result = .success(try await follower.follow(
                start, event: { sink.yield(.event($0)) }, notice: { sink.yield(.resumption($0)) }))
        } catch {
            result = .failure(error)
        }
        sink.yield(.finished(result))
        sink.finish()
    }
    let ticker: Task<Void, Never>? = live ? Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: liveRedrawInterval)
            sink.yield(.tick)
        }
    } : nil
    var interrupts: (any DispatchSourceSignal)?
    if offerStop && live {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { sink.yield(.interrupt) }
        source.resume()
        interrupts = source
    }
    defer {
        ticker?.cancel()
        following.cancel()
        if let interrupts {
            interrupts.cancel()
            signal(SIGINT, SIG_DFL)
        }
    }

    var board: ProgressBoard
    if case .watch(let runID, _) = start { board = ProgressBoard(runID: runID) } else { board = ProgressBoard(runID: "") }
    var screen = TerminalBlock()
    var frame = 0
    var asking = false
    for await input in inputs {
        switch input {
        case .event(let event):
            if live {
                board.apply(event)
                if !asking { screen.draw(board.render(now: Date(), frame: frame)) }
            } else if options.json {
                Output.json(Output.eventObject(event))
            } else {
                Output.line(Output.eventLine(event))
            }
        case .resumption(let resumption):
            let text = "connection lost (\(resumption.reason)); resuming after sequence \(resumption.afterSequence)"
                + " (attempt \(resumption.attempt) of \(resumption.maxAttempts))"
            if live {
                board.notices.append(text)
                if !asking { screen.draw(board.render(now: Date(), frame: frame)) }
            } else if options.json {
                Output.json(["type": "resume", "after_sequence": resumption.afterSequence, "attempt": resumption.attempt,
                             "reason": resumption.reason])
            } else {
                Output.errorLine("flowd: " + text)
            }
        case .tick:
            frame += 1
            if !asking { screen.draw(board.render(now: Date(), frame: frame)) }
        case .interrupt:
            guard !asking, !board.runID.isEmpty, board.finished == nil else { return .interrupted }
            asking = true
            Output.write("Stop run \(board.runID)? [y/N] ", to: STDOUT_FILENO)
            Thread { sink.yield(.answer(readLine())) }.start()
        case .answer(let text):
            asking = false
            guard let text, text.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("y") else {
                Output.line("left run \(board.runID) running; follow it with: flowd watch \(board.runID)")
                return .interrupted
            }
            do throws(GRPCCallError) {
                let connection = try await options.connect()
                _ = try await connection.unary(WorkflowsMethod.stopRun, FlowdV1.StopRunRequest(runId: board.runID),
                                               metadata: options.metadata, timeout: .seconds(30), as: FlowdV1.Run.self)
                await connection.close()
                Output.line("stopping run \(board.runID)")
            } catch {
                Output.line("cannot stop run \(board.runID): \(Output.describe(error))")
            }
            screen = TerminalBlock()
            screen.draw(board.render(now: Date(), frame: frame))
        case .finished(let result):
            if live { screen.draw(board.render(now: Date(), frame: frame)) }
            return ClientExit(try result.get().status)
        }
    }
    throw GRPCCallError(code: .internalError, message: "the event display ended without a result")
}
