# flowd: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SWIFT  ?= swift
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 50051
DATA   ?= data
WORKFLOWS ?= examples/workflows
# The shared design checker lives beside the clone (../shared); CI has it, a lone clone may not.
CONTRACT_CHECK := ../shared/tools/check-contract.py

# Steps run one after another, in the order they are listed, even under make -j.
.NOTPARALLEL:

.PHONY: attack attack-release fuzz help deps build run test gen-check contract build-tests swift-test health interop-selftest bench bench-engine bench-watchers bench-peers bench-callgrind bench-drain clean

help:
	@echo "make run      install what is missing, build, start flowd serve on $(HOST):$(PORT)"
	@echo "make test     install what is missing, build, run every test (CI runs this)"
	@echo "make deps     install missing Debian and Python packages (tools/install-deps.sh)"
	@echo "make build    swift build (debug)"
	@echo "make attack   the hostile-client suite against the debug flowd (tools/attack)"
	@echo "make attack-release  the same suite against a release flowd (.build-release; not in make test)"
	@echo "make fuzz     the libFuzzer harnesses, 60 s each or FUZZ_SECONDS (tools/fuzz.sh)"
	@echo "make health   ask a running server for its health (HOST=$(HOST) PORT=$(PORT))"
	@echo "make bench    h2load: 100,000 Health/Check calls against a release build"
	@echo "make bench-engine  the release flowd over the wire: gRPC, REST, durable submissions, e2e runs/s"
	@echo "make bench-watchers  the release flowd's RSS idle and with 1,000 / 10,000 WatchRun streams on one run"
	@echo "make bench-peers   flowd vs grpc-go, grpc-swift-2 and a C nghttp2 server: writes BENCHMARKS.md (not in make test)"
	@echo "make bench-callgrind  server instructions per call (valgrind callgrind) and where they go; CALL=health (default), getrun, submit or rest"
	@echo "make bench-drain  execution alone: a backlog of queued hello runs drained, runs/s and CPU per run"
	@echo "make interop-selftest  run the grpcio interop suite against its grpcio reference server"

deps:
	@tools/install-deps.sh

build: deps
	@echo "== swift build"
	$(SWIFT) build

run: build
	@mkdir -p $(DATA)
	@$(SWIFT) run --skip-build flowd validate $(WORKFLOWS)
	@hello=$$($(SWIFT) run --skip-build flowd keys create --tenant demo --workflow hello --data-dir $(DATA)); \
	 slow=$$($(SWIFT) run --skip-build flowd keys create --tenant demo --workflow slow --data-dir $(DATA)); \
	 echo; echo "== API keys (shown once; only their hashes are stored in $(DATA)/)"; \
	 echo "   hello: $$hello"; echo "   slow:  $$slow"; echo; \
	 echo "== Try, from another terminal:"; \
	 echo "   $(SWIFT) run --skip-build flowd run hello --key $$hello --input name=Ada"; \
	 echo "   $(SWIFT) run --skip-build flowd run slow --key $$slow --input seconds=5 --mode stream"; \
	 echo "   (a stock gRPC client: python3 tools/interop/flowd_client.py --key $$hello run --inputs '{\"name\":\"Ada\"}' --mode blocking)"; echo
	@echo "== flowd serve on $(HOST):$(PORT) (Ctrl-C stops it gracefully)"
	$(SWIFT) run --skip-build flowd serve --host $(HOST) --port $(PORT) --data-dir $(DATA) --workflows $(WORKFLOWS)

test: deps gen-check contract interop-selftest build-tests swift-test attack fuzz
	@echo "== make test: all steps passed"

gen-check: deps
	@echo "== generated protobuf-c code and Swift bindings match proto/"
	@status=0; tools/gen-protos.sh --check || status=1; \
	 $(PYTHON) tools/gen-swift-bindings.py --check || status=1; exit $$status

contract:
	@if [ -f $(CONTRACT_CHECK) ]; then \
	  echo "== proto contract (DESIGN.md)"; \
	  $(PYTHON) $(CONTRACT_CHECK); \
	else \
	  echo "== proto contract: $(CONTRACT_CHECK) not found, skipped"; \
	fi

build-tests: deps
	@echo "== swift build --build-tests"
	$(SWIFT) build --build-tests

