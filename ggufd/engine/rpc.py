"""llama.cpp's RPC backend: serve this machine's devices to others, or use others' devices.

`ggufd rpc-server` runs `ggml_backend_rpc_start_server` (from the `libggml-rpc` that
llama-cpp-python builds with -DGGML_RPC=ON) on this machine's CPU or chosen devices; a
model served with `--rpc host:port,...` adds those servers' devices to llama.cpp's
registry (`ggml_backend_rpc_add_server`) before it loads, so `--n_gpu_layers` and
`--tensor_split` spread layers over them as over local GPUs. The protocol has no
authentication: it belongs on a trusted network only. Only the functions that reach
llama.cpp load it (the settings parse endpoints without it).
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ggufd.engine.devices import Device

RPC_LIB = "libggml-rpc.so"
CONNECT_TIMEOUT_S = 5.0


class RPCError(RuntimeError):
    """The RPC backend is missing, or a server cannot be reached."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoints(text: str) -> list[Endpoint]:
    """`host:port,host:port` (IPv6 hosts in brackets) as endpoints; ValueError if malformed."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"an RPC server is host:port, got {item!r}")
        out.append(Endpoint(host, int(port)))
    if not out:
        raise ValueError("no RPC server given")
    return out


def available() -> bool:
    """Whether this llama.cpp was built with the RPC backend."""
    import llama_cpp

    folder = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    return os.path.exists(os.path.join(folder, RPC_LIB))


def _rpc() -> ctypes.CDLL:
    from ggufd.engine import devices

    if not available():
        raise RPCError(
            "this llama.cpp has no RPC backend: rebuild it with -DGGML_RPC=ON (make setup does)"
        )
    lib = devices._lib(RPC_LIB)
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    lib.ggml_backend_rpc_add_server.argtypes, lib.ggml_backend_rpc_add_server.restype = [cp], vp
    lib.ggml_backend_rpc_start_server.argtypes = [cp, cp, sz, sz, ctypes.POINTER(vp)]
    lib.ggml_backend_rpc_start_server.restype = None
    return lib


def check_reachable(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """RPCError naming the server unless a TCP connection to it opens (llama.cpp's own RPC
    client aborts the process on a refused connection, so ask first)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            pass
    except OSError as e:
        raise RPCError(f"the RPC server {endpoint} cannot be reached: {e.strerror or e}") from e


def add_servers(endpoints: list[Endpoint]) -> None:
    """Add the servers' devices to llama.cpp's registry (each is checked first)."""
    from ggufd.engine import devices

    lib = _rpc()
    ggml = devices._lib("libggml.so")
    ggml.ggml_backend_register.argtypes, ggml.ggml_backend_register.restype = (
        [ctypes.c_void_p],
        None,
    )
    for ep in endpoints:
        check_reachable(ep)
        reg = lib.ggml_backend_rpc_add_server(str(ep).encode())
        if not reg:
            raise RPCError(f"llama.cpp could not add the RPC server {ep}")
        ggml.ggml_backend_register(reg)


def start_server(
    endpoint: Endpoint, offered: list[Device], threads: int, cache_dir: str | None
) -> None:
    """Serve `offered` (local devices) at `endpoint`; returns only if llama.cpp stops."""
    from ggufd.engine import devices

    lib = _rpc()
    handles = devices.device_handles([d.name for d in offered])
    arr = (ctypes.c_void_p * len(handles))(*handles)
    cache = cache_dir.encode() if cache_dir else None
    lib.ggml_backend_rpc_start_server(str(endpoint).encode(), cache, threads, len(handles), arr)
