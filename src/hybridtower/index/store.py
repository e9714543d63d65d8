"""The on-disk index: manifest, entries table, vector segments, error log, FAISS files.

Layout of ``INDEX_DIR`` (see ``docs/index.md``)::

    manifest.json                 the commit record; replaced atomically LAST in every commit
    entries-GGGGGG.jsonl          one JSON line per indexed video: id, path, video_id, size, mtime_ns,
                                  sha256, segment, row, and ``rows`` when the video has more than one
                                  row (immutable once written)
    segments/seg-GGGGGG.safetensors   ids [n] int64, vectors [n, D] float32 (L2-normalised for
                                  PIG / Two-Tower; normalised mean of the frame features for X-Pool),
                                  for X-Pool frames [n, T, D] float32, and, when some row covers only part
                                  of its file, starts / ends [n] float64 (seconds; NaN = the whole file)
                                  (immutable once written)

Rows: a video has one row (today's layout, and every video no longer than the index's window) or several
contiguous rows of one segment, ``row`` .. ``row + rows - 1``, all holding its id: one per moment window of a
long video (``--window/--stride``) and, for PIG-M models, one per pseudo-query (M per window or file). The
searcher scores rows and groups them per video (``searcher``). Indexes written before windows existed have
no ``rows`` keys and no starts / ends arrays: they read as one whole-file row per video.
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

Integrity: the manifest records the size and SHA-256 of every file it names (``checksums``) and a digest
of itself (``digest``); ``validate_manifest`` checks its schema in one place. Every read of a named file
(``read_entries``, ``read_segment``, ``load_index``) checks its size and SHA-256 against the manifest and
the rows it holds (shape, finite values, unit norm of the vectors), so a damaged index is an
``IndexFormatError`` naming the index-relative file (never an absolute path), not wrong scores.
Manifests written before checksums existed have none: their files are checked by shape and values only.

Paths that are not valid UTF-8 (a file name with arbitrary bytes, kept by Python as lone surrogates)
are stored losslessly: the entry's ``path`` / ``video_id`` hold a display-safe form
(``core.display.printable``) and ``path_b64`` / ``video_id_b64`` the exact bytes (base64 of
``os.fsencode``); reading restores the exact str. Entries of valid UTF-8 paths have no ``*_b64`` keys
(the format of older entries files, which are still read).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.display import printable, printable_path
from ..core.errors import HybridTowerError
from ..core.io import (NotRegularFileError, atomic_write_bytes, atomic_write_json, atomic_write_text, file_type_name,
                       open_regular)

FORMAT = "hybridtower-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
LOCK = ".lock"
SEGMENTS = "segments"
SHARDS = "shards"
MODEL_FILE = "model.safetensors"  # the checkpoint of an index built with --model SPEC (kept inside the index)

#: |norm - 1| above this makes a stored vector "not unit-norm" (the models L2-normalise; fp16 stays well inside)
NORM_TOLERANCE = 1e-2

_ENTRIES_RE = re.compile(r"entries-\d{6}\.jsonl")
_SEGMENT_RE = re.compile(r"segments/seg-\d{6}[a-z]?\.safetensors")
_ANN_RE = re.compile(r"faiss-\d{6}-[a-z0-9_]{1,32}\.index")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
DAMAGE_HINT = ("run `hybridtower index --verify INDEX_DIR` for a full report; an index run over the same videos "
         "repairs damaged vectors and FAISS files, `--overwrite` rebuilds the index")


class IndexError_(HybridTowerError):
    """Base of index errors (named with a trailing underscore so it does not shadow the builtin)."""


class IndexFormatError(IndexError_):
    """The folder is not a (readable) index, or a file it names is missing or corrupt.

    ``file`` is the index-relative name of the damaged file (None when the folder itself is the problem),
    ``ids`` the entry ids of damaged rows when they are known."""

    def __init__(self, message: str, file: str | None = None, ids: list[int] | None = None):
        super().__init__(message)
        self.file = file
        self.ids = list(ids or [])


class IndexMismatchError(IndexError_):
    """The index was built with another model (config or weights) than the one offered."""


class IndexLockedError(IndexError_):
    """Another process is writing this index."""


def damaged(file: str, problem: str, ids: list[int] | None = None, hint: bool = True) -> IndexFormatError:
    """The one form of every damage message: ``index file FILE: PROBLEM; HINT`` (FILE index-relative)."""
    text = f"index file {printable(file)}: {problem}"
    return IndexFormatError(f"{text}; {DAMAGE_HINT}" if hint else text, file=file, ids=ids)


def _utf8_text(file: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(file, f"is not valid UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


# ----------------------------------------------------------------------------------------------------
def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_ENTRY_TYPES = {"id": int, "path": str, "video_id": str, "size": int, "mtime_ns": int, "sha256": str,
                "segment": str, "row": int, "rows": int}


@dataclass
class Entry:
    """One indexed video (a row of the entries table)."""

    id: int
    path: str  # absolute path of the file (exact: may hold surrogate-escaped bytes that are not UTF-8)
    video_id: str  # path relative to the PATH argument it was found under (posix separators)
    size: int
    mtime_ns: int
    sha256: str
    segment: str  # segment file (relative to INDEX_DIR) holding its vector
    row: int  # row inside that segment (its first row)
    rows: int = 1  # contiguous rows from ``row`` (windows of a long video, PIG-M pseudo-queries)

    def to_record(self) -> dict:
        """The JSON object of this entry: always encodable as UTF-8 (see the module doc). ``rows`` is
        written only when it is not 1 (an index of one-row videos is byte for byte the older format)."""
        rec = asdict(self)
        if rec["rows"] == 1:
            del rec["rows"]
        for key in ("path", "video_id"):
            if not _is_utf8(rec[key]):
                rec[f"{key}_b64"] = base64.b64encode(os.fsencode(rec[key])).decode("ascii")
                rec[key] = printable(rec[key])
        return rec

    def to_json(self) -> str:
        return json.dumps(self.to_record(), ensure_ascii=False)

    @classmethod
    def from_record(cls, rec) -> "Entry":
        """Inverse of ``to_record``; ValueError naming the problem when ``rec`` is not an entry."""
        if not isinstance(rec, dict):
            raise ValueError(f"a line is {type(rec).__name__}, not an object")
        if "path_b64" in rec or "video_id_b64" in rec:
            rec = dict(rec)
            for key in ("path", "video_id"):
                raw = rec.pop(f"{key}_b64", None)
                if raw is not None:
                    try:
                        rec[key] = os.fsdecode(base64.b64decode(str(raw), validate=True))
                    except (binascii.Error, ValueError):
                        raise ValueError(f"`{key}_b64` is not base64") from None
        try:
            values = [rec[name] if name != "rows" else rec.get("rows", 1) for name in _ENTRY_FIELDS]
        except KeyError as exc:
            raise ValueError(f"an entry has no `{exc.args[0]}`") from None
        for name, v in zip(_ENTRY_FIELDS, values):
            want = _ENTRY_TYPES[name]
            if type(v) is not want:  # exact types: JSON gives int / str (bool is not an int here)
                raise ValueError(f"`{name}` of an entry is {type(v).__name__}, not {want.__name__}")
        if values[-1] < 1:
            raise ValueError(f"`rows` of an entry must be >= 1, got {values[-1]}")
        return cls(*values)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


def _gen_name(prefix: str, gen: int, suffix: str) -> str:
    return f"{prefix}-{gen:06d}{suffix}"


def digest_bytes(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


MAX_MANIFEST_BYTES = 64 << 20  # a manifest is a few KB; anything this large is not one


def _read_regular(path: Path, expected_size: int | None = None, limit: int | None = None) -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO or device put in the index folder is
    refused, ``NotRegularFileError``); a size other than ``expected_size`` or above ``limit`` is refused before
    reading (``ValueError`` with the size)."""
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if (expected_size is not None and st.st_size != expected_size) or (limit is not None and st.st_size > limit):
            raise ValueError(st.st_size)
        return fh.read()


