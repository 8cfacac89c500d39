"""RPC endpoints and the layer split over several devices (no RPC server needed)."""

from __future__ import annotations

import socket

import pytest

from ggufd.engine.devices import layer_devices
from ggufd.engine.rpc import Endpoint, RPCError, check_reachable, parse_endpoints


def test_endpoints_are_parsed() -> None:
    assert parse_endpoints("10.0.0.2:50052, helper:1") == [
        Endpoint("10.0.0.2", 50052),
        Endpoint("helper", 1),
    ]
    (v6,) = parse_endpoints("[::1]:50052")
    assert v6 == Endpoint("::1", 50052) and str(v6) == "[::1]:50052"


@pytest.mark.parametrize("bad", ["", "host", "host:", ":50052", "h:0", "h:70000", "h:port"])
def test_bad_endpoints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoints(bad)


def test_an_unreachable_server_is_named() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RPCError, match=f"127.0.0.1:{port} cannot be reached"):
        check_reachable(Endpoint("127.0.0.1", port), timeout=2)


@pytest.mark.parametrize(
    ("n_layer", "offloaded", "shares", "counts"),
    [
        (30, 31, [1.0, 1.0], {0: 16, 1: 15}),  # all 31 layers over two equal devices
        (30, 31, [3.0, 1.0], {0: 24, 1: 7}),  # --tensor_split 3,1
        (30, 16, [1.0, 1.0], {-1: 15, 0: 8, 1: 8}),  # the first 15 stay on the CPU
        (30, 0, [1.0, 1.0], {-1: 31}),
        (30, 31, [1.0, 0.0], {0: 31}),  # a device with no share gets nothing
    ],
)
def test_layer_split_as_llama_cpp_assigns_it(
    n_layer: int, offloaded: int, shares: list[float], counts: dict[int, int]
) -> None:
    where = layer_devices(n_layer, offloaded, shares)
    assert len(where) == n_layer + 1
    assert {d: where.count(d) for d in set(where)} == counts
    gpu = [d for d in where if d >= 0]
    assert gpu == sorted(gpu)  # contiguous runs, in device order
