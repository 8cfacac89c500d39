"""Flags of ggufd's command line, shared by ``ggufd`` (:mod:`ggufd.cli`) and ``ggufd service``.

This module owns :func:`build_parser` (one ``--flag`` per :class:`ServerSettings` field, in
both ``--n_ctx`` and ``--n-ctx`` spellings, with its value parsers), :func:`parse_settings`
(the flags merged with the environment and the config file) and the one-line
``ggufd: error: ...`` reporting of :func:`fail` (exit status 2, no traceback). It imports
neither :mod:`ggufd.cli` nor :mod:`ggufd.systemd`, which both build on it.
"""

import argparse
import difflib
import sys
import types
from collections.abc import Callable
from typing import Any, NoReturn, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from ggufd import __version__
from ggufd.settings import ServerSettings, SettingsError, load_settings, parse_bool

PROG = "ggufd"


def fail(message: str) -> NoReturn:
    """Print ``ggufd: error: <message>`` as one line to stderr and exit with status 2."""
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    raise SystemExit(2)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump) and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        fail(_rewrite_error(message, self._option_string_actions))


def _rewrite_error(message: str, known: dict[str, Any]) -> str:
    prefix = "unrecognized arguments: "
    if not message.startswith(prefix):
        return f"{message}; see {PROG} --help"
    words = message[len(prefix) :].split()
    flags = [word.split("=", 1)[0] for word in words if word.startswith("-")]
    if not flags:
        return (
            f"unexpected argument {words[0]!r} (settings are given as --name value); "
            f"see {PROG} --help"
        )
    flag = flags[0]
    close = difflib.get_close_matches(
        flag, [name for name in known if name.startswith("--")], 1, 0.8
    )
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown flag {flag}{hint}; see {PROG} --help"


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "null") else _parse_int(text)


def _parse_bool_arg(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) for ``X`` or ``X | None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _parse_optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "null") else _parse_float(text)


def _converter(info: FieldInfo) -> tuple[Callable[[str], Any], str]:
    """The argparse ``type`` function and metavar for a settings field."""
    base, optional = _base_type(info.annotation)
    if base is bool:
        return _parse_bool_arg, "BOOL"
    if base is int:
        return (_parse_optional_int if optional else _parse_int), "N"
    if base is float:
        return (_parse_optional_float if optional else _parse_float), "X"
    return str, "TEXT"


def _is_list(info: FieldInfo) -> bool:
    return get_origin(info.annotation) is list


CONFIG_FILE_ONLY = frozenset({"models"})  # structured settings with no flag


def _help_text(info: FieldInfo) -> str:
    description = (info.description or "").replace("%", "%%")
    default = info.get_default(call_default_factory=True)
    return f"{description} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    """An argument parser with one flag per ServerSettings field.

    Defaults are ``argparse.SUPPRESS`` so the parsed namespace holds only the flags that
    were given, leaving the rest to the environment, the config file and the defaults.
    """
    parser = _Parser(
        prog=PROG,
        description="OpenAI-compatible inference server for GGUF models (llama.cpp); "
        "a drop-in replacement for python -m llama_cpp.server. Every flag can also be set "
        "with a GGUFD_<NAME> environment variable or in --config_file.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for name, info in ServerSettings.model_fields.items():
        if name in CONFIG_FILE_ONLY:
            continue
        flags = [f"--{name}"]
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
        if _is_list(info):
            parser.add_argument(
                *flags, dest=name, action="append", metavar="TEXT", help=_help_text(info)
            )
            continue
        convert, metavar = _converter(info)
        parser.add_argument(*flags, dest=name, type=convert, metavar=metavar, help=_help_text(info))
    return parser


def parse_settings(argv: list[str] | None = None) -> ServerSettings:
    """Parse the command line and merge it with the environment and config file."""
    namespace = build_parser().parse_args(argv)
    try:
        return load_settings(vars(namespace))
    except SettingsError as exc:
        fail(str(exc))
