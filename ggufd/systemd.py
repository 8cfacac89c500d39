"""``ggufd service install``: write a systemd unit that runs ggufd with the flags given.

This module owns the unit's text (:func:`render_unit`), systemd's quoting of command-line
words (:func:`quote_word`), where user and system units go (:func:`unit_path`), writing
the file and printing the ``systemctl`` commands to run. It never runs ``systemctl``.
"""

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ggufd.flags import fail, parse_settings

PROG = "ggufd service"
DESCRIPTION = "ggufd OpenAI-compatible GGUF inference server"
# Server flags holding a path: made absolute, since systemd starts services in /.
PATH_SETTINGS = ("model", "models_dir", "config_file", "api_key_file", "cache_dir")
PATH_FLAGS = frozenset(
    flag for name in PATH_SETTINGS for flag in (f"--{name}", f"--{name.replace('_', '-')}")
)
UNIT_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")  # written without quotes
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
STOP_GRACE_S = 30  # TimeoutStopSec = the server's drain timeout + this


@dataclass(frozen=True)
class UnitSpec:
    """What goes into one unit: scope ``user`` or ``system``, the command and environment."""

    scope: str
    argv: list[str]  # the interpreter, then its arguments
    env: list[str]  # KEY=VALUE
    drain_timeout_s: float
    user: str | None = None  # User= of a system unit


def quote_word(word: str, dollar: bool = True) -> str:
    """``word`` for a unit file: as is if plain, else in double quotes with C escapes,
    ``%`` as ``%%`` and, if ``dollar`` (ExecStart= arguments), ``$`` as ``$$``."""
    if PLAIN_WORD.fullmatch(word):
        return word
    out: list[str] = []
    for char in word:
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        elif char == "%" or (char == "$" and dollar):
            out.append(char * 2)
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def exec_line(argv: list[str]) -> str:
    """The ExecStart= value running ``argv``; ``$`` is expanded in arguments, not the path."""
    path = argv[0]
    if any(char < " " or char in "\\\"'\x7f" for char in path):
        fail(f"systemd refuses an executable path with quotes or backslashes: {path}")
    words = [quote_word(arg) for arg in argv[1:]]
    if "$" in path:  # @PATH ARGV0: the path is not expanded, argv[0] is
        return " ".join(["@" + quote_word(path, dollar=False), quote_word(path), *words])
    return " ".join([quote_word(path, dollar=False), *words])


def absolute_paths(flags: list[str], cwd: str) -> list[str]:
    """``flags`` with each relative path of a PATH_FLAGS flag made absolute against ``cwd``."""

    def fix(value: str) -> str:
        if not value or value.startswith("~") or os.path.isabs(value):
            return value
        return os.path.normpath(os.path.join(cwd, value))

    out: list[str] = []
    for index, arg in enumerate(flags):
        flag, equals, value = arg.partition("=")
        if equals and flag in PATH_FLAGS:
            out.append(f"{flag}={fix(value)}")
        elif index > 0 and flags[index - 1] in PATH_FLAGS:
            out.append(fix(arg))
        else:
            out.append(arg)
    return out


