"""The commit session of one writer: entries in memory, encoded rows pending, commits of new generations.

``Session.commit`` writes the pending rows as a new segment, (at the end of a run) compacts segments and
builds the FAISS file, writes the entries table and the error log, and commits the manifest last (see
``store``). ``request_ann`` and ``apply_metadata`` set what a run changes besides new vectors.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict

import numpy as np

from .. import __version__
from . import store
from .faults import pause_point
from .options import IndexOptions, IndexRunSummary


class Session:
    """In-memory state of one writer: the entries, the pending (encoded, uncommitted) rows, the template."""

    def __init__(self, writer: store.IndexWriter, model, identity: dict, base_manifest: dict | None, template: dict,
                 base_entries: list[store.Entry] | None = None):
        self.writer = writer
        self.model = model
        self.template = template
        self.entries: dict[int, store.Entry] = {}
        if base_manifest:
            if base_entries is None:
                base_entries = store.read_entries(writer.dir, base_manifest)
            self.entries = {e.id: e for e in base_entries}
            self.segment_rows = dict(base_manifest.get("segment_rows", {}))
            self.ann = dict(base_manifest.get("ann") or {"kind": "flat", "params": {}, "file": None})
        else:
            self.segment_rows = {}
            self.ann = {"kind": "flat", "params": {}, "file": None}
        self.by_path = {e.path: e.id for e in self.entries.values()}
        self.next_id = int((base_manifest or {}).get("next_id", 0))
        self.next_id = max([self.next_id] + [i + 1 for i in self.entries])
        # (entry, vectors [r, D], frames [r, T, D] or None, starts [r], ends [r]) per encoded video
        self.pending: list[tuple[store.Entry, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = []
        self.errors: list[dict] = []
        self.dirty = False  # metadata changes (touches, prunes, repairs) not committed yet
        self.last_commit = time.monotonic()

    def id_for(self, path: str) -> int:
        if path in self.by_path:
            return self.by_path[path]
        i = self.next_id
        self.next_id += 1
        self.by_path[path] = i
        return i

    def add(self, f_path: str, video_id: str, fingerprint, vector: np.ndarray, frames: np.ndarray | None,
            starts=None, ends=None) -> None:
        """Queue one video's rows: ``vector`` [D] (one whole-file row) or [r, D] (windows / PIG-M rows, with
        ``frames`` [r, T, D] for X-Pool and ``starts`` / ``ends`` [r] seconds, NaN = whole file)."""
        size, mtime_ns, sha = fingerprint
        vecs = np.asarray(vector, dtype=np.float32)
        vecs = vecs[None] if vecs.ndim == 1 else vecs
        if frames is not None:
            frames = np.asarray(frames, dtype=np.float32)
            frames = frames[None] if frames.ndim == 2 else frames
        r = len(vecs)
        starts = np.full(r, np.nan) if starts is None else np.asarray(starts, dtype=np.float64).reshape(r)
        ends = np.full(r, np.nan) if ends is None else np.asarray(ends, dtype=np.float64).reshape(r)
        e = store.Entry(self.id_for(f_path), f_path, video_id, size, mtime_ns, sha, "", -1, r)
        self.pending.append((e, vecs, frames, starts, ends))

    def remove(self, entry_id: int) -> None:
        e = self.entries.pop(entry_id, None)
        if e is not None:
            self.by_path.pop(e.path, None)
            self.dirty = True

    def forget_rows(self, entry_ids) -> None:
        """Drop the (damaged) stored rows of ``entry_ids`` but keep their ids: re-encoding their files
        gives them back under the same ids."""
        for i in entry_ids:
            if self.entries.pop(i, None) is not None:
                self.dirty = True
        self.ann = dict(self.ann, file=None)

    def manifest(self, gen: int, entries_file: str, complete: bool, extra: dict | None = None) -> dict:
        live = Counter(e.segment for e in self.entries.values())
        segments = sorted(s for s in self.segment_rows if live.get(s))
        m = dict(self.template)
        m.update(
            generation=gen,
            entries_file=entries_file,
            segments=segments,
            segment_rows={s: self.segment_rows[s] for s in segments},
            count=len(self.entries),
            next_id=self.next_id,
            ann=self.ann,
            complete=complete,
            package_version=__version__,
        )
        m.update(extra or {})
        return m

    def commit(self, complete: bool = False, extra: dict | None = None, build_ann: bool = False) -> int:
        w = self.writer
        gen = w.next_generation()
        if self.pending:
            ids = np.concatenate([np.full(len(v), e.id, dtype=np.int64) for e, v, *_ in self.pending])
            vecs = np.concatenate([v for _, v, *_ in self.pending])
            frames = np.concatenate([f for _, _, f, *_ in self.pending]) if self.pending[0][2] is not None else None
            starts = np.concatenate([p[3] for p in self.pending])
            ends = np.concatenate([p[4] for p in self.pending])
            seg = w.write_segment(gen, ids, vecs, frames, starts=starts, ends=ends)
            pause_point("segment")
            row = 0
            for e, v, *_ in self.pending:
                e.segment, e.row, e.rows = seg, row, len(v)
                row += len(v)
                self.entries[e.id] = e
            self.segment_rows[seg] = len(ids)
            self.pending = []
            self.ann = dict(self.ann, file=None)  # the stored ANN index no longer covers every vector
        elif self.dirty:
            self.ann = dict(self.ann, file=None)
        if complete:
            self._maybe_compact(gen)
            if build_ann:
                self._build_ann(gen)
        entries_file = w.write_entries(gen, list(self.entries.values()))
        pause_point("entries")
        w.write_errors(self.errors)
        pause_point("errors")
        w.commit(self.manifest(gen, entries_file, complete, extra))
        pause_point("committed")
        w.collect_garbage()
        self.dirty = False
        self.last_commit = time.monotonic()
        return gen

    def _maybe_compact(self, gen: int) -> None:
        """Rewrite the live rows into one segment when segments pile up or many rows are dead."""
        live = Counter(e.segment for e in self.entries.values())
        segs = [s for s in self.segment_rows if live.get(s)]
        total = sum(self.segment_rows[s] for s in segs)
        live_rows = sum(e.rows for e in self.entries.values())
        if len(segs) <= 1 and total == live_rows:
            return
        if len(segs) <= 8 and total - live_rows <= 0.2 * max(total, 1):
            return
        entries = sorted(self.entries.values(), key=lambda e: e.id)
        rows = self._gather(entries)
        ids = np.asarray([e.id for e in entries], dtype=np.int64)[rows.owner]
        name = self.writer.write_segment(gen, ids, rows.vectors, rows.frames, tag="c", starts=rows.starts, ends=rows.ends)
        pause_point("compacted")
        row = 0
        for e in entries:
            e.segment, e.row = name, row
            row += e.rows
        self.segment_rows = {name: len(ids)}

    def _gather(self, entries: list[store.Entry], with_frames: bool = True) -> store.Rows:
        shapes = {**self.template, "segment_rows": self.segment_rows}
        return store.gather(self.writer.dir, entries, int(self.template["dim"]), with_frames, shapes,
                            checksums=self.writer.checksums())

    def _build_ann(self, gen: int) -> None:
        from .ann import build_ann, resolve_params, save_ann

        kind = self.ann.get("kind", "flat")
        requested = dict(self.ann.get("requested") or {})
        n_rows = sum(e.rows for e in self.entries.values())
        params = resolve_params(kind, requested, n_rows)
        # ``count`` is the number of rows the FAISS index holds (= videos when each has one row)
        self.ann = {"kind": kind, "requested": requested, "params": params, "file": None, "count": n_rows}
        if kind == "flat" or not self.entries:
            return  # exact search needs no stored structure: the Searcher uses the vectors directly
        entries = sorted(self.entries.values(), key=lambda e: e.id)
        vecs = self._gather(entries, with_frames=False).vectors
        index = build_ann(vecs, kind, params)
        name, path = self.writer.ann_path(gen, kind)
        save_ann(index, path)
        self.writer.record_file(name)
        pause_point("ann")
        self.ann["file"] = name


def request_ann(session: Session, options: IndexOptions) -> bool:
    """Set the ANN kind/params this run asks for; True when they differ from the committed ones."""
    cur = session.ann or {}
    kind = options.ann or cur.get("kind", "flat")
    requested = dict(cur.get("requested") or {}) if kind == cur.get("kind") else {}
    requested.update({k: v for k, v in (options.ann_params or {}).items() if v is not None})
    changed = kind != cur.get("kind", "flat") or requested != (cur.get("requested") or {})
    session.ann = {**cur, "kind": kind, "requested": requested}
    if changed:
        session.ann["file"] = None
    return changed


def apply_metadata(session: Session, touched, gone, options: IndexOptions, summary: IndexRunSummary) -> None:
    for e, f in touched:
        if e.id in session.entries:
            session.entries[e.id] = store.Entry(**{**asdict(session.entries[e.id]), "size": f.size, "mtime_ns": f.mtime_ns})
            session.dirty = True
    if options.prune:
        for e in gone:
            session.remove(e.id)
        summary.pruned = len(gone)
        summary.vanished = 0
