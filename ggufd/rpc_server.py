"""``ggufd rpc-server``: offer this machine's CPU or GPU to a ggufd elsewhere (llama.cpp RPC).

A helper machine runs ``ggufd rpc-server --host 0.0.0.0 --port 50052``; the main machine
serves a model with ``--rpc helper:50052 --n_gpu_layers -1`` and llama.cpp puts layers on
the helper's device. llama.cpp's RPC protocol has no authentication or encryption: anyone
who reaches the port can use the device, so ``--host`` defaults to 127.0.0.1 and the
server says so when it starts. It runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from ggufd.flags import fail

PROG = "ggufd rpc-server"
DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
WARNING = (
    "the RPC protocol has no authentication: anyone who can reach this port can use "
    "these devices; run it on a trusted network only"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: physical cores)"
    )
    p.add_argument(
        "--device",
        action="append",
        default=None,
        metavar="NAME",
        help="a device to offer, as `ggufd devices` names it (repeatable; default: the GPUs, "
        "or the CPU when there is none)",
    )
    p.add_argument("--cache_dir", "--cache-dir", default=None, help="cache tensors sent here")
    return p


def _stop(signum: int, frame: FrameType | None) -> None:
    os._exit(0)  # llama.cpp's server loop cannot be interrupted: leave at once


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ggufd.engine import devices, rpc
    from ggufd.settings import physical_cores

    if not 0 < args.port < 65536:
        fail(f"--port must be between 1 and 65535, got {args.port}")
    if not rpc.available():
        fail("this llama.cpp has no RPC backend: rebuild it with -DGGML_RPC=ON (make setup does)")
    found = devices.devices()
    if args.device:
        offered = [d for d in found if d.name in args.device]
        unknown = sorted(set(args.device) - {d.name for d in offered})
        if unknown:
            fail(f"no device named {unknown[0]!r}; see `ggufd devices`")
    else:
        offered = [d for d in found if d.is_gpu] or [d for d in found if d.kind == "CPU"]
    threads = args.threads or physical_cores()
    endpoint = rpc.Endpoint(args.host, args.port)
    what = ", ".join(f"{d.label} ({d.free // devices.MIB} MiB free)" for d in offered)
    print(f"{PROG}: offering {what} at {endpoint}, {threads} threads", flush=True)
    print(f"{PROG}: warning: {WARNING}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = threading.Thread(
        target=rpc.start_server, args=(endpoint, offered, threads, args.cache_dir), daemon=True
    )
    server.start()
    while server.is_alive():
        server.join(0.5)
    fail(f"the RPC server at {endpoint} stopped (the port may be in use)")
