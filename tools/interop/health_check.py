#!/usr/bin/env python3
"""Asks a flowd server for its health with the stock grpcio client.

    python3 tools/interop/health_check.py --target 127.0.0.1:50051
    python3 tools/interop/health_check.py --target 127.0.0.1:50051 --service flowd.v1.Workflows
    python3 tools/interop/health_check.py --target 127.0.0.1:50051 --watch

Prints the serving status (SERVING, NOT_SERVING, ...) or the gRPC error. Exit status: 0 when
SERVING, 1 for any other status, 2 for an RPC error (server down, NOT_FOUND, ...).
Stubs are generated from proto/ on the fly (see flowd_stubs.py).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flowd_stubs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051", help="host:port (default 127.0.0.1:50051)")
    ap.add_argument("--service", default="", help="service name; empty means the whole server")
    ap.add_argument("--timeout", type=float, default=5.0, help="call deadline in seconds (default 5)")
    ap.add_argument("--watch", action="store_true",
                    help="call Watch instead of Check and print each status until Ctrl-C or --timeout")
    args = ap.parse_args(argv)

    stubs = flowd_stubs.load()
    import grpc

    h = stubs.health_pb2
    name = h.HealthCheckResponse.ServingStatus.Name
    with grpc.insecure_channel(args.target) as channel:
        stub = stubs.health_pb2_grpc.HealthStub(channel)
        req = h.HealthCheckRequest(service=args.service)
        try:
            if args.watch:
                last = None
                try:
                    for resp in stub.Watch(req, timeout=args.timeout):
                        last = resp.status
                        print(name(resp.status), flush=True)
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED or last is None:
                        raise
                except KeyboardInterrupt:
                    pass
                return 0 if last == h.HealthCheckResponse.SERVING else 1
            resp = stub.Check(req, timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 2
    print(name(resp.status))
    return 0 if resp.status == h.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