def digest_file(path: str | Path, chunk: int = 1 << 22) -> dict:
    h, size = hashlib.sha256(), 0
    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            size += len(block)
            h.update(block)
    return {"size": size, "sha256": h.hexdigest()}


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``digest`` key."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


# ----------------------------------------------------------------------------------------------------
def check_layout(index_dir: Path) -> None:
    lock = index_dir / LOCK
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise damaged(LOCK, f"cannot be inspected ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise damaged(LOCK, "is not a regular file (the writer lock must be a plain file): remove it", hint=False)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_manifest(manifest, file: str = MANIFEST) -> dict:
    """Check the manifest's schema (the one place that does); IndexFormatError naming the first bad key."""

    def bad(problem: str) -> IndexFormatError:
        return damaged(file, problem)

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise damaged(file, "is not a hybridtower index manifest", hint=False)
    version = manifest.get("format_version")
    if not _is_int(version) or version < 1:
        raise bad(f"`format_version` must be a positive integer, got {printable(repr(version))}")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index file {file}: index format version {version}; this hybridtower ({__version__}) reads up to "
            f"{FORMAT_VERSION}: upgrade the package", file=file)

    def need_int(key: str, low: int = 0) -> int:
        v = manifest.get(key)
        if not _is_int(v) or v < low:
            raise bad(f"`{key}` must be an integer >= {low}, got {printable(repr(v))[:60]}")
        return v

    need_int("generation")
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise bad("`model` (the identity of the model that built the index) is missing or not an object")
    for key in ("framework", "config_hash", "weights_sha256"):
        if not isinstance(model.get(key), str):
            raise bad(f"`model.{key}` is missing or not a string")
    if manifest.get("index_kind") not in ("vectors", "frames+rerank"):
        raise bad(f"`index_kind` must be \"vectors\" or \"frames+rerank\", got {printable(repr(manifest.get('index_kind')))[:60]}")
    dim = need_int("dim", 1)
    if "embed_dim" in model and model["embed_dim"] != dim:
        raise bad(f"`dim` is {dim} but the model's embed_dim is {printable(repr(model['embed_dim']))[:20]}")
    if manifest["index_kind"] == "frames+rerank":
        need_int("frame_count", 1)
    need_int("count")
    need_int("next_id")
    entries_file = manifest.get("entries_file")
    if entries_file is not None and not (isinstance(entries_file, str) and _ENTRIES_RE.fullmatch(entries_file)):
        raise bad(f"`entries_file` must be null or entries-GGGGGG.jsonl, got {printable(repr(entries_file))[:80]}")
    segments = manifest.get("segments")
    if not isinstance(segments, list) or not all(isinstance(s, str) and _SEGMENT_RE.fullmatch(s) for s in segments):
        raise bad("`segments` must be a list of segments/seg-GGGGGG.safetensors names")
    rows = manifest.get("segment_rows", {})
    if not isinstance(rows, dict) or not all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in rows.items()):
        raise bad("`segment_rows` must map segment names to row counts")
    ann = manifest.get("ann")
    if ann is not None:
        if not isinstance(ann, dict) or not isinstance(ann.get("kind", "flat"), str):
            raise bad("`ann` must be an object with a string `kind`")
        f = ann.get("file")
        if f is not None and not (isinstance(f, str) and _ANN_RE.fullmatch(f)):
            raise bad(f"`ann.file` must be null or faiss-GGGGGG-KIND.index, got {printable(repr(f))[:80]}")
        for key in ("params", "requested"):
            if ann.get(key) is not None and not isinstance(ann[key], dict):
                raise bad(f"`ann.{key}` must be an object")
    model_file = manifest.get("model_file")
    if model_file is not None and model_file != MODEL_FILE:
        raise bad(f"`model_file` must be null or {MODEL_FILE}, got {printable(repr(model_file))[:80]}")
    sums = manifest.get("checksums")
    if sums is not None:
        if not isinstance(sums, dict):
            raise bad("`checksums` must be an object")
        for name, s in sums.items():
            if not (isinstance(s, dict) and _is_int(s.get("size")) and isinstance(s.get("sha256"), str)
                    and _SHA_RE.fullmatch(s["sha256"])):
                raise bad(f"`checksums` entry of {printable(name)[:80]} must be {{size, sha256}}")
    if "digest" in manifest:
        if manifest["digest"] != manifest_digest(manifest):
            raise bad("its content does not match its recorded digest (edited by hand or corrupted)")
    return manifest


