"""User errors are one unwrapped line on stderr whatever the terminal width or stream, and untrusted
text (file names, messages) reaches the terminal escaped, never as Rich markup or raw control bytes."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from allbatch.cli.console import printable

LONG = "a-rather-long-folder-name-that-would-wrap-at-twenty-columns"


def allbatch_piped(*args: str, columns: str | None = "20") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "allbatch", *args], capture_output=True, text=True, env=env, timeout=120)


def error_cases(tmp_path: Path) -> list[list[str]]:
    not_h5 = tmp_path / LONG / "results.h5"
    not_h5.parent.mkdir()
    not_h5.write_text("not hdf5")
    return [
        ["eval", str(not_h5), "--no-png"],  # an AllbatchError from the library
        ["run", str(tmp_path / LONG), "--out", str(tmp_path / "r.h5"), "--backend", "cuda-on-a-long-name"],  # an option error
        ["run", str(tmp_path), "--batch-size", "not-a-number-at-all-and-quite-long"],  # a usage error (click)
    ]


@pytest.mark.parametrize("columns", ["20", None])
def test_errors_are_one_line_on_a_pipe(tmp_path: Path, columns: str | None) -> None:
    for args in error_cases(tmp_path):
        result = allbatch_piped(*args, columns=columns)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr


def test_errors_are_one_line_on_a_20_column_terminal(tmp_path: Path) -> None:
    for args in error_cases(tmp_path):
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))
        env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
        proc = subprocess.Popen([sys.executable, "-m", "allbatch", *args], stdout=subprocess.DEVNULL, stderr=follower, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.wait(timeout=120) == 1
        text = b"".join(chunks).decode()
        assert text.count("\n") == 1 and "error:" in text, text


def test_printable_escapes_controls_bidi_and_undecodable_bytes() -> None:
    assert printable("a\x1b[31mred\rb\nc\td") == "a\\x1b[31mred\\x0db\\x0ac\\x09d"
    assert printable("evil\u202egpj.exe") == "evil\\u202egpj.exe"
    assert printable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert printable("[Malignant] Pre-B/ümlaut.jpg") == "[Malignant] Pre-B/ümlaut.jpg"


def test_version_flag_prints_the_package_version() -> None:
    from allbatch import __version__

    result = allbatch_piped("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"allbatch {__version__}"


@pytest.mark.parametrize("command", [[], ["run"], ["eval"], ["export"], ["info"], ["bench"], ["engine", "build"]])
def test_help_shows_no_bool_metavar_after_flags(command: list[str]) -> None:
    result = allbatch_piped(*command, "--help", columns="200")
    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout and "<bool>" not in result.stdout and "BOOLEAN" not in result.stdout
