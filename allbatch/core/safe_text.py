"""Untrusted text (file names, error messages) made safe to show on a terminal or in a log line."""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
"""C0/C1 controls, zero-width and direction marks, line/paragraph separators, bidi embeddings and
isolates, and surrogates (``os.fsdecode`` maps undecodable bytes to U+DC80..U+DCFF)."""


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 in a file name: show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, invisible-direction and surrogate character written as an escape
    (``\\x1b``, ``\\u202e``; an undecodable file-name byte as ``\\xNN``): safe for any terminal, one line."""
    return _UNSAFE.sub(_escape, text)