def render_unit(spec: UnitSpec) -> str:
    """The unit file's text."""
    stop_timeout = math.ceil(spec.drain_timeout_s) + STOP_GRACE_S
    env = ["PYTHONUNBUFFERED=1", *spec.env]
    if spec.scope == "system" and spec.user:
        user = [f"User={spec.user}"]
    elif spec.scope == "system":
        user = ["# User= is not set, so the server runs as root: add User=<account> here."]
    else:
        user = []
    lines = [
        "# Written by `ggufd service install`.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={exec_line(spec.argv)}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        *(f"Environment={quote_word(item, dollar=False)}" for item in env),
        *user,
        "NoNewPrivileges=true",
        "",
        "[Install]",
        f"WantedBy={'default.target' if spec.scope == 'user' else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def unit_path(scope: str, name: str, unit_dir: str | None = None) -> Path:
    """Where the unit ``name.service`` goes: ``--unit-dir``, else systemd's folder for it."""
    if unit_dir:
        folder = Path(unit_dir)
    elif scope == "system":
        folder = Path("/etc/systemd/system")
    else:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        folder = Path(config) / "systemd" / "user"
    return folder.absolute() / f"{name}.service"


def next_steps(scope: str, name: str) -> list[str]:
    """The commands that enable and start the installed unit, then follow its log."""
    unit = f"{name}.service"
    ctl, journal = (
        ("systemctl --user", "journalctl --user")
        if scope == "user"
        else ("sudo systemctl", "sudo journalctl")
    )
    lines = [
        "Now run:",
        f"  {ctl} daemon-reload",
        f"  {ctl} enable --now {unit}",
        f"  {ctl} status {unit}",
        f"  {journal} -u {unit} -f",
    ]
    if scope == "user":
        lines.append("To keep it running after you log out: loginctl enable-linger $USER")
    return lines


def write_unit(path: Path, text: str, force: bool) -> str:
    """Write ``text`` to ``path`` unless a different file is there (and not ``force``)."""
    try:
        if path.exists() and path.read_text(encoding="utf-8") == text:
            return f"unchanged {path} (already installed)"
        if path.exists() and not force:
            fail(f"{path} exists and differs; pass --force to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        hint = "; run it with sudo or use --user" if isinstance(exc, PermissionError) else ""
        fail(f"cannot write {path}: {exc.strerror or exc}{hint}")
    return f"wrote {path}"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one ``ggufd: error:`` line with exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    """``ggufd service`` and its one command, ``install``."""
    parser = _Parser(prog=PROG, description="Run ggufd as a systemd service.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    install = commands.add_parser(
        "install",
        allow_abbrev=False,
        usage=f"{PROG} install [options] [--] [ggufd flags ...]",
        help="write a systemd unit running ggufd with the flags given",
        description="Write a systemd unit that runs ggufd with the flags given (this Python, "
        "so no virtualenv activation is needed) and print the systemctl commands to run.",
    )
    scope = install.add_mutually_exclusive_group()
    scope.add_argument(
        "--user",
        dest="scope",
        action="store_const",
        const="user",
        help="a user unit, no root needed (default unless run as root)",
    )
    scope.add_argument(
        "--system",
        dest="scope",
        action="store_const",
        const="system",
        help="a system unit in /etc/systemd/system (default as root)",
    )
    install.add_argument("--name", default="ggufd", help="unit name (default: ggufd)")
    install.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an Environment= line for the service (repeatable)",
    )
    install.add_argument("--print", action="store_true", help="print the unit, write nothing")
    install.add_argument("--force", action="store_true", help="replace a different unit file")
    install.add_argument("--unit-dir", metavar="DIR", help="write the unit in this folder")
    return parser


def _check(options: argparse.Namespace) -> None:
    if options.name.endswith(".service"):
        options.name = options.name[: -len(".service")]
    if not UNIT_NAME.fullmatch(options.name):
        fail(f"--name {options.name!r}: use letters, digits and _ . : - only")
    for item in options.env:
        key, equals, _ = item.partition("=")
        if not equals or not ENV_KEY.fullmatch(key):
            fail(f"--env {item!r}: expected KEY=VALUE with KEY a variable name")


def main(argv: list[str] | None = None) -> int:
    """Run ``ggufd service ARGS`` (``argv`` default: ``sys.argv[2:]``); returns the status."""
    args = sys.argv[2:] if argv is None else list(argv)
    own, server = args, []
    if "--" in args:
        cut = args.index("--")
        own, server = args[:cut], args[cut + 1 :]
    options, extra = build_parser().parse_known_args(own)
    _check(options)
    flags = absolute_paths(extra + server, os.getcwd())
    settings = parse_settings(flags)  # fails with one line on a bad flag
    scope = options.scope or ("system" if os.geteuid() == 0 else "user")
    sudo_user = os.environ.get("SUDO_USER")
    spec = UnitSpec(
        scope=scope,
        argv=[os.path.abspath(sys.executable), "-m", "ggufd", *flags],
        env=options.env,
        drain_timeout_s=settings.drain_timeout_s,
        user=sudo_user if sudo_user and sudo_user != "root" else None,
    )
    text = render_unit(spec)
    if options.print:
        sys.stdout.write(text)
        return 0
    path = unit_path(scope, options.name, options.unit_dir)
    print(write_unit(path, text, options.force))
    print("\n".join(next_steps(scope, options.name)))
    unseen = sorted(name for name in os.environ if name.upper().startswith("GGUFD_"))
    if unseen:
        print(f"The service does not see {', '.join(unseen)} from this shell: use --env.")
    return 0
