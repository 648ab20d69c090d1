"""File names as valid UTF-8 text, losslessly, whatever bytes the file system holds.

POSIX file names are bytes; Python hands undecodable bytes over as lone surrogates
(``os.fsdecode``, "surrogateescape"), which no UTF-8 writer (HDF5 via h5py, the CSV, the terminal)
accepts. allbatch therefore stores and shows every path in this form:

* a name that is valid UTF-8 and holds no backslash is kept as it is (the usual case);
* otherwise each backslash becomes ``\\\\`` and each byte that is not part of valid UTF-8 becomes
  ``\\xHH`` (two lowercase hex digits), the rest of the name staying readable.

The text holds a backslash exactly when the name was escaped, so ``text_to_fs`` recovers the original
bytes unambiguously (the same idea as git's quoting of unusual path names). Names with a literal
backslash (rare on POSIX) are shown with it doubled.
"""

from __future__ import annotations

import os
import re

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def fs_to_text(name: str | bytes) -> str:
    """A file-system name (str from ``os`` APIs, possibly with surrogate escapes, or bytes) as text.

    Returns valid UTF-8 text; see the module docstring for the escaping rule.
    """
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if "\\" not in text:
            return text
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def text_to_fs(text: str) -> bytes:
    """The original name's bytes from ``fs_to_text``'s output (the exact inverse).

    Raises:
        ValueError: ``text`` holds a backslash that is not one of the two escapes.
    """
    if "\\" not in text:
        return text.encode("utf-8")
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(text):
        if match.start() != position and "\\" in text[position : match.start()]:
            break
        out += text[position : match.start()].encode("utf-8")
        token = match.group(1)
        out += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        position = match.end()
    tail = text[position:]
    if "\\" in tail:
        raise ValueError(f"not an allbatch path text (stray backslash): {text!r}")
    return bytes(out + tail.encode("utf-8"))


def safe_text(value: str) -> str:
    """Any Python string as valid UTF-8 text: lone surrogates become ``\\udcXX`` (for messages and
    attributes, where exact round-tripping is not needed)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
