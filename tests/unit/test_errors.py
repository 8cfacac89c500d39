"""Domain errors: what each carries for the APIs' error tables."""

from __future__ import annotations

from ggufd.engine.types import ErrorKind
from ggufd.errors import (
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Origin,
    QueueFull,
    ServingError,
)


def test_every_error_is_a_serving_error_with_a_message() -> None:
    errors: list[ServingError] = [
        InvalidRequest("bad", Origin.TOOLS),
        ModelNotFound("x", ["a", "b"]),
        QueueFull("busy", 3),
        ModelUnavailable("loading"),
        EngineFailure(ErrorKind.TIMEOUT, "slow"),
    ]
    for err in errors:
        assert isinstance(err, ServingError) and str(err) == err.message


def test_model_not_found_lists_the_models() -> None:
    err = ModelNotFound("gpt-x", ["one", "two"])
    assert err.message == "model 'gpt-x' not found; this server has: one, two"
    assert (err.name, err.known, err.origin) == ("gpt-x", ["one", "two"], Origin.MODEL)


def test_retry_hints() -> None:
    assert QueueFull("busy", 4).retry_after == 4
    assert ModelUnavailable("loading").retry_after == 1


def test_engine_failure_keeps_its_kind_and_origin() -> None:
    err = EngineFailure(ErrorKind.CONTEXT_LENGTH, "too long", Origin.MESSAGES)
    assert (err.kind, err.origin) == (ErrorKind.CONTEXT_LENGTH, Origin.MESSAGES)
