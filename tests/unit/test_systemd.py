"""Tests for ``ggufd service install`` (ggufd.systemd): the unit's text, systemd's quoting,
paths, overwrite rules and one-line errors; units are checked by ``systemd-analyze verify``."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ggufd import cli, systemd

TYPICAL = "--model /m/x.gguf --host 0.0.0.0 --port 8080 --n_ctx 32768 --n_gpu_layers -1"
TYPICAL_FLAGS = [*TYPICAL.split(), "--verbose", "False"]
# Values systemd treats specially: specifiers, variables, quotes, escapes, separators.
TRICKY = [
    "a b",
    "50%",
    "%k",
    "%%",
    "$HOME",
    "${HOME}",
    "$$",
    '"quoted"',
    "it's",
    "back\\slash",
    "\\q",
    "ends\\",
    "tab\there",
    "new\nline",
    ";",
    "",
    "ünïcødé",
    "-x",
    "=",
]
C_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GGUFD_") or name == "SUDO_USER":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``ggufd service ARGV`` through cli.main: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        cli.main(["service", *argv])
    code = info.value.code
    assert isinstance(code, int)
    out, err = capsys.readouterr()
    return code, out, err


def printed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run(["install", "--print", *argv], capsys)
    assert (code, err) == (0, "")
    return out


def unit_words(value: str) -> list[str]:
    """Split a unit file value the way systemd does (written from systemd.exec(5) and
    systemd.syntax(7)): specifiers first (only %% is expected here), then words with
    double or single quotes and C escapes."""
    assert not re.search(r"%[^%]", value.replace("%%", "")), f"unexpected specifier: {value}"
    value = value.replace("%%", "%")
    words: list[str] = []
    index = 0
    while index < len(value):
        if value[index] in " \t":
            index += 1
            continue
        word, quote = [], ""
        while index < len(value) and (quote or value[index] not in " \t"):
            char = value[index]
            if char == "\\":
                nxt = value[index + 1]
                if nxt == "x":
                    word.append(chr(int(value[index + 2 : index + 4], 16)))
                    index += 4
                    continue
                assert nxt in C_ESCAPES, f"unknown escape \\{nxt} in {value!r}"
                word.append(C_ESCAPES[nxt])
                index += 2
                continue
            if char in "\"'" and (not quote or char == quote):
                quote = "" if quote else char
            else:
                word.append(char)
            index += 1
        assert not quote, f"unbalanced quoting: {value!r}"
        words.append("".join(word))
    return words


def dollars(word: str) -> str:
    """An ExecStart= argument after variable expansion, which must leave it as written."""
    assert not re.search(r"\$[^$]|\$$", word.replace("$$", "")), f"bare $ in {word!r}"
    return word.replace("$$", "$")


def exec_argv(exec_start: str) -> list[str]:
    """The path and arguments of an ExecStart= value; $ is not expanded in the path.
    With an @ prefix the second word is argv[0], a plain argument: it is dropped here."""
    words = unit_words(exec_start.removeprefix("@"))
    args = words[2:] if exec_start.startswith("@") else words[1:]
    return [words[0], *(dollars(word) for word in args)]


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value); comments and blanks dropped."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), "no line continuations expected"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, equals, value = line.partition("=")
        assert equals, line
        current.append((key, value))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit[section] if name == key]


def verify(path: Path, user: bool = False) -> None:
    """``systemd-analyze verify`` passes and says nothing about the unit file."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    env = dict(os.environ)
    command = [exe, "verify", "--man=no"]
    if user:  # the user manager wants a runtime folder even offline
        runtime = path.parent / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        command.append("--user")
    done = subprocess.run(
        [*command, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    about_unit = [line for line in done.stderr.splitlines() if path.name in line]
    assert done.returncode == 0 and not about_unit, done.stderr


def install(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> Path:
    units = tmp_path / "units"
    code, out, err = run(["install", "--unit-dir", str(units), *argv], capsys)
    assert (code, err) == (0, ""), err
    assert out.startswith("wrote ")
    (path,) = units.glob("*.service")
    return path


def test_typical_unit(capsys: pytest.CaptureFixture[str]) -> None:
    unit = parse_unit(printed(["--system", *TYPICAL_FLAGS], capsys))
    assert list(unit) == ["Unit", "Service", "Install"]
    assert unit["Unit"] == [
        ("Description", "ggufd OpenAI-compatible GGUF inference server"),
        ("After", "network-online.target"),
        ("Wants", "network-online.target"),
    ]
    service = dict(unit["Service"])
    assert service["Type"] == "exec"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5"
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "60"  # default drain 30 s + 30
    assert service["NoNewPrivileges"] == "true"
    assert values(unit, "Service", "Environment") == ["PYTHONUNBUFFERED=1"]
    assert exec_argv(service["ExecStart"]) == [sys.executable, "-m", "ggufd", *TYPICAL_FLAGS]
    assert os.path.isabs(exec_argv(service["ExecStart"])[0])
    assert unit["Install"] == [("WantedBy", "multi-user.target")]


@pytest.mark.parametrize("value", TRICKY)
def test_exec_start_round_trip(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f"--model_alias={value}", "--root_path", value, f"--api_key={value}"]
    if value.startswith("-"):  # argparse takes it for a flag
        flags[1:3] = [f"--root_path={value}"]
    unit = parse_unit(printed(["--user", "--", *flags], capsys))
    (exec_start,) = values(unit, "Service", "ExecStart")
    assert exec_argv(exec_start) == [sys.executable, "-m", "ggufd", *flags]


@pytest.mark.parametrize("value", TRICKY)
def test_environment_round_trip(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    unit = parse_unit(printed(["--user", "--env", f"X_Y={value}"], capsys))
    lines = values(unit, "Service", "Environment")
    assert [unit_words(line) for line in lines] == [
        ["PYTHONUNBUFFERED=1"],
        [f"X_Y={value}"],
    ]


def test_tricky_units_pass_systemd_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [f"--api_key={value}" for value in TRICKY]
    envs = [arg for value in TRICKY for arg in ("--env", f"V={value}")]
    verify(install(tmp_path, ["--system", *envs, "--", *TYPICAL_FLAGS, *flags], capsys))


@pytest.mark.parametrize("scope", ["--user", "--system"])
def test_typical_unit_passes_systemd_analyze(
    scope: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verify(install(tmp_path, [scope, *TYPICAL_FLAGS], capsys), user=scope == "--user")


@pytest.mark.parametrize("folder", ["with space", "50%", "cost$x", "ünï"])
def test_interpreter_path_found_by_systemd(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # systemd-analyze fails if the ExecStart path it reads is not this executable.
    python = tmp_path / folder / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(python))
    path = install(tmp_path, ["--system"], capsys)
    (exec_start,) = values(parse_unit(path.read_text()), "Service", "ExecStart")
    assert exec_argv(exec_start)[0] == str(python)
    if "$" in folder:  # @PATH ARGV0: argv[0] is expanded, the path is not
        assert exec_start.startswith("@")
        assert dollars(unit_words(exec_start[1:])[1]) == str(python)
    verify(path)


def test_interpreter_path_systemd_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / 'a"b' / "python"))
    code, out, err = run(["install", "--print"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("ggufd: error: systemd refuses") and err.count("\n") == 1


def test_relative_paths_made_absolute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conf.json").write_text("{}")
    flags = [
        "--model",
        "x.gguf",
        "--models-dir=../models",
        "--config_file",
        "./conf.json",
        "--api-key-file",
        "keys.txt",
        "--cache_dir=cache",
        "--model_alias",
        "rel/name",
    ]
    unit = parse_unit(printed(["--user", *flags], capsys))
    (exec_start,) = values(unit, "Service", "ExecStart")
    assert exec_argv(exec_start)[3:] == [
        "--model",
        str(tmp_path / "x.gguf"),
        f"--models-dir={tmp_path.parent / 'models'}",
        "--config_file",
        str(tmp_path / "conf.json"),
        "--api-key-file",
        str(tmp_path / "keys.txt"),
        f"--cache_dir={tmp_path / 'cache'}",
        "--model_alias",
        "rel/name",
    ]


def test_absolute_and_home_paths_kept() -> None:
    flags = ["--model", "/a/b.gguf", "--cache-dir", "~/c", "--models_dir="]
    assert systemd.absolute_paths(flags, "/cwd") == flags


def test_print_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(["--unit-dir", str(tmp_path / "units"), *TYPICAL_FLAGS], capsys)
    assert out.startswith("# Written by") and "[Service]" in out
    assert not (tmp_path / "units").exists()


def test_install_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = install(tmp_path, ["--user", "--name", "llm", *TYPICAL_FLAGS], capsys)
    assert path.name == "llm.service"
    first = path.read_text()
    argv = ["install", "--user", "--name", "llm.service", "--unit-dir", str(path.parent)]
    code, out, _ = run([*argv, *TYPICAL_FLAGS], capsys)  # the same unit again: fine
    assert code == 0 and out.startswith("unchanged ")
    code, out, err = run([*argv, "--port", "9000"], capsys)
    assert (code, out) == (2, "")
    assert err == f"ggufd: error: {path} exists and differs; pass --force to replace it\n"
    assert path.read_text() == first
    code, out, _ = run([*argv, "--force", "--port", "9000"], capsys)
    assert code == 0 and out.startswith("wrote ")
    assert '"9000"' not in path.read_text() and "--port 9000" in path.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "x"], "argument --port: expected an integer"),
        (["--no_such_flag", "1"], "unknown flag --no_such_flag"),
        (["--env", "1X=2"], "--env '1X=2': expected KEY=VALUE"),
        (["--env", "NOVALUE"], "--env 'NOVALUE': expected KEY=VALUE"),
        (["--name", "a/b"], "--name 'a/b': use letters"),
        (["--user", "--system"], "not allowed with argument"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = tmp_path / "units"
    code, out, err = run(["install", "--unit-dir", str(units), *argv], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("ggufd: error: ") and message in err and err.count("\n") == 1
    assert not units.exists()


def test_service_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys)
    assert code == 2 and err.startswith("ggufd: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--help"], ["install", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(argv, capsys)
    assert code == 0 and "install" in out
    if len(argv) == 2:
        assert all(flag in out for flag in ("--user", "--system", "--print", "--env", "--force"))


def test_env_lines(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--env", "VULKAN_SDK=/usr", "--env", "AMD_VULKAN_ICD=RADV", *TYPICAL_FLAGS]
    unit = parse_unit(printed(argv, capsys))
    assert values(unit, "Service", "Environment") == [
        "PYTHONUNBUFFERED=1",
        "VULKAN_SDK=/usr",
        "AMD_VULKAN_ICD=RADV",
    ]


def test_user_unit_path_and_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: a user unit by default
    code, out, err = run(["install", *TYPICAL_FLAGS], capsys)
    path = tmp_path / "config" / "systemd" / "user" / "ggufd.service"
    assert (code, err) == (0, "")
    unit = parse_unit(path.read_text())
    assert unit["Install"] == [("WantedBy", "default.target")]
    assert "User" not in dict(unit["Service"])
    assert out.splitlines() == [
        f"wrote {path}",
        "Now run:",
        "  systemctl --user daemon-reload",
        "  systemctl --user enable --now ggufd.service",
        "  systemctl --user status ggufd.service",
        "  journalctl --user -u ggufd.service -f",
        "To keep it running after you log out: loginctl enable-linger $USER",
    ]


def test_system_unit_path_user_and_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert systemd.unit_path("system", "llm") == Path("/etc/systemd/system/llm.service")
    assert systemd.next_steps("system", "llm")[1:] == [
        "  sudo systemctl daemon-reload",
        "  sudo systemctl enable --now llm.service",
        "  sudo systemctl status llm.service",
        "  sudo journalctl -u llm.service -f",
    ]
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root: a system unit by default
    text = printed(TYPICAL_FLAGS, capsys)
    assert "WantedBy=multi-user.target" in text
    assert "User=" not in dict(parse_unit(text)["Service"])
    assert "# User= is not set" in text
    monkeypatch.setenv("SUDO_USER", "arcana")
    assert values(parse_unit(printed(TYPICAL_FLAGS, capsys)), "Service", "User") == ["arcana"]


@pytest.mark.parametrize(("drain", "expected"), [(None, "60"), ("0", "30"), ("12.5", "43")])
def test_timeout_stop_follows_drain_timeout(
    drain: str | None, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [] if drain is None else ["--drain_timeout_s", drain]
    unit = parse_unit(printed(["--system", *flags], capsys))
    assert values(unit, "Service", "TimeoutStopSec") == [expected]


def test_note_on_ggufd_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GGUFD_PORT", "9000")
    units = tmp_path / "units"
    code, out, _ = run(["install", "--user", "--unit-dir", str(units)], capsys)
    assert code == 0
    assert "GGUFD_PORT" in out.splitlines()[-1] and "--env" in out.splitlines()[-1]
    assert "9000" not in (units / "ggufd.service").read_text()


def test_systemd_does_not_import_cli() -> None:
    """ggufd.cli imports ggufd.systemd (lazily) for ``ggufd service``: never the other way."""
    code = "import sys, ggufd.systemd; print('ggufd.cli' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
