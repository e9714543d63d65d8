"""Online search over an index: ``Searcher.open(INDEX_DIR).search("a red ball bounces", k=10)``.

- PIG / Two-Tower indexes: the query is encoded once and scored against every stored vector with one
  inner product (FAISS ``IndexFlatIP``), or through the IVF / HNSW index the manifest names.
- X-Pool indexes (``index_kind = "frames+rerank"``): a first stage ranks the videos by the inner product
  of the query with the normalised mean of their frame features (CLIP4Clip meanP), the best
  ``candidates`` of them (default ``max(100, 10 k)``) are re-scored with ``model.score`` (X-Pool's
  query-conditioned pooling) and re-ranked. That is exact only when ``candidates >= N``; ``rerank_all``
  re-scores every video (exact, cost grows with N).

Queries are cleaned before encoding: control characters become spaces, whitespace is collapsed, and a
query longer than the model's text context is truncated by the tokenizer (``truncated`` and ``notes``
say so). An empty, whitespace-only or control-characters-only query, or a bad ``k``, raises
:class:`QueryError`. The searcher is safe to share between threads (text encoding is serialised).
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import HybridTowerError
from . import store
from .identity import check_same_model, load_checkpoint

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


@dataclass
class SearchResult:
    query: str  # the cleaned query that was encoded
    hits: list[Hit]
    took_ms: float  # encode + rank time
    truncated: bool  # the query was longer than the text context and was cut
    num_tokens: int  # tokens the cleaned query needs, start/end tokens included (before truncation)
    notes: list[str] = field(default_factory=list)  # human-readable remarks (truncation, cleaning, k capped, ...)

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "hits": [vars(h) for h in self.hits],
            "took_ms": self.took_ms,
            "truncated": self.truncated,
            "num_tokens": self.num_tokens,
            "notes": list(self.notes),
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
                 rerank_all: bool = False, candidates: int | None = None):
        import torch

        self.index_dir = Path(index_dir)
        self.manifest: dict = data.manifest
        self.model = model
        self.device = torch.device(device)
        self.entries = data.entries
        self._row_of = {e.id: i for i, e in enumerate(self.entries)}
        self._frames = None if data.frames is None else torch.from_numpy(data.frames)
        self.rerank_all = bool(rerank_all)
        self.candidates = candidates
        self.rerank = self.manifest.get("index_kind") == "frames+rerank"
        self._lock = threading.Lock()
        self.ann_kind, self._ann = self._open_ann(data.vectors)  # FAISS keeps the only copy of the vectors
        self.context_length = int(model.cfg.text_context_length)

    # ----- construction -----
    @classmethod
    def open(cls, index_dir, checkpoint=None, device: str = "cpu", *, rerank_all: bool = False,
             candidates: int | None = None) -> "Searcher":
        """Open ``index_dir`` and load its model once (the checkpoint the manifest records, unless given).

        Raises IndexFormatError when the folder is not a readable index and IndexMismatchError when
        ``checkpoint`` is not the model the index was built with.
        """
        index_dir = Path(index_dir)
        data = _load_consistent(index_dir)
        recorded = data.manifest["model"]
        if checkpoint is None:
            checkpoint = recorded.get("checkpoint")
            if not checkpoint or not Path(checkpoint).exists():
                raise store.IndexFormatError(
                    f"the checkpoint this index was built with ({checkpoint}) is not there any more; "
                    f"pass the same checkpoint explicitly (--checkpoint)"
                )
        model, identity = load_checkpoint(checkpoint, device=device)
        check_same_model(recorded, identity, index_dir)
        return cls(index_dir, data, model, device=device, rerank_all=rerank_all, candidates=candidates)

    def _open_ann(self, vectors):
        from .ann import build_ann, load_ann, resolve_params

        ann = self.manifest.get("ann") or {}
        kind = ann.get("kind", "flat")
        n = len(self.entries)
        if kind != "flat" and ann.get("file") and ann.get("count") == n:
            path = self.index_dir / ann["file"]
            try:
                return kind, load_ann(path, kind, ann.get("params") or resolve_params(kind, ann.get("requested"), n))
            except RuntimeError as exc:
                raise store.IndexFormatError(f"FAISS index {path} is unreadable: {exc}") from exc
        # exact search (or an ANN structure not built yet by an interrupted run): flat inner product
        return "flat", build_ann(np.ascontiguousarray(vectors, dtype=np.float32), "flat")

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
        import torch

        with self._lock, torch.no_grad():
            tokens = self.model.tokenize([text]).to(self.device)
            return self.model.encode_text(tokens).float().cpu().numpy()

    def search(self, query: str, k: int = 10) -> SearchResult:
        t0 = time.perf_counter()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        if not 1 <= int(k) <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
        k = int(k)
        cleaned, notes = clean_query(query)
        num_tokens = self.model.tokenizer.num_tokens(cleaned)
        truncated = num_tokens > self.context_length
        if truncated:
            notes.append(f"query has {num_tokens} tokens; the model reads only the first {self.context_length} "
                         f"(its text context), the rest was ignored")
        n = len(self.entries)
        if n == 0:
            notes.append("the index is empty")
            return SearchResult(cleaned, [], (time.perf_counter() - t0) * 1e3, truncated, num_tokens, notes)
        if k > n:
            notes.append(f"k={k} but the index holds {n} video(s)")
            k = n
        q = self.encode_query(cleaned)
        if self.rerank:
            rows, scores = self._rerank(q, k, notes)
        else:
            from .ann import search_ann

            s, r = search_ann(self._ann, q, k)
            keep = r[0] >= 0
            rows, scores = r[0][keep], s[0][keep]
        hits = [Hit(self.entries[i].id, self.entries[i].video_id, self.entries[i].path, float(sc)) for i, sc in zip(rows, scores)]
        return SearchResult(cleaned, hits, (time.perf_counter() - t0) * 1e3, truncated, num_tokens, notes)

    def _rerank(self, q: np.ndarray, k: int, notes: list[str]):
        import torch

        from .ann import search_ann

        n = len(self.entries)
        c = n if self.rerank_all else min(n, max(k, self.candidates or max(100, 10 * k)))
        if c < n:
            s, r = search_ann(self._ann, q, c)
            cand = r[0][r[0] >= 0]
            notes.append(f"X-Pool: re-ranked the top {len(cand)} of {n} videos by mean-pooled similarity")
        else:
            cand = np.arange(n)
        with self._lock, torch.no_grad():
            frames = self._frames[torch.as_tensor(cand, dtype=torch.long)].to(self.device)
            scores = self.model.score(torch.from_numpy(q).to(self.device), frames)[0].float().cpu().numpy()
        order = np.argsort(-scores, kind="stable")[:k]
        return cand[order], scores[order]


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
