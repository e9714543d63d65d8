"""Online search over an index: ``Searcher.open(INDEX_DIR).search("a red ball bounces", k=10)``.

- PIG / Two-Tower indexes: the query is encoded once and scored against every stored vector with one
  inner product (exact search, :mod:`.exact`: the fastest of a BLAS matrix-vector product, FAISS flat
  search and a blocked top-k, chosen by timing them on the index's own vectors when it is opened), or
  through the ANN index the manifest names (IVF, HNSW, scalar-quantised; :mod:`.ann`).
- X-Pool indexes (``index_kind = "frames+rerank"``): a first stage ranks the videos by the inner product
  of the query with the normalised mean of their frame features (CLIP4Clip meanP), the best
  ``candidates`` of them (default ``max(100, 10 k)``) are re-scored with ``model.score`` (X-Pool's
  query-conditioned pooling) and re-ranked. That is exact only when ``candidates >= N``; ``rerank_all``
  re-scores every video (exact, cost grows with N).

Queries are cleaned before encoding: control characters become spaces, whitespace is collapsed, and a
query longer than the model's text context is truncated by the tokenizer (``truncated`` and ``notes``
say so). An empty, whitespace-only or control-characters-only query, or a bad ``k``, raises
:class:`QueryError`. The searcher is safe to share between threads (text encoding is serialised).

Batched callers (the service) encode many cleaned queries at once with :meth:`Searcher.encode_queries` and
pass each row to ``search(query, k, query_vector=row)``, which skips the text encode and returns exactly
what the text path returns. :meth:`Searcher.search_vector` searches by example (a stored video's vector
from :meth:`Searcher.vector`, or an image embedding of the same model).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.display import printable_path
from ..core.errors import HybridTowerError
from . import calibration, store
from .identity import TEXT, check_same_model, load_checkpoint, materialise, recorded_parts

MAX_K = 1000  # largest k a caller may ask for
MAX_QUERY_CHARS = 1000  # longer queries are cut before tokenising (the model reads ~30-80 tokens anyway)


class QueryError(HybridTowerError):
    """The query or its parameters cannot be answered (empty query, k out of range, ...)."""


@dataclass
class Hit:
    id: int  # stable id of the video in this index (use it in URLs, never the path)
    video_id: str  # the file's path relative to the folder it was indexed from
    path: str  # absolute path of the file
    score: float  # higher is better (cosine for PIG / Two-Tower; X-Pool fusion score after re-ranking)
    start: float | None = None  # seconds: start of the best-matching window; None = the whole file
    end: float | None = None  # seconds: its end; None = the whole file
    moments: list[dict] = field(default_factory=list)  # other windows of this video in the candidates, best first
    weak: bool = False  # score below the index's weak-match threshold (False when the index has none)

    def to_public_dict(self) -> dict:
        """THE hit schema of the CLI's ``search --json`` and the HTTP API (no absolute path)."""
        return {"id": int(self.id), "video_id": self.video_id, "score": float(self.score),
                "start": None if self.start is None else float(self.start),
                "end": None if self.end is None else float(self.end),
                "moments": [dict(m) for m in self.moments], "weak": bool(self.weak)}


@dataclass
class SearchResult:
    query: str  # the cleaned query that was encoded
    hits: list[Hit]
    took_ms: float  # encode + rank time
    truncated: bool  # the query was longer than the text context and was cut
    num_tokens: int  # tokens the cleaned query needs, start/end tokens included (before truncation)
    notes: list[str] = field(default_factory=list)  # human-readable remarks (truncation, cleaning, k capped, ...)
    weak_threshold: float | None = None  # the index's weak-match threshold (None when it has none)

    def to_public_dict(self) -> dict:
        """The public result: ``{"query", "hits": [Hit.to_public_dict()], "took_ms", "truncated", "num_tokens",
        "notes", "weak_threshold"}``."""
        return {"query": self.query, "hits": [h.to_public_dict() for h in self.hits], "took_ms": self.took_ms,
                "truncated": self.truncated, "num_tokens": self.num_tokens, "notes": list(self.notes),
                "weak_threshold": self.weak_threshold}

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "hits": [vars(h) for h in self.hits],
            "took_ms": self.took_ms,
            "truncated": self.truncated,
            "num_tokens": self.num_tokens,
            "notes": list(self.notes),
            "weak_threshold": self.weak_threshold,
        }


