# flowd: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SWIFT  ?= swift
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 50051
# The shared design checker lives beside the clone (../shared); CI has it, a lone clone may not.
CONTRACT_CHECK := ../shared/tools/check-contract.py

# Steps run one after another, in the order they are listed, even under make -j.
.NOTPARALLEL:

.PHONY: help deps build run test gen-check contract build-tests swift-test health interop-selftest bench bench-engine clean

help:
	@echo "make run      install what is missing, build, start flowd serve on $(HOST):$(PORT)"
	@echo "make test     install what is missing, build, run every test (CI runs this)"
	@echo "make deps     install missing Debian and Python packages (tools/install-deps.sh)"
	@echo "make build    swift build (debug)"
	@echo "make health   ask a running server for its health (HOST=$(HOST) PORT=$(PORT))"
	@echo "make bench    h2load: 100,000 Health/Check calls against a release build"
	@echo "make bench-engine  durable submissions per second at 1, 16 and 64 submitters"
	@echo "make interop-selftest  run the grpcio interop suite against its grpcio reference server"

deps:
	@tools/install-deps.sh

build: deps
	@echo "== swift build"
	$(SWIFT) build

run: build
	@echo "== flowd serve on $(HOST):$(PORT) (Ctrl-C stops it)"
	$(SWIFT) run flowd serve --host $(HOST) --port $(PORT)

test: deps gen-check contract interop-selftest build-tests swift-test
	@echo "== make test: all steps passed"

gen-check: deps
	@echo "== generated protobuf-c code matches proto/"
	tools/gen-protos.sh --check

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
# tools/interop/grpc_interop.py against it.
swift-test: deps
	@echo "== swift test"
	$(SWIFT) test

health:
	@$(PYTHON) tools/interop/health_check.py --target $(HOST):$(PORT)

interop-selftest: deps
	@echo "== grpc_interop.py against tools/interop/reference_server.py (grpcio's own server)"
	@tools/interop/selftest.sh

bench: deps
	@tools/bench/h2load-health.sh

bench-engine: deps
	@tools/bench/engine-submit.sh

clean:
	$(SWIFT) package clean
