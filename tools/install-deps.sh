#!/usr/bin/env bash
# Installs what building, running and testing flowd needs on Debian 12, and only what is
# missing, so that a second run is a no-op that takes a second.
#
#   Debian: nghttp2 and protobuf-c (headers, protoc-c), protoc, h2load/nghttp, pkg-config, SQLite,
#           PostgreSQL (the server the PostgreSQL store's tests start in a temporary directory)
#   PyPI:   grpcio, grpcio-tools, grpcio-status (the interop suite's client and stub generator), h2 (frame-level checks),
#           hyperframe, hpack (raw frames of the attack suite, tools/attack),
#           requests, httpx (REST shim suite), dify-client-python (an unmodified Dify client against the shim),
#           grpcio-reflection (its reflection client against the server),
#           protobuf (descriptors for tools/gen-swift-bindings.py)
#
# Swift itself is not installed here: the toolchain must already be on PATH.
set -euo pipefail

APT_PACKAGES=(
  libnghttp2-dev        # the HTTP/2 library the transport is built on
  libprotobuf-c-dev     # protobuf-c runtime + headers
  protobuf-c-compiler   # protoc-c 1.4.1 (tools/gen-protos.sh)
  protobuf-compiler     # protoc
  libprotobuf-dev       # the well-known .proto files for protoc
  nghttp2-client        # h2load, nghttp (tools/bench)
  valgrind              # callgrind: instructions per call (make bench-callgrind)
  pkg-config            # SwiftPM finds libnghttp2 / libprotobuf-c through it
  libsqlite3-dev        # the embedded store
  postgresql            # the tests' throwaway PostgreSQL server (tools/pg-test-cluster.sh; no service is used)
  tmux                  # the client's live-progress test drives `flowd run --mode stream` in a terminal
  gdb                   # the test watchdog prints the stacks of a hung test process (tools/swift-test-phase.sh)
)
PIP_PACKAGES=(grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-status==1.85.1 h2==4.1.0 hyperframe==6.1.0 hpack==4.2.0 requests httpx==0.28.1
              dify-client-python==1.0.3 grpcio-reflection==1.85.1 prometheus-client==0.26.0 protobuf)
# Debian's security backports (Rapid Reset, CONTINUATION flood, CVE-2026-27135) end here.
MIN_NGHTTP2="1.52.0-1+deb12u3"

say() { echo "deps: $*"; }

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    say "not root and no sudo: install packages by hand if any are missing"
  fi
fi

installed() {  # installed PACKAGE: true when dpkg has it fully installed
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# --- Debian packages -------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
# The interop suite needs a python3 with pip; any python3 on PATH will do (pyenv, venv, Debian's).
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)

if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
else
  say "Debian packages present (${#APT_PACKAGES[@]} checked)"
fi

have_nghttp2=$(dpkg-query -W -f='${Version}' libnghttp2-14 2>/dev/null || true)
if [ -z "$have_nghttp2" ]; then
  say "WARNING: libnghttp2-14 is not installed"
elif dpkg --compare-versions "$have_nghttp2" lt "$MIN_NGHTTP2"; then
  say "WARNING: libnghttp2-14 $have_nghttp2 is older than $MIN_NGHTTP2 (missing Debian's HTTP/2 flood fixes);"
  say "         upgrade with: apt-get install --only-upgrade libnghttp2-14 libnghttp2-dev nghttp2-client"
else
  say "libnghttp2-14 $have_nghttp2 (>= $MIN_NGHTTP2)"
fi

# --- Python packages -------------------------------------------------------------------
if python3 -c "import grpc, grpc_tools.protoc, grpc_status.rpc_status, h2, hyperframe, hpack, requests, httpx, dify_client, grpc_reflection, google.protobuf.descriptor_pb2" >/dev/null 2>&1; then
  say "Python packages present (grpcio $(python3 -c 'import grpc; print(grpc.__version__)'))"
else
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "installing python3-pip"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends python3-pip
  fi
  pip_args=(install --quiet --disable-pip-version-check)
  [ "$(id -u)" -eq 0 ] && pip_args+=(--root-user-action=ignore)
  # Debian's own python3 is "externally managed" (PEP 668); a pyenv or venv python is not.
  if python3 -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
    pip_args+=(--break-system-packages)
  fi
  say "installing Python packages: ${PIP_PACKAGES[*]}"
  python3 -m pip "${pip_args[@]}" "${PIP_PACKAGES[@]}"
  python3 -c 'import grpc, grpc_tools.protoc, grpc_status.rpc_status'
fi

command -v swift >/dev/null 2>&1 || say "WARNING: swift is not on PATH (Swift 6 toolchain needed to build)"
exit 0
