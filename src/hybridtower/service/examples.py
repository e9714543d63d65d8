"""Example queries for the web page, drawn from the index's own captions (never made up).

The index stores vectors, not text. When the indexed collection comes with captions in a layout this
package reads - ``captions.jsonl`` (``{"video_id", "caption"}`` per line, what ``hybridtower synth``
writes) or ``MSRVTT_data.json`` (``{"sentences": [{"video_id", "caption"}]}``, MSR-VTT's own file) in an
indexed folder or the folder above it - :func:`example_queries` picks a few captions of videos that are
in the index (one per video, spread over the collection). Without such a file there are no examples,
and the page suggests nothing. Files are opened as regular files only and read up to ``MAX_BYTES``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path, PurePosixPath

from ..core.io import NotRegularFileError, open_regular

log = logging.getLogger("hybridtower.service")

CAPTION_FILES = ("captions.jsonl", "MSRVTT_data.json")
MAX_BYTES = 64 << 20
MAX_CAPTION_CHARS = 120


def _read(path: Path) -> bytes | None:
    try:
        fd, st = open_regular(path)
    except (OSError, NotRegularFileError):
        return None
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > MAX_BYTES:
            return None
        return fh.read(MAX_BYTES + 1)


def _pairs(path: Path, data: bytes):
    """(video_id, caption) pairs of one caption file."""
    if path.name.endswith(".jsonl"):
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec.get("video_id"), rec.get("caption")
    else:
        try:
            doc = json.loads(data.decode("utf-8", "replace"))
        except ValueError:
            return
        for rec in (doc.get("sentences") or []) if isinstance(doc, dict) else []:
            if isinstance(rec, dict):
                yield rec.get("video_id"), rec.get("caption")


def caption_files(roots) -> list[Path]:
    out: list[Path] = []
    for root in roots or []:
        if not isinstance(root, str) or not root:
            continue
        r = Path(root)
        for folder in (r, r.parent):
            for name in CAPTION_FILES:
                p = folder / name
                if p not in out and p.is_file():
                    out.append(p)
    return out


def indexed_ids(searcher) -> set[str] | None:
    """Video ids the index holds, as file stems and relative paths (None when the searcher cannot say)."""
    entries = getattr(searcher, "entries", None)
    if entries is None:
        rows = getattr(searcher, "rows", None)  # test fakes
        entries = list(rows.values()) if isinstance(rows, dict) else None
    if entries is None:
        return None
    ids: set[str] = set()
    for e in entries:
        vid = getattr(e, "video_id", None)
        if isinstance(vid, str) and vid:
            ids.add(vid)
            ids.add(PurePosixPath(vid).stem)
            ids.add(PurePosixPath(vid).name)
    return ids


def example_queries(searcher, n: int = 6) -> list[str]:
    """Up to ``n`` captions of indexed videos (one per video, spread over the collection); [] when none."""
    manifest = getattr(searcher, "manifest", None)
    roots = manifest.get("roots") if isinstance(manifest, dict) else None
    known = indexed_ids(searcher)
    by_video: dict[str, str] = {}
    for path in caption_files(roots):
        data = _read(path)
        if data is None:
            continue
        for vid, cap in _pairs(path, data):
            if not isinstance(vid, str) or not isinstance(cap, str):
                continue
            cap = " ".join(cap.split())
            if not cap or len(cap) > MAX_CAPTION_CHARS or vid in by_video:
                continue
            if known is not None and vid not in known and PurePosixPath(vid).stem not in known:
                continue
            by_video[vid] = cap
        if by_video:
            break
    if not by_video or n <= 0:
        return []
    videos = sorted(by_video)
    step = max(1, len(videos) // n)
    picked = []
    for v in videos[::step]:
        if by_video[v] not in picked:
            picked.append(by_video[v])
        if len(picked) >= n:
            break
    return picked
