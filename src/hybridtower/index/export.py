"""Export an index's vectors for other tools (FAISS, LanceDB, pandas, ...): Parquet, or .npy + JSONL.

One row per stored vector, in id order (a video's rows together, in time order):

    id            int64    the video's id in the index (stable across updates)
    root          string   the indexed PATH (absolute) the file was found under; null when it lies under none of
                           the latest run's PATHs
    path          string   the file relative to ``root`` (posix separators; for a file given itself as
                           PATH, its name)
    window_start  float64  seconds; null = the whole video
    window_end    float64  seconds; null = the whole video
    vector        float32[D]  the stored vector, bit for bit

A video no longer than the index's window (``hybridtower index --window``) has one row with null window
times; a longer one has one row per window (``window_start`` / ``window_end`` in seconds), and a PIG-M
index stores M rows per video or window, each with its segment's time range. Group by ``id`` and take
the maximum score to rank videos as ``hybridtower search`` does.

PIG / Two-Tower indexes store L2-normalised vectors: the export is the whole index (score = inner product
with the normalised text vector). X-Pool indexes store per-frame features for the query-
conditioned re-ranking; the export holds their FIRST-STAGE vector (the normalised mean of the frame
features, CLIP4Clip meanP), and its metadata says so.

Formats: ``parquet`` writes one file (the metadata in the schema's ``hybridtower`` key); ``npy`` writes
``STEM.npy`` (float32 [N, D]), ``STEM.jsonl`` (the other columns, line i = row i) and ``STEM.meta.json``.
Every file is written atomically. Paths that are not valid UTF-8 are written with the undecodable bytes as
``\\xNN`` escapes (text formats cannot hold them exactly).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.errors import ConfigError
from ..core.display import printable
from ..core.io import atomic_path, file_mode, fsync_dir
from .store import Entry, load_index

EXPORT_FORMAT = "hybridtower-export"
EXPORT_VERSION = 1
FORMATS = ("parquet", "npy")
_SUFFIX_FORMAT = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".jsonl": "npy"}


@dataclass
class ExportSummary:
    format: str
    files: list[str]
    count: int
    dim: int
    vector: str  # what the vectors are
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def format_for(out: str | Path, fmt: str | None = None) -> str:
    """The export format: ``fmt`` when given, else from OUT's suffix (.parquet / .pq, .npy / .jsonl)."""
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIX_FORMAT.get(Path(out).suffix.lower())
    if not found:
        raise ConfigError(f"cannot tell the export format from {str(out)!r}: name it .parquet, .npy or .jsonl, "
                          "or pass --format parquet|npy")
    return found


def output_files(out: str | Path, fmt: str) -> list[Path]:
    out = Path(out)
    if fmt == "parquet":
        return [out]
    stem = out.with_suffix("") if out.suffix.lower() in (".npy", ".jsonl") else out
    return [stem.with_name(stem.name + s) for s in (".npy", ".jsonl", ".meta.json")]