def read_manifest(index_dir: str | Path) -> dict:
    """The committed, schema-checked manifest of ``index_dir`` (IndexFormatError when there is none or it
    is unreadable or invalid)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        what = "is not a folder" if index_dir.exists() else "does not exist"
        raise IndexFormatError(f"index folder {printable_path(index_dir.name)} {what}")
    check_layout(index_dir)
    path = index_dir / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{printable_path(index_dir.name)} is not an index: it has no {MANIFEST} "
                               f"(build one with `hybridtower index`)", file=MANIFEST)
    try:
        data = _read_regular(path, limit=MAX_MANIFEST_BYTES)
    except ValueError as exc:
        raise damaged(MANIFEST, f"is {exc.args[0]} bytes long: not a manifest") from None
    except OSError as exc:
        raise damaged(MANIFEST, f"cannot be read ({exc.strerror})") from None
    text = _utf8_text(MANIFEST, data)
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise damaged(MANIFEST, f"is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    return validate_manifest(manifest)


def _checked_bytes(index_dir: Path, name: str, checksums: dict | None, what: str) -> bytes:
    """The bytes of the named file, its size and SHA-256 checked against ``checksums`` (when recorded)."""
    want = (checksums or {}).get(name)
    try:
        data = _read_regular(index_dir / name, expected_size=want["size"] if want else None)
    except FileNotFoundError:
        raise damaged(name, f"{what} named by the manifest is missing") from None
    except ValueError as exc:
        raise damaged(name, f"{what} has {exc.args[0]} bytes, the manifest recorded {want['size']} (truncated or altered)") from None
    except OSError as exc:
        raise damaged(name, f"{what} named by the manifest cannot be read ({exc.strerror})") from None
    if want:
        if hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise damaged(name, f"{what} does not match the SHA-256 the manifest recorded (corrupted or altered)")
    return data


def read_entries(index_dir: str | Path, manifest: dict) -> list[Entry]:
    """The entries table the manifest names (checksum-checked, every line validated)."""
    name = manifest.get("entries_file")
    if not name:
        return []
    data = _checked_bytes(Path(index_dir), name, manifest.get("checksums"), "the entries table")
    text = _utf8_text(name, data)
    segments = set(manifest.get("segments") or [])
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    try:  # one parse of the whole table (fast); on an error, parse line by line to name the line
        records = json.loads("[" + ",".join(line for _, line in numbered) + "]")
        if len(records) != len(numbered):
            raise ValueError
    except ValueError:
        records = []
        for lineno, line in numbered:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise damaged(name, f"line {lineno} is not valid JSON (column {exc.colno})") from None
    out, seen = [], set()
    for (lineno, _), rec in zip(numbered, records):
        try:
            e = Entry.from_record(rec)
        except ValueError as exc:
            raise damaged(name, f"line {lineno}: {exc}") from None
        if e.id in seen:
            raise damaged(name, f"line {lineno}: id {e.id} appears twice")
        if e.segment not in segments or e.row < 0:
            raise damaged(name, f"line {lineno}: entry {e.id} points at a segment the manifest does not name")
        seen.add(e.id)
        out.append(e)
    return out


def error_record(e: dict) -> dict:
    """An errors.jsonl line: display-safe path and reason, plus ``path_b64`` when the path is not UTF-8."""
    rec = {"path": printable(e.get("path", "")), "error": printable(e.get("error", ""))}
    if not _is_utf8(str(e.get("path", ""))):
        rec["path_b64"] = base64.b64encode(os.fsencode(e["path"])).decode("ascii")
    return rec


def errors_text(errors: list[dict]) -> str:
    return "".join(json.dumps(error_record(e), ensure_ascii=False) + "\n" for e in errors)


def read_errors(index_dir: str | Path) -> list[dict]:
    """The latest run's skipped files (a log: unreadable lines are ignored; paths restored exactly)."""
    path = Path(index_dir) / ERRORS
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                continue
            raw = rec.pop("path_b64", None)
            if raw is not None:
                rec["path"] = os.fsdecode(base64.b64decode(str(raw), validate=True))
            out.append(rec)
        except (json.JSONDecodeError, binascii.Error, ValueError):
            continue
    return out


