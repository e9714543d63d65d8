"""Make any string safe to show a person: a terminal line, a log line, an HTML-escaped page string.

File names on real disks may hold control characters (an ESC sequence would drive the user's terminal)
and bytes that are not valid UTF-8 (Python keeps them as lone surrogates, which cannot even be encoded to
UTF-8). ``printable`` turns every such code point into a visible escape and leaves everything else as
it is, so the text stays readable and can always be printed or written as UTF-8.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["printable", "printable_path"]


def _escape(ch: str) -> str:
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8, kept by the surrogateescape handler
        return f"\\x{cp - 0xDC00:02x}"
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}"


def printable(text) -> str:
    """``text`` with control characters, lone surrogates and line/paragraph separators escaped.

    Tabs, newlines and carriage returns are escaped too: one value shows as one line.
    """
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs", "Zl", "Zp"):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def printable_path(path) -> str:
    """``printable`` for a path (str, bytes or PathLike)."""
    return printable(os.fsdecode(os.fspath(path)))