def _text(path: str) -> str:
    """``path`` as valid UTF-8 (undecodable bytes, surrogate-escaped by the OS layer, as \\xNN)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


def _root_of(entry: Entry, roots: list[str]) -> str | None:
    for root in roots:
        if entry.path == root or os.path.join(root, *entry.video_id.split("/")) == entry.path:
            return root
    return None


def _metadata(manifest: dict, count: int) -> dict:
    xpool = manifest.get("index_kind") == "frames+rerank"
    model = manifest.get("model") or {}
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "package_version": __version__,
        "count": count,
        "dim": int(manifest["dim"]),
        "index_kind": manifest.get("index_kind"),
        "vector": ("first-stage: the L2-normalised mean of the per-frame features (X-Pool's final score needs the "
                   "frames and the query; they are not exported)") if xpool
        else "the video vector (L2-normalised)",
        "score": "inner product with the model's L2-normalised text vector (cosine)",
        "model": {k: model.get(k) for k in ("framework", "name", "config_hash", "weights_sha256", "checkpoint",
                                            "embed_dim", "text_context_length")},
        "roots": list(manifest.get("roots") or []),
        "index_generation": manifest.get("generation"),
        "columns": ["id", "root", "path", "window_start", "window_end", "vector"],
    }


def _shown(path: Path) -> str:
    """How an error names an output file: as given when relative, by its base name when absolute."""
    return printable(path.name if path.is_absolute() else str(path))


def _inside(path: Path, folder: Path) -> bool:
    try:
        p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    except (OSError, ValueError):
        return False
    return p == f or f in p.parents


def export_index(index_dir: str | Path, out: str | Path, fmt: str | None = None, overwrite: bool = False) -> ExportSummary:
    """Write the committed vectors of ``index_dir`` to ``out`` (see the module doc). The files are written
    all or none: a failure (full disk, unwritable folder) leaves earlier files of the same name as they
    were and raises :class:`ConfigError`. OUT may not lie inside INDEX_DIR (an index run removes files it
    does not know, and the export would sit among the index's own files)."""
    fmt = format_for(out, fmt)
    files = output_files(out, fmt)
    if os.path.lexists(Path(index_dir) / "manifest.json") and any(_inside(f.parent, Path(index_dir)) for f in files):
        raise ConfigError("the export must be written outside INDEX_DIR (an index run removes files it does not "
                          "know); choose another OUT")
    existing = [_shown(f) for f in files if os.path.lexists(f)]
    if existing and not overwrite:
        raise ConfigError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    for f in files:
        if os.path.lexists(f) and not os.path.isfile(f):
            raise ConfigError(f"{_shown(f)} exists and is not a regular file; choose another OUT")
    data = load_index(index_dir, with_frames=False)
    roots = [str(r) for r in (data.manifest.get("roots") or [])]
    root = [None if (r := _root_of(e, roots)) is None else _text(r) for e in data.entries]
    path = [_text(e.video_id) for e in data.entries]
    owner = [int(i) for i in data.owner]
    rows = {
        "id": [data.entries[i].id for i in owner],
        "root": [root[i] for i in owner],
        "path": [path[i] for i in owner],
        "window_start": [None if t != t else float(t) for t in data.starts.tolist()],  # NaN: whole video
        "window_end": [None if t != t else float(t) for t in data.ends.tolist()],
    }
    vectors = np.ascontiguousarray(data.vectors, dtype=np.float32)
    meta = _metadata(data.manifest, len(owner))
    meta["videos"] = len(data.entries)
    try:
        if fmt == "parquet":
            _write_parquet(files[0], rows, vectors, meta)
        else:
            _write_npy(files, rows, vectors, meta)
    except OSError as exc:
        raise ConfigError(f"cannot write the export {_shown(files[0])}: {exc.strerror or type(exc).__name__}") from None
    notes = []
    if meta["index_kind"] == "frames+rerank":
        notes.append("X-Pool index: exported its first-stage vectors (the normalised mean of the frame features); "
                     "X-Pool's re-ranking needs the stored frames and the query, so the export ranks like meanP")
    if len(owner) != len(data.entries):
        notes.append(f"{len(owner)} rows for {len(data.entries)} videos (windows of long videos / PIG-M rows): group "
                     f"by id and take the best score per video")
    return ExportSummary(fmt, [str(f) for f in files], len(owner), int(meta["dim"]), meta["vector"], notes)


def _write_parquet(path: Path, rows: dict, vectors: np.ndarray, meta: dict) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'hybridtower[export]' "
                          "(or export .npy + .jsonl with --format npy)") from None
    dim = vectors.shape[1]
    table = pa.table(
        {
            "id": pa.array(rows["id"], type=pa.int64()),
            "root": pa.array(rows["root"], type=pa.string()),
            "path": pa.array(rows["path"], type=pa.string()),
            "window_start": pa.array(rows["window_start"], type=pa.float64()),
            "window_end": pa.array(rows["window_end"], type=pa.float64()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim),
        }
    ).replace_schema_metadata({"hybridtower": json.dumps(meta)})
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))


def _write_npy(files: list[Path], rows: dict, vectors: np.ndarray, meta: dict) -> None:
    """The three files, each written completely to its temporary file before any of them replaces an
    earlier export: a failure half-way never leaves a new .npy beside an old .jsonl (rows that disagree)."""
    npy, jsonl, meta_file = files
    keys = [k for k in meta["columns"] if k != "vector"]
    lines = (json.dumps({k: rows[k][i] for k in keys}, ensure_ascii=False, allow_nan=False) + "\n"
             for i in range(len(rows["id"])))
    meta_text = json.dumps(dict(meta, vectors_file=npy.name, rows_file=jsonl.name), indent=2, sort_keys=True) + "\n"
    with ExitStack() as stack:
        tmps = [stack.enter_context(_staged(f)) for f in files]
        with open(tmps[0], "wb") as fh:
            np.save(fh, vectors)
        tmps[1].write_text("".join(lines), encoding="utf-8")
        tmps[2].write_text(meta_text, encoding="utf-8")
        for tmp, final in zip(tmps, files):
            _publish(tmp, final)


@contextmanager
def _staged(path: Path):
    """A temporary file beside ``path`` (removed on exit unless :func:`_publish` moved it into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _publish(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fchmod(fh.fileno(), file_mode())
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)
