"""Check every file of an index in full and say exactly what is damaged: ``verify_index(INDEX_DIR)``.

``store.load_index`` (hence search and the service) stops at the first damaged file; ``verify_index``
checks them all and reports each problem with the index-relative file and, where it can, the ids and
paths of the affected rows:

- ``manifest.json``: schema and its own digest (a damaged manifest is fatal: ``IndexFormatError``);
- the entries table: present, size + SHA-256 as recorded, UTF-8, every line a valid entry;
- every segment: present, size + SHA-256 as recorded, readable safetensors, shapes (``ids`` [n],
  ``vectors`` [n, dim], X-Pool ``frames`` [n, T, dim], window ``starts`` / ``ends`` [n]), the rows the entries
  expect (all ``rows`` of each video), and the values of every live row (finite; vectors of unit norm, as
  PIG / Two-Tower / X-Pool's first stage store them; window times NaN or 0 <= start < end);
- the FAISS file: present, size + SHA-256 as recorded (old manifests without checksums: it is loaded
  and its row count and dimension are compared with the index).

``hybridtower index --verify INDEX_DIR`` prints the report (exit 0 intact, 2 damaged). An index run
verifies the index it updates the same way and repairs what the videos allow (see ``builder``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.display import printable_path
from . import store


@dataclass
class Problem:
    file: str  # index-relative name of the damaged file
    message: str  # what is wrong (one line, display-safe)
    ids: list[int] = field(default_factory=list)  # entry ids whose stored rows are affected
    repairable: bool = True  # an index run can repair it (re-encode rows / rebuild the FAISS file)
    kind: str = "segment"  # entries | segment | rows | ann | manifest

    def to_dict(self) -> dict:
        return {"file": self.file, "message": self.message, "ids": self.ids, "repairable": self.repairable,
                "kind": self.kind}


@dataclass
class VerifyReport:
    manifest: dict
    entries: list[store.Entry]
    problems: list[Problem]
    files_checked: int = 0
    has_checksums: bool = True  # False: an index written before checksums (checked by shape and values only)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if not p.repairable]

    def damaged_ids(self) -> set[int]:
        return {i for p in self.problems if p.kind in ("segment", "rows") for i in p.ids}

    @property
    def ann_damaged(self) -> bool:
        return any(p.kind == "ann" for p in self.problems)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "files_checked": self.files_checked, "has_checksums": self.has_checksums,
                "count": len(self.entries), "problems": [p.to_dict() for p in self.problems]}


def _strip_hint(exc: store.IndexFormatError) -> str:
    return str(exc).removesuffix("; " + store.DAMAGE_HINT)


def _with_paths(message: str, ids: list[int], by_id: dict[int, store.Entry], shown: int = 3) -> str:
    paths = [printable_path(by_id[i].video_id) for i in ids[:shown] if i in by_id]
    if not paths:
        return message
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{message} [videos: {', '.join(paths)}{more}]"


def verify_index(index_dir: str | Path, manifest: dict | None = None) -> VerifyReport:
    """Check every file of the index; IndexFormatError only when the manifest itself is unusable."""
    index_dir = Path(index_dir)
    manifest = store.validate_manifest(manifest) if manifest is not None else store.read_manifest(index_dir)
    sums = manifest.get("checksums")
    report = VerifyReport(manifest, [], [], has_checksums=sums is not None)
    try:
        entries = store.read_entries(index_dir, manifest)
    except store.IndexFormatError as exc:
        report.problems.append(Problem(exc.file or "?", _strip_hint(exc), [], repairable=False, kind="entries"))
        entries = []
    if manifest.get("entries_file"):
        report.files_checked += 1
    report.entries = entries
    by_id = {e.id: e for e in entries}
    if not report.fatal and len(entries) != manifest["count"]:
        report.problems.append(Problem(manifest.get("entries_file") or store.MANIFEST,
                                       f"the entries table holds {len(entries)} videos, the manifest counts "
                                       f"{manifest['count']}", [], repairable=True, kind="entries"))
    by_segment: dict[str, list[store.Entry]] = {}
    for e in entries:
        by_segment.setdefault(e.segment, []).append(e)
    for seg in manifest.get("segments") or []:
        report.files_checked += 1
        live = by_segment.get(seg, [])
        ids = sorted(e.id for e in live)
        try:
            data = store.read_segment(index_dir, seg, manifest)
        except store.IndexFormatError as exc:
            report.problems.append(Problem(seg, _with_paths(_strip_hint(exc), ids, by_id), ids, kind="segment"))
            continue
        if not live:
            continue
        # every row of every live entry (a video's windows / PIG-M rows: row .. row + rows - 1)
        rows = np.concatenate([np.arange(e.row, e.row + e.rows) for e in live])
        want = np.concatenate([np.full(e.rows, e.id, dtype=np.int64) for e in live])
        seg_ids = data["ids"]
        in_range = rows < len(seg_ids)
        wrong = ~in_range
        wrong[in_range] = seg_ids[rows[in_range]] != want[in_range]
        if wrong.any():
            bad = sorted({int(i) for i in want[wrong]})
            report.problems.append(Problem(seg, _with_paths(
                f"index file {seg}: {len(bad)} entry row(s) point at rows holding other videos (ids "
                f"{', '.join(map(str, bad[:8]))})", bad, by_id), bad, kind="rows"))
            rows, want = rows[~wrong], want[~wrong]
        frames = data["frames"][rows] if "frames" in data else None
        starts = data["starts"][rows] if "starts" in data else None
        ends = data["ends"][rows] if "ends" in data else None
        text, bad_ids = store.describe_bad_rows(store.bad_rows(data["vectors"][rows], frames, starts=starts, ends=ends),
                                                want)
        if text:
            report.problems.append(Problem(seg, _with_paths(f"index file {seg}: {text}", bad_ids, by_id), bad_ids,
                                           kind="rows"))
    if manifest.get("model_file"):
        report.files_checked += 1
        try:
            store.check_model_file(index_dir, manifest)
        except store.IndexFormatError as exc:
            report.problems.append(Problem(exc.file or store.MODEL_FILE, str(exc), [], repairable=False, kind="model"))
    ann = manifest.get("ann") or {}
    if ann.get("file"):
        report.files_checked += 1
        try:
            store.check_ann_file(index_dir, manifest)
            if not (sums or {}).get(ann["file"]):
                _check_ann_content(index_dir, manifest, sum(e.rows for e in entries))
        except store.IndexFormatError as exc:
            report.problems.append(Problem(ann["file"], _strip_hint(exc), [], kind="ann"))
    return report


def _check_ann_content(index_dir: Path, manifest: dict, n: int) -> None:
    """The FAISS file holds ``n`` rows (every row of every video) of the index's dimension."""
    import faiss

    name = manifest["ann"]["file"]
    try:
        index = faiss.read_index(str(index_dir / name))
    except RuntimeError:
        raise store.damaged(name, "the FAISS index is not readable") from None
    if index.ntotal != n or index.d != manifest["dim"]:
        raise store.damaged(name, f"the FAISS index holds {index.ntotal} vectors of dimension {index.d}, the index "
                                  f"{n} of dimension {manifest['dim']}")


def format_report(report: VerifyReport, name: str) -> list[str]:
    """Human-readable lines (display-safe) for ``hybridtower index --verify``."""
    lines = []
    if report.ok:
        lines.append(f"{printable_path(name)}: intact ({len(report.entries)} videos, {report.files_checked} file(s) "
                     f"checked{'' if report.has_checksums else ' by shape and values only: this index predates checksums'})")
        return lines
    lines.append(f"{printable_path(name)}: DAMAGED ({len(report.problems)} problem(s) in {report.files_checked} "
                 f"file(s) checked)")
    for p in report.problems:
        fix = "an index run repairs it" if p.repairable else "cannot be repaired from the videos: rebuild with --overwrite"
        lines.append(f"  {p.message} ({fix})")
    return lines
