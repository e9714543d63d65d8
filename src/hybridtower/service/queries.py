"""Query cleaning for the HTTP service: every odd query gets a defined answer, never an exception.

Rules (also in docs/service.md):

- tabs, newlines and other whitespace runs collapse to one space; leading/trailing space is dropped;
- other control characters (Unicode category ``Cc``: NUL, DEL, C0/C1 controls), lone surrogates
  (``Cs``), private-use and unassigned code points (``Co``, ``Cn``) and invisible format characters
  (``Cf``, e.g. zero-width space; the zero-width joiner of emoji sequences is kept) are removed, and a
  note says how many (the same rules as ``hybridtower.index.searcher.clean_query``);
- more than ``max_chars`` characters are cut to ``max_chars`` (the model's tokenizer then truncates to its
  text context, which the searcher reports separately);
- non-ASCII text is kept as is (the CLIP BPE tokenizer is byte-level);
- a query that is empty after these steps, or that holds no visible character (only joiners, variation
  selectors, combining marks, blank fillers: a lone zero-width joiner, U+FE0F, U+3164, ...), is rejected
  (:class:`EmptyQuery`, HTTP 400).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from ..core.errors import HybridTowerError

DEFAULT_MAX_QUERY_CHARS = 1000
_WS = re.compile(r"\s+")
# categories that draw nothing on their own: format (ZWJ kept for emoji), separators, combining marks
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})
# letters/symbols that render blank (Hangul fillers, Braille blank)
_BLANK_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible(text: str) -> bool:
    """True when ``text`` holds at least one character that draws something."""
    return any(ch not in _BLANK_CHARS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


class EmptyQuery(HybridTowerError, ValueError):
    """The query is empty or whitespace/control characters only."""


@dataclass
class CleanQuery:
    text: str  # what is sent to the model
    notes: list[str] = field(default_factory=list)  # what was changed, for the user
    cut: bool = False  # True when the character limit cut the query


def clean_query(raw: str | None, max_chars: int = DEFAULT_MAX_QUERY_CHARS) -> CleanQuery:
    """Normalise ``raw`` as described in the module docstring; raise :class:`EmptyQuery` if nothing is left."""
    raw = raw or ""
    if raw.isascii() and raw.isprintable():
        # the usual query: printable ASCII has no control, invisible or blank character, and its only
        # whitespace is the space: the rules reduce to collapsing spaces (no per-character lookups)
        text = _WS.sub(" ", raw).strip()
        if text:
            cut = len(text) > max_chars
            if cut:
                text = text[:max_chars].rstrip()
            return CleanQuery(text=text, notes=[f"query cut to its first {max_chars} characters"] if cut else [], cut=cut)
    return _clean_any(raw, max_chars)


def _clean_any(raw: str, max_chars: int) -> CleanQuery:
    """The rules, character by character (any text)."""
    notes: list[str] = []
    kept: list[str] = []
    removed = 0
    for ch in raw:
        if ch.isspace():
            kept.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs", "Co", "Cn") or (cat == "Cf" and ch != "\u200d"):
            removed += 1
            continue
        kept.append(ch)
    text = _WS.sub(" ", "".join(kept)).strip()
    if removed:
        notes.append(f"removed {removed} control/invisible character{'s' if removed != 1 else ''}")
    if not text or not has_visible(text):
        if raw.strip() == "" and not removed:
            raise EmptyQuery("the query is empty: type a few words describing the video")
        raise EmptyQuery("the query has no visible characters (only control, invisible or blank characters "
                         "and whitespace): type a few words")
    cut = False
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
        cut = True
        notes.append(f"query cut to its first {max_chars} characters")
    return CleanQuery(text=text, notes=notes, cut=cut)