_WS = re.compile(r"\s+")


def clean_query(query) -> tuple[str, list[str]]:
    """(cleaned query, notes). Raises QueryError when nothing searchable is left."""
    if query is None:
        raise QueryError("the query is empty: type some words describing the video")
    if not isinstance(query, str):
        raise QueryError(f"the query must be text, got {type(query).__name__}")
    notes = []
    if len(query) > MAX_QUERY_CHARS:
        query = query[:MAX_QUERY_CHARS]
        notes.append(f"query cut to its first {MAX_QUERY_CHARS} characters before tokenising")
    # control characters (Cc), unassigned/surrogate/private code points -> space; format chars (Cf, e.g.
    # zero-width space) dropped unless they join emoji (ZWJ)
    out, removed = [], 0
    for ch in query:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r":
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co", "Cn"):
            out.append(" ")
            removed += 1
        elif cat == "Cf" and ch != "\u200d":
            removed += 1
        else:
            out.append(ch)
    cleaned = _WS.sub(" ", "".join(out)).strip()
    if removed:
        notes.append(f"removed {removed} control/invisible character(s)")
    if not cleaned:
        if not query:
            raise QueryError("the query is empty: type some words describing the video")
        if removed:
            raise QueryError("the query holds only control or invisible characters: type some words")
        raise QueryError("the query is only whitespace: type some words describing the video")
    return cleaned, notes


