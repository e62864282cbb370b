"""Python stubs for flowd's proto/ contract, generated on the fly with grpcio-tools.

Nothing generated is committed: every run compiles the .proto files in proto/ with the
installed grpcio-tools into a temporary folder and imports them from there, so the interop
tools always test the contract as it is in the working tree.

Module names follow the proto paths (grpc.health.v1.health_pb2, flowd.testing.v1.control_pb2,
google.rpc.status_pb2, ...). Two of those roots are already taken by installed packages, so
the temporary folder is spliced in front of them:

- `grpc` is grpcio itself (a regular package): the generated `grpc/health` is put first on
  `grpc.__path__`, with `__init__.py` files so that an installed grpcio-health-checking
  cannot shadow it.
- `google` is a namespace package (protobuf, googleapis-common-protos): the temporary folder
  goes first on `sys.path`, so `google.rpc.status_pb2` is the one compiled from proto/, and
  grpc_status (which imports `google.rpc.status_pb2`) decodes with the same classes.

The google/protobuf well-known types are NOT generated: the protobuf runtime ships them, and
generating a second copy would register the same file twice in the descriptor pool. proto/
has its own copies only for protoc-c; for Python they resolve to the runtime's.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_PROTO_DIR = os.path.join(REPO_ROOT, "proto")

PROTOS = [
    "grpc/health/v1/health.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "flowd/v1/workflows.proto",
    "flowd/testing/v1/control.proto",
]


class StubError(RuntimeError):
    pass


def _generate(proto_dir: str, out_dir: str) -> None:
    try:
        import grpc_tools
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise StubError("grpcio-tools is not installed (make deps / tools/install-deps.sh)") from exc
    bundled = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-I" + proto_dir,
        # Fallback for well-known types that proto/ does not carry.
        "-I" + bundled,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        *PROTOS,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
        raise StubError(f"grpc_tools.protoc exited {proc.returncode}: {msg}")


def _add_package_inits(root: str, top: str) -> None:
    """Makes every folder under root/top a regular package (adds empty __init__.py)."""
    for dirpath, _dirnames, _files in os.walk(os.path.join(root, top)):
        init = os.path.join(dirpath, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()


def _splice(out_dir: str) -> None:
    # flowd.*: our own root; regular packages.
    _add_package_inits(out_dir, "flowd")
    # grpc.health.*: under grpcio's regular package.
    grpc_dir = os.path.join(out_dir, "grpc")
    for sub in ("health", os.path.join("health", "v1")):
        open(os.path.join(grpc_dir, sub, "__init__.py"), "a").close()
    import grpc  # grpcio

    grpc.__path__.insert(0, grpc_dir)
    for name in [m for m in sys.modules if m == "grpc.health" or m.startswith("grpc.health.")]:
        del sys.modules[name]
    # google.rpc: a namespace portion; first on sys.path wins for each module.
    sys.path.insert(0, out_dir)
    for name in ("google.rpc.status_pb2", "google.rpc.error_details_pb2"):
        if name in sys.modules:
            raise StubError(f"{name} was imported before the stubs were generated")
    importlib.invalidate_caches()


def load(proto_dir: str | None = None, keep_dir: str | None = None) -> types.SimpleNamespace:
    """Generates and imports the stubs; returns a namespace of the modules.

    keep_dir: generate there (and keep it) instead of a temporary folder.
    """
    proto_dir = os.path.abspath(proto_dir or DEFAULT_PROTO_DIR)
    for p in PROTOS:
        if not os.path.isfile(os.path.join(proto_dir, p)):
            raise StubError(f"{p} not found under {proto_dir}")
    if keep_dir:
        out_dir = os.path.abspath(keep_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
    else:
        out_dir = tempfile.mkdtemp(prefix="flowd-stubs-")
        atexit.register(shutil.rmtree, out_dir, True)
    _generate(proto_dir, out_dir)
    _splice(out_dir)

    ns = types.SimpleNamespace(out_dir=out_dir, proto_dir=proto_dir)
    ns.health_pb2 = importlib.import_module("grpc.health.v1.health_pb2")
    ns.health_pb2_grpc = importlib.import_module("grpc.health.v1.health_pb2_grpc")
    ns.status_pb2 = importlib.import_module("google.rpc.status_pb2")
    ns.error_details_pb2 = importlib.import_module("google.rpc.error_details_pb2")
    ns.workflows_pb2 = importlib.import_module("flowd.v1.workflows_pb2")
    ns.workflows_pb2_grpc = importlib.import_module("flowd.v1.workflows_pb2_grpc")
    ns.control_pb2 = importlib.import_module("flowd.testing.v1.control_pb2")
    ns.control_pb2_grpc = importlib.import_module("flowd.testing.v1.control_pb2_grpc")

    for mod in (ns.health_pb2, ns.status_pb2, ns.error_details_pb2, ns.control_pb2, ns.workflows_pb2):
        if not os.path.abspath(mod.__file__).startswith(out_dir + os.sep):
            raise StubError(f"{mod.__name__} was imported from {mod.__file__}, not from the generated stubs")
    return ns
