#!/usr/bin/env bash
# make bench-peers' own install step: the Debian packages the peers and the load need, and
# matplotlib (the plot), only what is missing. Not part of make test's dependencies.
#
#   Debian: golang-go, golang-google-grpc-dev (grpc-go and its health service, built offline
#           with GOPATH=/usr/share/gocode GO111MODULE=off), libnghttp2-dev + pkg-config (the C
#           peer), nghttp2-client (h2load, nghttp), protobuf-compiler (gen-swift-stubs.sh only)
#   PyPI:   matplotlib (the PNG); grpcio comes with make deps (tools/install-deps.sh)
set -euo pipefail

APT_PACKAGES=(golang-go golang-google-grpc-dev libnghttp2-dev pkg-config nghttp2-client protobuf-compiler)
PIP_PACKAGES=(matplotlib==3.11.2)

say() { echo "bench-peers deps: $*"; }
sudo_cmd=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); fi
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
else
  say "Debian packages present (${#APT_PACKAGES[@]} checked)"
fi

PYTHON=${PYTHON:-python3}
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  name=${p%%==*}; want=${p#*==}
  have=$("$PYTHON" -c "import $name; print($name.__version__)" 2>/dev/null || true)
  [ "$have" = "$want" ] || pip_missing+=("$p")
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  say "installing Python packages: ${pip_missing[*]}"
  "$PYTHON" -m pip install -q "${pip_missing[@]}"
else
  say "Python packages present (${#PIP_PACKAGES[@]} checked)"
fi
