"""Reading the README's code as its tests need it (tests/e2e/test_readme_snippet.py checks it, the wheel-install
test runs it after a real install)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from paths import REPO

README = REPO / "README.md"
INSTALL_LINE = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install \.( && .*)?$")
TEST_COMMAND = "bash scripts/test.sh"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def snippet() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", readme(), flags=re.S)
    return code


def shell_lines() -> list[str]:
    """Every line of the README's ```sh blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", readme(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def allbatch_commands() -> list[list[str]]:
    """Every `allbatch ...` invocation in the README (shell blocks, `&&` chains and inline code), as argv after `allbatch`."""
    texts = shell_lines() + re.findall(r"`((?:\.venv/bin/)?allbatch [^`]+)`", readme())
    commands = []
    for text in texts:
        for part in text.split("&&"):
            words = shlex.split(part.strip())
            if words and Path(words[0]).name == "allbatch":
                commands.append(words[1:])
    return commands
