"""The on-disk index: manifest, entries table, vector segments, error log, FAISS files.

Layout of ``INDEX_DIR`` (see ``docs/index.md``)::

    manifest.json                 the commit record; replaced atomically LAST in every commit
    entries-GGGGGG.jsonl          one JSON line per indexed video: id, path, video_id, size, mtime_ns,
                                  sha256, segment, row (immutable once written)
    segments/seg-GGGGGG.safetensors   ids [n] int64, vectors [n, D] float32 (L2-normalised for
                                  PIG / Two-Tower; mean-pooled frame features for X-Pool) and, for
                                  X-Pool, frames [n, T, D] float32 (immutable once written)
    faiss-GGGGGG-KIND.index       the FAISS index over the vectors, rows in id order (optional)
    errors.jsonl                  the files skipped by the latest run (path, reason)
    shards/rank-R-of-W/           per-rank sub-indexes of a torchrun run (same layout), merged later
    .lock                         flock'd by the one process allowed to write

Commit protocol: every file a manifest names is written under a fresh generation-numbered name via a
temporary file + fsync + rename (``hybridtower.core.io``), and only then is ``manifest.json`` replaced
atomically. A process killed at any point leaves either the old manifest (whose files are all still
there: nothing a manifest names is ever overwritten or deleted before a newer manifest is committed) or
the new one. Files no committed manifest names (left by a killed run) are deleted when the next writer
opens the index.
"""

from __future__ import annotations

import fcntl
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.errors import HybridTowerError
from ..core.io import atomic_path, atomic_write_json, atomic_write_text

FORMAT = "hybridtower-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
LOCK = ".lock"
SEGMENTS = "segments"
SHARDS = "shards"


class IndexError_(HybridTowerError):
    """Base of index errors (named with a trailing underscore so it does not shadow the builtin)."""


class IndexFormatError(IndexError_):
    """The folder is not a (readable) index, or a file it names is missing or corrupt."""


class IndexMismatchError(IndexError_):
    """The index was built with another model (config or weights) than the one offered."""


class IndexLockedError(IndexError_):
    """Another process is writing this index."""


@dataclass
class Entry:
    """One indexed video (a row of the entries table)."""

    id: int
    path: str  # absolute path of the file
    video_id: str  # path relative to the PATH argument it was found under (posix separators)
    size: int
    mtime_ns: int
    sha256: str
    segment: str  # segment file (relative to INDEX_DIR) holding its vector
    row: int  # row inside that segment

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def _gen_name(prefix: str, gen: int, suffix: str) -> str:
    return f"{prefix}-{gen:06d}{suffix}"


def read_manifest(index_dir: str | Path) -> dict:
    """The committed manifest of ``index_dir`` (IndexFormatError when there is none or it is unreadable)."""
    index_dir = Path(index_dir)
    path = index_dir / MANIFEST
    if not index_dir.exists():
        raise IndexFormatError(f"index folder {index_dir} does not exist")
    if not path.is_file():
        raise IndexFormatError(f"{index_dir} is not an index: it has no {MANIFEST} (build one with `hybridtower index`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a hybridtower index manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has index format version {manifest['format_version']}; this hybridtower "
            f"({__version__}) reads up to {FORMAT_VERSION}: upgrade the package"
        )
    return manifest