# ----------------------------------------------------------------------------------------------------
def read_segment(index_dir: str | Path, name: str, manifest: dict | None = None, *,
                 checksums: dict | None = None) -> dict[str, np.ndarray]:
    """The arrays of one segment, its bytes checked against the recorded checksum and its arrays against
    the manifest's shapes (``ids`` [n] int64, ``vectors`` [n, dim] float32, X-Pool ``frames`` [n, T, dim], window
    ``starts`` / ``ends`` [n] float64 when present)."""
    from safetensors.numpy import load as st_load

    manifest = manifest or {}
    if checksums is None:
        checksums = manifest.get("checksums")
    data = _checked_bytes(Path(index_dir), name, checksums, "the segment")
    try:
        arrays = st_load(data)
    except Exception:  # safetensors raises its own error types
        raise damaged(name, "the segment is not a readable safetensors file") from None
    ids, vecs = arrays.get("ids"), arrays.get("vectors")
    dim = manifest.get("dim")
    if ids is None or vecs is None or ids.ndim != 1 or vecs.ndim != 2 or len(ids) != len(vecs):
        raise damaged(name, "the segment does not hold `ids` [n] and `vectors` [n, D]")
    if ids.dtype != np.int64 or vecs.dtype != np.float32:
        raise damaged(name, f"the segment holds {ids.dtype} ids / {vecs.dtype} vectors, not int64 / float32")
    if dim and vecs.shape[1] != dim:
        raise damaged(name, f"the segment's vectors have dimension {vecs.shape[1]}, the manifest says {dim}")
    expected_rows = (manifest.get("segment_rows") or {}).get(name)
    if expected_rows is not None and expected_rows != len(ids):
        raise damaged(name, f"the segment holds {len(ids)} rows, the manifest recorded {expected_rows}")
    for key in ("starts", "ends"):
        t = arrays.get(key)
        if t is not None and (t.dtype != np.float64 or t.shape != ids.shape):
            raise damaged(name, f"the segment's `{key}` are not float64 [{len(ids)}] (window times in seconds)")
    if ("starts" in arrays) != ("ends" in arrays):
        raise damaged(name, "the segment holds window starts without ends (or ends without starts)")
    frames = arrays.get("frames")
    if manifest.get("index_kind") == "frames+rerank":
        t = manifest.get("frame_count")
        if frames is None or frames.dtype != np.float32 or frames.shape != (len(ids), t, vecs.shape[1]):
            raise damaged(name, f"the segment does not hold the X-Pool frame features [n, {t}, {vecs.shape[1]}]")
    return arrays