class Searcher:
    """An opened index with its model loaded once. See the module doc."""

    def __init__(self, index_dir: Path, data: store.IndexData, model, device: str = "cpu",
                 rerank_all: bool = False, candidates: int | None = None, exact_kernel: str = "auto"):
        import torch

        self.index_dir = Path(index_dir)
        self.manifest: dict = data.manifest
        self.model = model
        self.device = torch.device(device)
        self.entries = data.entries
        self._row_of = {e.id: i for i, e in enumerate(self.entries)}  # entry id -> position in entries
        # rows (windows, PIG-M pseudo-queries) -> their video: owner[r] is the entry position of row r; each
        # video's rows are contiguous from _first[pos] (one row per video: owner = arange, the old layout)
        self._owner = np.asarray(data.owner, dtype=np.int64)
        self._starts = np.asarray(data.starts, dtype=np.float64)
        self._ends = np.asarray(data.ends, dtype=np.float64)
        counts = np.bincount(self._owner, minlength=len(self.entries)) if len(self._owner) else np.zeros(len(self.entries), np.int64)
        self._first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
        self._counts = counts
        self.num_rows = int(len(self._owner))
        self._frames = None if data.frames is None else torch.from_numpy(data.frames)
        self.rerank_all = bool(rerank_all)
        self.candidates = candidates
        self.rerank = self.manifest.get("index_kind") == "frames+rerank"
        self._lock = threading.Lock()
        self._vectors = None  # the [N, D] array when exact search holds it (FAISS holds its own copy)
        self.ann_kind, self._ann = self._open_ann(data.vectors, exact_kernel)  # one copy of the vectors
        self.context_length = int(model.cfg.text_context_length)
        self.weak_threshold: float | None = calibration.weak_threshold(self.manifest)  # None: no cue (or malformed)

    # ----- construction -----
    @classmethod
    def open(cls, index_dir, checkpoint=None, device: str = "cpu", *, rerank_all: bool = False,
             candidates: int | None = None, exact_kernel: str = "auto") -> "Searcher":
        """Open ``index_dir`` and load its model once (the checkpoint the manifest records, unless given).

        Raises IndexFormatError when the folder is not a readable index and IndexMismatchError when
        ``checkpoint`` is not the model the index was built with.
        """
        index_dir = Path(index_dir)
        data = _load_consistent(index_dir)
        recorded = data.manifest["model"]
        own = store.model_file_path(index_dir, data.manifest)
        if checkpoint is None and own is not None and own.is_file():
            checkpoint = own  # built with --model SPEC: the index's own checkpoint, wherever the folder is now
        if checkpoint is None:
            checkpoint = recorded.get("checkpoint")
            if not checkpoint or not Path(checkpoint).exists():
                raise store.IndexFormatError(
                    f"the checkpoint this index was built with ({printable_path(Path(checkpoint).name) if checkpoint else 'not recorded'}) "
                    f"is not there any more; "
                    f"pass the same checkpoint explicitly (--checkpoint)"
                )
        # an index that records per-part digests: read and verify only the text part now (the video tower's
        # bytes are read, and verified, by full_model() on the first image search); older indexes: everything
        parts = TEXT if recorded_parts(recorded) is not None else None
        model, identity = load_checkpoint(checkpoint, device=device, parts=parts)
        check_same_model(recorded, identity, index_dir)
        return cls(index_dir, data, model, device=device, rerank_all=rerank_all, candidates=candidates,
                   exact_kernel=exact_kernel)

    def full_model(self):
        """The model with every tensor loaded, for what needs more than the text tower (``encode_video``:
        image search). :meth:`open` loads only the text part of a model when the index records per-part
        digests; the first call here reads the rest from the checkpoint and checks it against the index's
        digest (IndexMismatchError when it differs: the model stays text-only). Thread-safe; later calls
        return at once."""
        return materialise(self.model, self.manifest["model"], self.index_dir)

    def _open_ann(self, vectors, exact_kernel: str):
        from .ann import ThreadedSearch, load_ann, resolve_params
        from .exact import ExactIndex

        ann = self.manifest.get("ann") or {}
        kind = ann.get("kind", "flat")
        n = len(self._owner)  # rows
        if kind != "flat" and ann.get("file") and ann.get("count") == n:
            path = self.index_dir / ann["file"]
            try:
                index = load_ann(path, kind, ann.get("params") or resolve_params(kind, ann.get("requested"), n))
            except RuntimeError as exc:
                raise store.damaged(ann["file"], f"FAISS cannot read it ({type(exc).__name__})") from exc
            index = ThreadedSearch(index)
            if exact_kernel == "auto":  # same rule as exact search: one thread or all, whichever is faster here
                index.calibrate()
            return kind, index
        # exact search (or an ANN structure not built yet by an interrupted run): the kernel that is fastest
        # for this N on this machine, timed on these vectors now (index/exact.py)
        exact = ExactIndex(vectors, exact_kernel)
        self._vectors = exact.vectors
        return "flat", exact

    @property
    def search_path(self) -> dict:
        """How queries are answered: ``{"kind": "flat", "kernel": ..., "calibration": {...}}`` for exact search
        (:mod:`hybridtower.index.exact`); ``{"kind": ANN kind, "threads": "configured"|"1", "calibration":
        {...}}`` for a FAISS index (:class:`hybridtower.index.ann.ThreadedSearch`)."""
        out = {"kind": self.ann_kind}
        if self._vectors is not None:
            out.update(kernel=self._ann.kernel, calibration=self._ann.calibration)
        elif self._ann.calibration is not None:
            out.update(threads=self._ann.calibration["threads"], calibration=self._ann.calibration)
        return out

    # ----- queries -----
    def __len__(self) -> int:
        return len(self.entries)

    def video_path(self, id: int) -> Path | None:
        """The file of video ``id`` when ``id`` (an int) is in the index, else None (no other path is ever
        returned; strings, floats and unknown ids give None)."""
        e = self.entry(id)
        return None if e is None else Path(e.path)

    def entry(self, id: int) -> store.Entry | None:
        """The entries-table row (path, video_id, size, mtime_ns, sha256, ...) of video ``id``, or None."""
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            return None
        row = self._row_of.get(int(id))
        return None if row is None else self.entries[row]

    def encode_query(self, text: str) -> np.ndarray:
        """One text (already cleaned) -> float32 [1, D]."""
        return self.encode_queries([text])

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Already-cleaned texts -> float32 [n, D] in one batched text encode (for callers that batch
        concurrent queries). Row i equals ``encode_query(texts[i])`` to ~1e-6 (the batch changes only the
        BLAS blocking). Texts are not cleaned here: pass what :func:`clean_query` returned."""
        import torch

        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise QueryError("encode_queries takes a list of texts")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock, torch.no_grad():
            tokens = self.model.tokenize(list(texts)).to(self.device)
            # the text tower is causal and reads its feature at the EOT token (the highest id): positions
            # after the batch's last EOT cannot change any row, so they are not computed (50 -> ~13 tokens
            # for a typical query; equal to the full-length encode to ~1e-7, tests/test_search_batched.py)
            if getattr(self.model, "causal_text", True):
                tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
            return np.ascontiguousarray(self.model.encode_text(tokens).float().cpu().numpy(), dtype=np.float32)

    @property
    def dim(self) -> int:
        """Dimension D of the stored vectors (and of query vectors)."""
        return int(self.manifest.get("dim") or self.model.embed_dim)

    def search(self, query: str, k: int = 10, *, query_vector: np.ndarray | None = None) -> SearchResult:
        """Top-``k`` videos for ``query``. With ``query_vector`` (its encoding from :meth:`encode_queries`,
        [D] or [1, D]) the text encode is skipped; the query is still cleaned, token-counted and returned."""
        t0 = time.perf_counter()
        k = check_k(k)
        cleaned, notes = clean_query(query)
        q = None if query_vector is None else self._check_vector(query_vector, "query_vector")
        num_tokens = self.model.tokenizer.num_tokens(cleaned)
        truncated = num_tokens > self.context_length
        if truncated:
            notes.append(f"query has {num_tokens} tokens; the model reads only the first {self.context_length} "
                         f"(its text context), the rest was ignored")
        k = self._cap_k(k, notes)
        if k == 0:
            return SearchResult(cleaned, [], (time.perf_counter() - t0) * 1e3, truncated, num_tokens, notes)
        if q is None:
            q = self.encode_query(cleaned)
        if self.rerank:
            rows, scores = self._rerank(q, k, notes)
        else:
            rows, scores = self._top(q, k)
        return SearchResult(cleaned, self._hits(rows, scores, k), (time.perf_counter() - t0) * 1e3, truncated,
                            num_tokens, notes, self.weak_threshold)

    def search_vector(self, vector: np.ndarray, k: int = 10, *, exclude_id: int | None = None) -> SearchResult:
        """Search by example: the ``k`` stored videos most similar to ``vector`` ([D] or [1, D]: a stored
        video's or window's vector, see :meth:`vector`, or an image embedding of the same model), grouped per
        video like :meth:`search`. The vector is L2-normalised, so scores are cosines. A stored video finds
        itself first unless ``exclude_id`` names it ("more like this"). On X-Pool indexes the ranking is by
        the mean-pooled frame features of every row (exact; no query-conditioned re-rank, which needs a
        text). ``query`` of the result is ``""`` and ``num_tokens`` 0."""
        t0 = time.perf_counter()
        k = check_k(k)
        q = self._check_vector(vector, "vector")
        norm = float(np.linalg.norm(q))
        if norm == 0.0:
            raise QueryError("the vector is all zeros: nothing to compare with")
        q = q / norm
        notes: list[str] = []
        exclude = None
        if exclude_id is not None:
            exclude = self._row_of.get(int(exclude_id)) if self.entry(exclude_id) is not None else None
        k = self._cap_k(k, notes, excluded=exclude is not None)
        if k == 0:
            return SearchResult("", [], (time.perf_counter() - t0) * 1e3, False, 0, notes, None)
        if self.rerank:
            notes.append("X-Pool index: ranked by mean-pooled frame features (search by example is not re-ranked)")
        rows, scores = self._top(q, k, exclude=exclude)
        # the weak-match threshold is calibrated for text queries: video-side vectors score on another scale
        return SearchResult("", self._hits(rows, scores, k, flag_weak=False), (time.perf_counter() - t0) * 1e3,
                            False, 0, notes, None)

    def rows_of(self, id: int) -> list[dict]:
        """The rows of video ``id`` in order: ``[{"start", "end"}]`` (None: the whole file); [] if unknown."""
        e = self.entry(id)
        if e is None:
            return []
        pos = self._row_of[int(e.id)]
        first, n = int(self._first[pos]), int(self._counts[pos])
        return [{"start": _time(self._starts[r]), "end": _time(self._ends[r])} for r in range(first, first + n)]

    def vector(self, id: int, start: float | None = None) -> np.ndarray | None:
        """A stored vector [D] (float32) of video ``id`` (an int in the index), else None.

        ``start`` None: the video's only row, or for a video stored as several rows (windows of a long video,
        PIG-M pseudo-queries) the L2-normalised mean of its rows (the whole video as one query). ``start``
        given: the row of the window starting at ``start`` seconds (within 0.5 s; the best-scoring of the
        video's rows that start there, e.g. PIG-M, is not known without a query: their normalised mean);
        None when the video has no such window. For X-Pool indexes a row's vector is the normalised mean of
        its frame features (the first search stage's vector)."""
        e = self.entry(id)
        if e is None:
            return None
        pos = self._row_of[int(e.id)]
        rows = np.arange(int(self._first[pos]), int(self._first[pos] + self._counts[pos]))
        if start is not None:
            try:
                start = float(start)
            except (TypeError, ValueError):
                return None
            st = self._starts[rows]
            with np.errstate(invalid="ignore"):
                near = np.abs(st - start) <= 0.5
            if np.isnan(st).all() and start == 0.0:
                near = np.ones(len(rows), dtype=bool)  # a whole-file video "starts" at 0
            if not near.any():
                return None
            rows = rows[near]
        vecs = np.stack([self._row_vector(int(r)) for r in rows])
        if len(vecs) == 1:
            return vecs[0]
        mean = vecs.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def _row_vector(self, row: int) -> np.ndarray:
        if self._vectors is not None:
            return np.array(self._vectors[row], dtype=np.float32)
        try:
            return np.asarray(self._ann.reconstruct(row), dtype=np.float32)
        except RuntimeError:  # IVF: FAISS needs its id -> list map first
            with self._lock:
                self._ann.make_direct_map()
            return np.asarray(self._ann.reconstruct(row), dtype=np.float32)

    # ----- internals -----
    def _check_vector(self, v, name: str) -> np.ndarray:
        try:
            a = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError):
            raise QueryError(f"{name} must be an array of {self.dim} numbers") from None
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 1 or a.shape[0] != self.dim:
            raise QueryError(f"{name} must have shape [{self.dim}] or [1, {self.dim}], got {list(np.shape(v))}")
        if not np.all(np.isfinite(a)):
            raise QueryError(f"{name} holds NaN or infinite values")
        return np.ascontiguousarray(a[None, :])

    def _cap_k(self, k: int, notes: list[str], excluded: bool = False) -> int:
        n = len(self.entries) - (1 if excluded else 0)
        if len(self.entries) == 0:
            notes.append("the index is empty")
            return 0
        if k > n:
            notes.append(f"k={k} but the index holds {n} video(s)" + (" besides the excluded one" if excluded else ""))
            return n
        return k

    def _distinct(self, rows: np.ndarray) -> int:
        return len(np.unique(self._owner[rows])) if len(rows) else 0

    def _top(self, q: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best rows, ranked, until they cover ``k`` distinct videos (other than the entry position
        ``exclude``) or every row has been seen: ``k`` rows when each video has one row (today's search,
        unchanged), else ``k`` rows first and 4x more per round."""
        from .ann import search_ann

        total = self.num_rows
        fetch = k + (int(self._counts[exclude]) if exclude is not None else 0)
        if total > len(self.entries):  # several rows per video: room for each hit's other moments from the start
            fetch = 4 * fetch + 16
        fetch = min(total, fetch)
        while True:
            s, r = search_ann(self._ann, q, fetch)
            keep = r[0] >= 0
            rows, scores = r[0][keep], s[0][keep]
            reached_all = len(rows) < fetch  # an ANN index that cannot return more (IVF probes) has nothing more
            if exclude is not None:
                mine = self._owner[rows] == exclude
                rows, scores = rows[~mine], scores[~mine]
            if fetch >= total or reached_all or self._distinct(rows) >= k:
                return rows, scores
            fetch = min(total, fetch * 4)

    def _hits(self, rows, scores, k: int, flag_weak: bool = True) -> list[Hit]:
        """Group ranked rows per video: one Hit per video (its best row's score and window), its other rows
        in the list as ``moments`` (best first; whole-file rows are not moments), the first ``k`` videos;
        ``weak`` when the score is below the index's weak-match threshold (text queries only)."""
        hits: list[Hit] = []
        by_pos: dict[int, Hit] = {}
        thr = self.weak_threshold if flag_weak else None
        for r, sc in zip(rows, scores):
            pos = int(self._owner[r])
            start, end = _time(self._starts[r]), _time(self._ends[r])
            hit = by_pos.get(pos)
            if hit is None:
                if len(hits) >= k:
                    continue
                e = self.entries[pos]
                hit = Hit(e.id, e.video_id, e.path, float(sc), start, end, [],
                          bool(thr is not None and float(sc) < thr))
                by_pos[pos] = hit
                hits.append(hit)
            elif start is not None and (start, end) != (hit.start, hit.end):
                if not any(m["start"] == start and m["end"] == end for m in hit.moments):
                    hit.moments.append({"start": start, "end": end, "score": float(sc)})
        return hits

    def _rerank(self, q: np.ndarray, k: int, notes: list[str]):
        """X-Pool: rank rows by the first-stage vector, re-score the best ``candidates`` rows with the
        model's query-conditioned score, and grow the candidates until they cover ``k`` videos."""
        import torch

        from .ann import search_ann

        n = self.num_rows
        c = n if self.rerank_all else min(n, max(k, self.candidates or max(100, 10 * k)))
        while True:
            if c < n:
                s, r = search_ann(self._ann, q, c)
                cand = r[0][r[0] >= 0]
            else:
                cand = np.arange(n)
            if c >= n or self._distinct(cand) >= k:
                break
            c = min(n, c * 4)
        if c < n:
            what = "videos" if n == len(self.entries) else "rows (windows)"
            notes.append(f"X-Pool: re-ranked the top {len(cand)} of {n} {what} by mean-pooled similarity")
        with self._lock, torch.no_grad():
            frames = self._frames[torch.as_tensor(cand, dtype=torch.long)].to(self.device)
            scores = self.model.score(torch.from_numpy(q).to(self.device), frames)[0].float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        if n == len(self.entries):
            order = order[:k]
        return cand[order], scores[order]


def _time(t) -> float | None:
    t = float(t)
    return None if t != t else t  # NaN: the whole file


def check_k(k) -> int:
    """``k`` as an int in [1, MAX_K], or QueryError (bools and non-integers refused)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    if not 1 <= int(k) <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


def _load_consistent(index_dir: Path, attempts: int = 3) -> store.IndexData:
    """Read manifest + files; retry when a writer committed (and cleaned up) between the two reads."""
    last = None
    for _ in range(attempts):
        manifest = store.read_manifest(index_dir)
        try:
            return store.load_index(index_dir, manifest)
        except store.IndexFormatError as exc:
            last = exc
            try:
                if store.read_manifest(index_dir).get("generation") == manifest.get("generation"):
                    raise
            except store.IndexFormatError:
                raise exc from None
            time.sleep(0.05)
    raise last