# The RPCServer tests start a server with the test-only Control service and run
# tools/interop/grpc_interop.py against it. The PostgreSQL store's tests get a throwaway
# server (tools/pg-test-cluster.sh: initdb in a temporary directory, 127.0.0.1 on a free port),
# stopped and removed when the tests end, pass or fail.
# Two phases, one after the other: the wire tests (RPCServerTests: real clients with deadlines
# against an in-process server) do not share the test process's task threads with the
# Engine's thousands of concurrent submissions. Each phase is bounded (tools/swift-test-phase.sh
# names the tests still running and prints their stacks when a bound is reached).
swift-test: deps
	@echo "== swift test (with a throwaway PostgreSQL server)"
	@eval "$$(tools/pg-test-cluster.sh start)"; \
	 trap 'tools/pg-test-cluster.sh stop "$$FLOWD_PG_DIR"' EXIT; \
	 echo "   PostgreSQL for the tests: $$FLOWD_TEST_POSTGRES_URL"; \
	 SWIFT="$(SWIFT)" tools/swift-test-phase.sh engine 15 --skip RPCServerTests && \
	 SWIFT="$(SWIFT)" tools/swift-test-phase.sh wire 10 --filter RPCServerTests

# The hostile-client suite (tools/attack/attack_suite.py): each case starts the debug flowd on
# 127.0.0.1:0 with the flags it tests, attacks it, and checks the answer, a normal call and the
# server's RSS. Bounded: every wait has a deadline; the whole suite takes a few minutes.
attack: deps
	@bin="$$($(SWIFT) build --show-bin-path)"; \
	 echo "== attack suite against $$bin/flowd"; \
	 $(PYTHON) tools/attack/attack_suite.py --flowd "$$bin/flowd"

# The same suite against a release flowd (built in its own scratch path, .build-release, so it
# does not disturb the debug build). Not part of make test: the release build costs CI ~10 min.
attack-release: deps
	@echo "== swift build -c release --static-swift-stdlib --product flowd --scratch-path .build-release"
	@nice -n 10 $(SWIFT) build -c release --static-swift-stdlib --product flowd --scratch-path .build-release
	@bin="$$($(SWIFT) build -c release --scratch-path .build-release --show-bin-path)"; \
	 echo "== attack suite against $$bin/flowd"; \
	 $(PYTHON) tools/attack/attack_suite.py --flowd "$$bin/flowd"

# libFuzzer harnesses (tools/fuzz.sh): 60 s each (framer, protobuf, metadata and sniffer, JSON);
# FUZZ_SECONDS=600 make fuzz for a longer run of each.
fuzz: deps
	@tools/fuzz.sh

health:
	@$(PYTHON) tools/interop/health_check.py --target $(HOST):$(PORT)

interop-selftest: deps
	@echo "== grpc_interop.py against tools/interop/reference_server.py (grpcio's own server)"
	@tools/interop/selftest.sh

bench: deps
	@tools/bench/h2load-health.sh

# Writes bench-engine.json (or $$OUT); see the header of tools/bench/engine.sh for the knobs.
bench-engine: deps
	@tools/bench/engine.sh

# Writes bench-watchers.json (or $$OUT); see the header of tools/bench/watchers.sh for the knobs.
bench-watchers: deps
	@tools/bench/watchers.sh

# flowd against grpc-go (Debian's golang-google-grpc-dev), grpc-swift-2 (the Swift package mirror)
# and a minimal C server on libnghttp2: Health/Check over h2load at 1x1, 8x32 and 64x100, 3
# interleaved rounds, medians. Installs its own packages (tools/bench/peers/install.sh), builds
# only what is missing (the first grpc-swift-2 release build takes many minutes), writes
# BENCHMARKS.md and docs/bench-peers.png. Not part of make test. ARGS="--rounds 1 --scale 0.1"
# for a quick look (then also --out/--png elsewhere, to keep the committed report).
bench-peers: deps
	@tools/bench/peers/install.sh
	@tools/bench/peers/build.sh
	@$(PYTHON) tools/bench/peers/run.py $(ARGS)

# Execution alone, without submissions competing. See tools/bench/drain.sh.
bench-drain: deps
	@tools/bench/drain.sh

# Instructions, not seconds: repeatable on a busy machine. See tools/bench/callgrind-health.sh.
bench-callgrind: deps
	@tools/bench/callgrind-health.sh

clean:
	$(SWIFT) package clean