def load_segment(index_dir: str | Path, name: str, manifest: dict | None = None) -> dict[str, np.ndarray]:
    return read_segment(index_dir, name, manifest)


def bad_rows(vectors: np.ndarray, frames: np.ndarray | None = None, unit: bool = True,
             starts: np.ndarray | None = None, ends: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row positions whose values cannot be right: ``{"non-finite": rows, "not unit-norm": rows}`` (and
    ``"bad window times"`` when ``starts`` / ``ends`` are given: both NaN, or 0 <= start < end, finite)."""
    finite = np.isfinite(vectors).all(axis=1)
    if frames is not None and len(frames):
        finite &= np.isfinite(frames.reshape(len(frames), -1)).all(axis=1)
    out = {"non-finite": np.flatnonzero(~finite)}
    if starts is not None and ends is not None:
        whole = np.isnan(starts) & np.isnan(ends)
        with np.errstate(invalid="ignore"):
            ok = whole | (np.isfinite(starts) & np.isfinite(ends) & (starts >= 0) & (ends > starts))
        out["bad window times"] = np.flatnonzero(~ok)
    if unit:
        with np.errstate(invalid="ignore", over="ignore"):
            sq = np.einsum("ij,ij->i", vectors, vectors)  # squared norms; |n - 1| <= tol  <=>  (1-tol)^2 <= n^2 <= (1+tol)^2
        unit = (sq >= (1.0 - NORM_TOLERANCE) ** 2) & (sq <= (1.0 + NORM_TOLERANCE) ** 2)
        out["not unit-norm"] = np.flatnonzero(finite & ~unit)
    return out


def describe_bad_rows(bad: dict[str, np.ndarray], ids: np.ndarray) -> tuple[str, list[int]]:
    parts, all_ids = [], []
    for what, rows in bad.items():
        if len(rows):
            shown = [int(i) for i in ids[rows]]
            all_ids.extend(shown)
            more = f", ... ({len(rows)} in all)" if len(rows) > 8 else ""
            parts.append(f"{len(rows)} row(s) {what} (video ids {', '.join(map(str, shown[:8]))}{more})")
    return "; ".join(parts), sorted(set(all_ids))


@dataclass
class IndexData:
    """Everything an index holds: entries in ascending id order, and their rows (each entry's rows
    contiguous, in entry order). ``owner`` / ``starts`` / ``ends`` None mean one whole-file row per entry
    (row i is entry i), the layout of every index without windows or PIG-M."""

    manifest: dict
    entries: list[Entry]  # sorted by id
    vectors: np.ndarray  # [R, D] float32 (R = N for one row per video)
    frames: np.ndarray | None  # [R, T, D] float32 (X-Pool) or None
    owner: np.ndarray | None = None  # [R] int64: position in ``entries`` of each row's video
    starts: np.ndarray | None = None  # [R] float64 seconds; NaN = the whole file
    ends: np.ndarray | None = None  # [R] float64 seconds; NaN = the whole file

    def __post_init__(self):
        n = len(self.vectors)
        if self.owner is None:
            self.owner = np.arange(n, dtype=np.int64)
        if self.starts is None:
            self.starts = np.full(n, np.nan)
        if self.ends is None:
            self.ends = np.full(n, np.nan)


@dataclass
class Rows:
    """The rows of some entries, in their order (each entry's rows contiguous): see ``gather``."""

    vectors: np.ndarray  # [R, D] float32
    frames: np.ndarray | None  # [R, T, D] float32 or None
    owner: np.ndarray  # [R] int64 position of the row's entry in the list gathered
    starts: np.ndarray  # [R] float64 (NaN: whole file)
    ends: np.ndarray  # [R] float64

    @property
    def has_times(self) -> bool:
        return bool(len(self.starts)) and not bool(np.isnan(self.starts).all() and np.isnan(self.ends).all())


def gather(index_dir: str | Path, entries: list[Entry], dim: int, with_frames: bool = True,
           manifest: dict | None = None, checksums: dict | None = None) -> Rows:
    """Every row of ``entries`` (all ``rows`` of each, contiguous, in the entries' order), read from their
    segments: vectors [R, D], X-Pool frame features [R, T, D] (if stored and wanted), the owner of each row
    and its window times. Each segment is checked (``read_segment``: checksum, shapes) and so are the rows
    taken from it (the ids the entries expect, finite values, unit-norm vectors, sane window times); any
    problem is an IndexFormatError naming the segment and the ids of bad rows."""
    index_dir = Path(index_dir)
    manifest = dict(manifest or {}, dim=dim)
    counts = np.asarray([e.rows for e in entries], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(entries) else np.zeros(0, np.int64)
    total = int(counts.sum())
    by_segment: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_segment.setdefault(e.segment, []).append(i)
    vectors = np.zeros((total, dim), dtype=np.float32)
    starts, ends = np.full(total, np.nan), np.full(total, np.nan)
    owner = np.repeat(np.arange(len(entries), dtype=np.int64), counts)
    frames = None
    for seg, positions in by_segment.items():
        data = read_segment(index_dir, seg, manifest, checksums=checksums)
        pos = np.asarray(positions)
        n_rows = counts[pos]
        # source rows in the segment and destination rows in the output, entry by entry (contiguous runs)
        src = np.concatenate([np.arange(entries[i].row, entries[i].row + entries[i].rows) for i in positions])
        dst = np.concatenate([np.arange(first[i], first[i] + counts[i]) for i in positions])
        want = np.repeat(np.asarray([entries[i].id for i in positions], dtype=np.int64), n_rows)
        ids = data["ids"]
        if src.max(initial=-1) >= len(ids) or not np.array_equal(ids[src], want):
            raise damaged(seg, "the segment does not hold the rows the entries table expects")
        whole = len(src) == len(ids) and np.array_equal(src, np.arange(len(ids)))  # the usual case: no copy
        sel = data["vectors"] if whole else data["vectors"][src]
        seg_frames = None if "frames" not in data else data["frames"] if whole else data["frames"][src]
        seg_starts = None if "starts" not in data else data["starts"][src]
        seg_ends = None if "ends" not in data else data["ends"][src]
        text, bad_ids = describe_bad_rows(bad_rows(sel, seg_frames, starts=seg_starts, ends=seg_ends), want)
        if text:
            raise damaged(seg, text, ids=bad_ids)
        contiguous = len(dst) and np.array_equal(dst, np.arange(dst[0], dst[0] + len(dst)))
        dest = slice(int(dst[0]), int(dst[0]) + len(dst)) if contiguous else dst
        vectors[dest] = sel
        if seg_starts is not None:
            starts[dest], ends[dest] = seg_starts, seg_ends
        if with_frames and seg_frames is not None:
            if frames is None:
                frames = np.zeros((total,) + seg_frames.shape[1:], dtype=np.float32)
            frames[dest] = seg_frames
    return Rows(vectors, frames, owner, starts, ends)


def gather_rows(index_dir: str | Path, entries: list[Entry], dim: int, with_frames: bool = True,
                manifest: dict | None = None, checksums: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(vectors, frames)`` of :func:`gather` (every row of ``entries``, in their order)."""
    rows = gather(index_dir, entries, dim, with_frames, manifest, checksums)
    return rows.vectors, rows.frames


def model_file_path(index_dir: str | Path, manifest: dict) -> Path | None:
    """The checkpoint kept inside the index (``--model SPEC`` builds), or None."""
    name = manifest.get("model_file")
    return Path(index_dir) / name if name else None


def check_model_file(index_dir: str | Path, manifest: dict) -> None:
    """The checkpoint kept inside the index is there with its recorded size and SHA-256."""
    name = manifest.get("model_file")
    if not name:
        return
    want = (manifest.get("checksums") or {}).get(name)
    try:
        got = digest_file(Path(index_dir) / name)
    except FileNotFoundError:
        raise damaged(name, "the index's own checkpoint is missing", hint=False) from None
    except OSError as exc:
        raise damaged(name, f"the index's own checkpoint cannot be read ({exc.strerror})", hint=False) from None
    if want and (got["size"] != want["size"] or got["sha256"] != want["sha256"]):
        raise damaged(name, "the index's own checkpoint does not match the size / SHA-256 the manifest recorded; "
                            "rebuild with `hybridtower index ... --model SPEC --overwrite`", hint=False)


def check_ann_file(index_dir: str | Path, manifest: dict) -> None:
    """The FAISS file the manifest names is there with its recorded size and SHA-256."""
    name = (manifest.get("ann") or {}).get("file")
    if not name:
        return
    path = Path(index_dir) / name
    if not path.exists():
        raise damaged(name, "the FAISS index named by the manifest is missing")
    want = (manifest.get("checksums") or {}).get(name)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(file_type_name(st.st_mode))
    except OSError as exc:
        raise damaged(name, f"the FAISS index cannot be read ({exc.strerror})") from None
    if want:
        if st.st_size != want["size"]:
            raise damaged(name, f"the FAISS index has {st.st_size} bytes, the manifest recorded {want['size']}")
        try:
            got = digest_file(path)
        except OSError as exc:
            raise damaged(name, f"the FAISS index cannot be read ({exc.strerror})") from None
        if got["size"] != want["size"]:
            raise damaged(name, f"the FAISS index has {got['size']} bytes, the manifest recorded {want['size']}")
        if got["sha256"] != want["sha256"]:
            raise damaged(name, "the FAISS index does not match the SHA-256 the manifest recorded (corrupted or altered)")


def load_index(index_dir: str | Path, manifest: dict | None = None, with_frames: bool = True) -> IndexData:
    """Read the committed state: entries and their vectors (and X-Pool frame features), in id order.

    Everything is checked on the way (see the module doc): a damaged file is an IndexFormatError."""
    index_dir = Path(index_dir)
    manifest = validate_manifest(manifest) if manifest is not None else read_manifest(index_dir)
    entries = sorted(read_entries(index_dir, manifest), key=lambda e: e.id)
    dim = int(manifest["dim"])
    rows = gather(index_dir, entries, dim, with_frames, manifest)
    check_ann_file(index_dir, manifest)
    frames = rows.frames
    if with_frames and manifest.get("index_kind") == "frames+rerank" and frames is None:
        t = int(manifest.get("frame_count") or 0)
        frames = np.zeros((0, t, dim), dtype=np.float32)
    return IndexData(manifest, entries, rows.vectors, frames, rows.owner, rows.starts, rows.ends)


def acquire_lock(index_dir: Path):
    """The open, exclusively flock'd ``.lock`` of ``index_dir`` (IndexLockedError when another process holds it)."""
    check_layout(index_dir)
    try:
        fh = open(index_dir / LOCK, "a+")
    except OSError as exc:
        raise damaged(LOCK, f"the writer lock cannot be opened ({exc.strerror})", hint=False) from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise IndexLockedError(f"{printable_path(index_dir.name)} is being written by another process "
                               f"(it holds {LOCK})") from None
    return fh


class IndexWriter:
    """Exclusive writer of one index folder: stages segments and commits generations atomically."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = acquire_lock(self.dir)
        self._sums: dict[str, dict] = {}  # checksums of the files this writer wrote
        try:
            self.manifest: dict | None = read_manifest(self.dir) if (self.dir / MANIFEST).is_file() else None
        except BaseException:
            self.close()
            raise
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
        if m.get("model_file"):
            names.add(m["model_file"])
        return names

    def collect_garbage(self) -> list[str]:
        """Delete files no committed manifest names (left by an interrupted run)."""
        keep = self.referenced()
        removed = []
        def files(folder: Path) -> list[Path]:  # regular files, and FIFOs / links / devices put there
            return [p for p in folder.iterdir() if p.is_symlink() or not p.is_dir()]

        candidates = files(self.dir)
        if (self.dir / SEGMENTS).is_dir() and not (self.dir / SEGMENTS).is_symlink():
            candidates += files(self.dir / SEGMENTS)
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

    def checksums(self) -> dict[str, dict]:
        """Checksums known for this folder's files: the committed manifest's, then what this writer wrote."""
        return {**((self.manifest or {}).get("checksums") or {}), **self._sums}

    def write_segment(self, gen: int, ids: np.ndarray, vectors: np.ndarray, frames: np.ndarray | None, tag: str = "",
                      starts: np.ndarray | None = None, ends: np.ndarray | None = None) -> str:
        """Write a segment; window ``starts`` / ``ends`` are stored only when some row has one (a segment of
        whole-file rows is byte for byte the older format)."""
        from safetensors.numpy import save

        name = f"{SEGMENTS}/" + _gen_name("seg", gen, f"{tag}.safetensors")
        tensors = {"ids": np.ascontiguousarray(ids, dtype=np.int64), "vectors": np.ascontiguousarray(vectors, dtype=np.float32)}
        if frames is not None:
            tensors["frames"] = np.ascontiguousarray(frames, dtype=np.float32)
        if starts is not None and ends is not None and not (np.isnan(starts).all() and np.isnan(ends).all()):
            tensors["starts"] = np.ascontiguousarray(starts, dtype=np.float64)
            tensors["ends"] = np.ascontiguousarray(ends, dtype=np.float64)
        data = save(tensors)
        atomic_write_bytes(self.dir / name, data)
        self._sums[name] = digest_bytes(data)
        return name

    def write_entries(self, gen: int, entries: list[Entry]) -> str:
        name = _gen_name("entries", gen, ".jsonl")
        data = "".join(e.to_json() + "\n" for e in sorted(entries, key=lambda e: e.id)).encode("utf-8")
        atomic_write_bytes(self.dir / name, data)
        self._sums[name] = digest_bytes(data)
        return name

    def write_errors(self, errors: list[dict]) -> None:
        atomic_write_text(self.dir / ERRORS, errors_text(errors))

    def ann_path(self, gen: int, kind: str) -> tuple[str, Path]:
        name = _gen_name("faiss", gen, f"-{kind}.index")
        return name, self.dir / name

    def record_file(self, name: str) -> None:
        """Record the checksum of a file written by someone else (the FAISS writer) under ``name``."""
        self._sums[name] = digest_file(self.dir / name)

    def commit(self, manifest: dict) -> None:
        """Make ``manifest`` (whose files are all written) the committed state."""
        manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, updated=time.time())
        names = [n for n in [manifest.get("entries_file"), *manifest.get("segments", []),
                             (manifest.get("ann") or {}).get("file"), manifest.get("model_file")] if n]
        missing = [n for n in names if not (self.dir / n).is_file()]
        if missing:
            raise IndexFormatError(f"refusing to commit a manifest naming missing files {missing}")
        known = self.checksums()
        manifest["checksums"] = {n: known.get(n) or digest_file(self.dir / n) for n in names}
        manifest.pop("digest", None)
        manifest["digest"] = manifest_digest(manifest)
        atomic_write_json(self.dir / MANIFEST, manifest)
        self.manifest = manifest
        self.generation = int(manifest["generation"])