def read_entries(index_dir: str | Path, manifest: dict) -> list[Entry]:
    name = manifest.get("entries_file")
    if not name:
        return []
    path = Path(index_dir) / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Entry(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise IndexFormatError(f"entries table {path} named by the manifest is missing or corrupt: {exc}") from exc


def read_errors(index_dir: str | Path) -> list[dict]:
    path = Path(index_dir) / ERRORS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def load_segment(index_dir: str | Path, name: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(index_dir) / name
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise IndexFormatError(f"segment {path} named by the manifest is missing or corrupt: {exc}") from exc


@dataclass
class IndexData:
    """Everything an index holds, rows in ascending id order."""

    manifest: dict
    entries: list[Entry]  # sorted by id
    vectors: np.ndarray  # [N, D] float32
    frames: np.ndarray | None  # [N, T, D] float32 (X-Pool) or None


def gather_rows(index_dir: str | Path, entries: list[Entry], dim: int,
                with_frames: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The vectors [N, D] (and X-Pool frame features [N, T, D], if stored and wanted) of ``entries``, in their
    order, read from their segments; a segment that does not hold the expected ids is an IndexFormatError."""
    index_dir = Path(index_dir)
    by_segment: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_segment.setdefault(e.segment, []).append(i)
    vectors = np.zeros((len(entries), dim), dtype=np.float32)
    frames = None
    for seg, positions in by_segment.items():
        data = load_segment(index_dir, seg)
        rows = np.asarray([entries[i].row for i in positions])
        ids = data["ids"]
        if rows.max(initial=-1) >= len(ids) or not np.array_equal(ids[rows], [entries[i].id for i in positions]):
            raise IndexFormatError(f"segment {index_dir / seg} does not hold the rows the entries table expects")
        vectors[positions] = data["vectors"][rows]
        if with_frames and "frames" in data:
            if frames is None:
                frames = np.zeros((len(entries),) + data["frames"].shape[1:], dtype=np.float32)
            frames[positions] = data["frames"][rows]
    return vectors, frames


def load_index(index_dir: str | Path, manifest: dict | None = None, with_frames: bool = True) -> IndexData:
    """Read the committed state: entries and their vectors (and X-Pool frame features), in id order."""
    index_dir = Path(index_dir)
    manifest = manifest or read_manifest(index_dir)
    entries = sorted(read_entries(index_dir, manifest), key=lambda e: e.id)
    dim = int(manifest.get("dim") or 0)
    vectors, frames = gather_rows(index_dir, entries, dim, with_frames)
    if with_frames and manifest.get("index_kind") == "frames+rerank" and frames is None:
        t = int(manifest.get("frame_count") or 0)
        frames = np.zeros((0, t, dim), dtype=np.float32)
    return IndexData(manifest, entries, vectors, frames)


class IndexWriter:
    """Exclusive writer of one index folder: stages segments and commits generations atomically."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.dir / LOCK, "a+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise IndexLockedError(f"{self.dir} is being written by another process (lock {self.dir / LOCK})") from None
        self.manifest: dict | None = read_manifest(self.dir) if (self.dir / MANIFEST).is_file() else None
        self.generation = int(self.manifest["generation"]) if self.manifest else 0
        self.collect_garbage()

    # ----- housekeeping -----
    def referenced(self) -> set[str]:
        m = self.manifest or {}
        names = {MANIFEST, ERRORS, LOCK}
        if m.get("entries_file"):
            names.add(m["entries_file"])
        names.update(m.get("segments", []))
        if (m.get("ann") or {}).get("file"):
            names.add(m["ann"]["file"])
        return names

    def collect_garbage(self) -> list[str]:
        """Delete files no committed manifest names (left by an interrupted run)."""
        keep = self.referenced()
        removed = []
        candidates = [p for p in self.dir.iterdir() if p.is_file()]
        if (self.dir / SEGMENTS).is_dir():
            candidates += [p for p in (self.dir / SEGMENTS).iterdir() if p.is_file()]
        for p in candidates:
            rel = p.relative_to(self.dir).as_posix()
            if rel in keep:
                continue
            if rel.startswith(("entries-", "faiss-", f"{SEGMENTS}/", f".{MANIFEST}.", f".{ERRORS}.")) or p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed.append(rel)
        return removed

    def close(self) -> None:
        if self._lock_fh and not self._lock_fh.closed:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----- staging -----
    def next_generation(self) -> int:
        return self.generation + 1

    def write_segment(self, gen: int, ids: np.ndarray, vectors: np.ndarray, frames: np.ndarray | None, tag: str = "") -> str:
        from safetensors.numpy import save_file

        name = f"{SEGMENTS}/" + _gen_name("seg", gen, f"{tag}.safetensors")
        tensors = {"ids": np.ascontiguousarray(ids, dtype=np.int64), "vectors": np.ascontiguousarray(vectors, dtype=np.float32)}
        if frames is not None:
            tensors["frames"] = np.ascontiguousarray(frames, dtype=np.float32)
        with atomic_path(self.dir / name) as tmp:
            save_file(tensors, str(tmp))
        return name

    def write_entries(self, gen: int, entries: list[Entry]) -> str:
        name = _gen_name("entries", gen, ".jsonl")
        text = "".join(e.to_json() + "\n" for e in sorted(entries, key=lambda e: e.id))
        atomic_write_text(self.dir / name, text)
        return name

    def write_errors(self, errors: list[dict]) -> None:
        atomic_write_text(self.dir / ERRORS, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))

    def ann_path(self, gen: int, kind: str) -> tuple[str, Path]:
        name = _gen_name("faiss", gen, f"-{kind}.index")
        return name, self.dir / name

    def commit(self, manifest: dict) -> None:
        """Make ``manifest`` (whose files are all written) the committed state."""
        manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, updated=time.time())
        missing = [n for n in [manifest.get("entries_file"), *manifest.get("segments", [])] if n and not (self.dir / n).is_file()]
        if missing:
            raise IndexFormatError(f"refusing to commit a manifest naming missing files {missing}")
        atomic_write_json(self.dir / MANIFEST, manifest)
        self.manifest = manifest
        self.generation = int(manifest["generation"])
