#!/usr/bin/env bash
# Install NVIDIA TensorRT's type stubs (PyPI `tensorrt-stubs`) into a virtual environment and patch them
# so that mypy can check allbatch's TensorRT backend against the real TensorRT 10 Python API.
#   VENV=path   the virtual environment (default .venv)
#
# Why this script exists:
# - TensorRT itself cannot be installed here (PyPI has only shims that download from NVIDIA's index), so
#   the stubs are the only way to type-check the code that calls it.
# - tensorrt-stubs declares dependencies on `tensorrt` and `tensorrt-cu12-bindings` (those very shims):
#   it installs only with --no-deps.
# - The wheel puts its .pyi files into plain `tensorrt/` and `tensorrt_bindings/` folders without a
#   py.typed marker: mypy ignores them, and at run time `import tensorrt` then *succeeds* as an empty
#   namespace package, so every "is TensorRT installed?" check would lie (and on a machine with the real
#   TensorRT the .pyi files land inside its package). The .pyi files are therefore moved into PEP 561
#   stub-only packages `tensorrt-stubs/` and `tensorrt_bindings-stubs/` (the dist's RECORD is updated,
#   so `pip uninstall tensorrt-stubs` still removes them).
# - The generated .pyi does not parse or resolve as it is; three patches (each must match exactly the
#   expected number of times, else this script fails, because a new stub version needs a new look):
#     1. plugin methods with a parameter named `in` (a Python keyword)       -> renamed `in_`
#     2. INetworkDefinition.add_scale_nd: non-default `channel_axis` after
#        parameters with defaults (a SyntaxError in Python)                  -> `channel_axis: int = ...`
#     3. `import tensorrt_libs` (a runtime-only helper package, no stubs)   -> `tensorrt_libs: object`
#   Type errors that remain inside the stub are silenced by a mypy override in pyproject.toml.
# Idempotent: a second run finds the patched stubs and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STUBS_VERSION=10.13.0.35.1 # verified with `pip index versions tensorrt-stubs` (newest on PyPI)
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install_tensorrt_stubs: no python at $PY (set VENV)" >&2; exit 1; }

"$PY" - "$STUBS_VERSION" <<'PYEOF'
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

version = sys.argv[1]
marker = f"# patched by allbatch scripts/install_tensorrt_stubs.sh for tensorrt-stubs {version}"
site = Path(sysconfig.get_paths()["purelib"])
init_stub = site / "tensorrt-stubs" / "__init__.pyi"

try:
    installed = metadata.version("tensorrt-stubs")
except metadata.PackageNotFoundError:
    installed = None
if installed == version and init_stub.is_file() and init_stub.read_text(encoding="utf-8").startswith(marker):
    print(f"tensorrt-stubs {version}: already installed and patched in {site}")
    sys.exit(0)

print(f"tensorrt-stubs {version}: installing into {site} (--no-deps: its dependencies are NVIDIA download shims)")
subprocess.run(
    [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", f"tensorrt-stubs=={version}"],
    check=True,
)
dist = metadata.distribution("tensorrt-stubs")
record = next(Path(str(file.locate())) for file in dist.files or [] if file.name == "RECORD")

# -- move the .pyi files into PEP 561 stub-only packages -------------------------------------------
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
lines = record.read_text(encoding="utf-8").splitlines()
moved: list[Path] = []
new_lines = []
for line in lines:
    path, _, rest = line.partition(",")
    top, _, inner = path.partition("/")
    if top in STUB_PACKAGES and path.endswith(".pyi"):
        source, target = site / path, site / f"{top}-stubs" / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
        moved.append(target)
        print(f"  moved {path} -> {top}-stubs/{inner}")
        path = f"{top}-stubs/{inner}"
        # The original folder is removed only when the stubs were all it held (a real TensorRT install
        # keeps its package).
        try:
            source.parent.rmdir()
        except OSError:
            pass
    new_lines.append(f"{path},{rest}" if rest else path)
record.write_text("\n".join(new_lines) + "\n", encoding="utf-8")
if not moved:
    sys.exit("install_tensorrt_stubs: the wheel holds no tensorrt/*.pyi files; its layout changed, look again")

# -- patches: (file, description, pattern, replacement, expected count) ----------------------------
PATCHES = [
    (
        "tensorrt_bindings-stubs/tensorrt.pyi",
        "parameter named `in` (a keyword) renamed `in_` in plugin methods",
        r"(?m)^(\s*def \w+\([^)]*?)\bin:",
        r"\1in_:",
        4,
    ),
    (
        "tensorrt_bindings-stubs/tensorrt.pyi",
        "add_scale_nd: `channel_axis` after defaulted parameters given a default",
        r"(def add_scale_nd\(self, [^)]*?power: Weights = None, channel_axis: int)\)",
        r"\1 = ...)",
        1,
    ),
    (
        "tensorrt-stubs/__init__.pyi",
        "`import tensorrt_libs` (runtime helper, no stubs) declared as an object",
        r"(?m)^import tensorrt_libs as tensorrt_libs$",
        "tensorrt_libs: object",
        1,
    ),
    (
        "tensorrt_bindings-stubs/__init__.pyi",
        "`import tensorrt_libs` (runtime helper, no stubs) declared as an object",
        r"(?m)^import tensorrt_libs as tensorrt_libs$",
        "tensorrt_libs: object",
        1,
    ),
]
for relative, description, pattern, replacement, expected in PATCHES:
    target = site / relative
    text = target.read_text(encoding="utf-8")
    patched, count = re.subn(pattern, replacement, text)
    if count != expected:
        sys.exit(f"install_tensorrt_stubs: {relative}: expected {expected} match(es) for '{description}', found {count}")
    target.write_text(patched, encoding="utf-8")
    print(f"  patched {relative}: {description} ({count}x)")

init_stub.write_text(marker + "\n" + init_stub.read_text(encoding="utf-8"), encoding="utf-8")
print(f"tensorrt-stubs {version}: ready for mypy (`import tensorrt` at run time still needs the real TensorRT)")
PYEOF
