"""The FastAPI app: ``create_app(searcher)`` exposes one already opened searcher over HTTP.

Routes (GET and HEAD; details and the JSON shapes in docs/service.md):

- ``/``                        the web page (plain HTML/CSS/JS from ``static/``, no external resources)
- ``/search?q=TEXT&k=N``       JSON results; odd queries get 400 or a 200 with notes, never a 500
- ``/videos/{id}``             the indexed file (HTTP range requests supported, so players can seek)
- ``/videos/{id}/thumbnail``   JPEG of the middle frame, generated lazily and cached on disk
- ``/healthz``                 liveness plus the index size and model name

Only files that are in the index can be served: URLs carry integer ids, never paths, and every id is
looked up in the searcher (``entry(id)``); the file is then opened once and served from that descriptor
only if it is a regular file inside an indexed root with the size and time the index recorded
(:mod:`.files`); anything else is a 404. Requests must name an allowed ``Host`` (:mod:`.middleware`).
Errors never carry server paths: a 500 is a generic body (details in the server log). The app holds
no model logic: the searcher is opened by the caller (``hybridtower serve``), shared by all requests,
replaced when the index gets a new generation (:mod:`.reload`); concurrent queries are encoded in
batches (:mod:`.batching`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..core.display import printable
from .batching import DEFAULT_CACHE_SIZE, DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS, QueryBatcher, VectorCache
from .files import DescriptorFileResponse, NotServable, OpenedVideo, open_indexed, real_roots
from .middleware import DroppedConnectionGuard, HostCheck, default_hosts
from .queries import DEFAULT_MAX_QUERY_CHARS, EmptyQuery, clean_query
from .reload import LiveSearcher
from .thumbnails import ThumbnailCache, ThumbnailError

log = logging.getLogger("hybridtower.service")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {  # the only static files served (name -> media type)
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
VIDEO_MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".ogv": "video/ogg",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".ts": "video/mp2t",
    ".gif": "image/gif",
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ID = re.compile(r"[0-9]{1,12}")


@runtime_checkable
class SearcherLike(Protocol):
    """What the app needs from a searcher (``hybridtower.index.searcher.Searcher`` is one).

    ``search`` returns an object with ``hits`` (each with ``id``, ``video_id``, ``path``, ``score``),
    ``took_ms``, ``truncated``, ``num_tokens`` and ``notes``; ``entry(id)`` returns the indexed row
    (``path``, ``video_id``, ``size``, ``mtime_ns``) or None; ``manifest["roots"]`` lists the indexed
    folders (files outside them are never served). Optional: ``encode_queries(texts)`` and
    ``search(..., query_vector=v)`` (batching), ``index_dir`` and ``open`` (following new generations).
    """

    manifest: dict

    def search(self, query: str, k: int = 10) -> Any: ...

    def entry(self, id: int) -> Any: ...

    def __len__(self) -> int: ...


def _query_error_types() -> tuple[type[BaseException], ...]:
    """The searcher's "bad query" error, if the index package provides one."""
    try:
        from ..index.searcher import QueryError  # type: ignore[attr-defined]
    except Exception:  # the index package is optional for fakes in tests
        return ()
    return (QueryError,)


def _manifest_summary(searcher) -> dict:
    manifest = getattr(searcher, "manifest", None)
    if manifest is None:
        return {}
    if not isinstance(manifest, dict):
        to_dict = getattr(manifest, "to_dict", None)
        if callable(to_dict):
            manifest = to_dict()
        elif hasattr(manifest, "__dict__"):
            manifest = dict(vars(manifest))
        else:
            return {}
    out = {}
    for key in ("index_kind", "kind", "dim", "count", "generation", "package_version"):
        value = manifest.get(key)
        if isinstance(value, (str, int, float, bool)):
            out[key] = value
    model = manifest.get("model")
    if isinstance(model, dict):
        for key in ("name", "framework"):
            if isinstance(model.get(key), str):
                out[f"model_{key}"] = model[key]
    ann = manifest.get("ann")
    if isinstance(ann, dict) and isinstance(ann.get("kind"), str):
        out["ann"] = ann["kind"]
    for key in ("model_name", "framework"):  # flat manifests (fakes)
        if isinstance(manifest.get(key), str) and key not in out:
            out[key] = manifest[key]
    return out


def create_app(
    searcher: SearcherLike,
    *,
    thumbnail_dir: str | Path | None = None,
    thumbnail_size: int = 256,
    max_k: int = 100,
    default_k: int = 12,
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
    title: str = "hybridtower video search",
    serialize: bool = True,
    allowed_hosts: Sequence[str] | None = None,
    batching: bool = True,
    batch_window_ms: float = DEFAULT_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
    query_cache: int = DEFAULT_CACHE_SIZE,
    reopen: Callable[[], SearcherLike] | None = None,
    reload_interval_s: float = 2.0,
    thumbnail_failure_ttl_s: float = 30.0,
):
    """Build the app around ``searcher`` (already opened: the model is not loaded here).

    ``thumbnail_dir``: where thumbnails are cached (default: a temporary folder for this process).
    ``max_k``: larger ``k`` values are lowered to it (with a note). ``serialize``: run one search at a
    time when not batching (the model already uses every core for one query; this also protects searchers
    that are not thread-safe). ``allowed_hosts``: the ``Host`` names answered (default: loopback names).
    ``batching``: encode the queries of concurrent requests together (needs ``searcher.encode_queries``;
    see :mod:`hybridtower.service.batching`); ``query_cache``: LRU size of query vectors (0 = off).
    ``reopen``: a callable returning a freshly opened searcher, called when the index gets a new
    generation (checked at most every ``reload_interval_s`` seconds; default for a real ``Searcher``:
    ``Searcher.open`` of its folder; a negative interval turns following off).
    """
    if thumbnail_dir is None:
        import tempfile

        thumbnail_dir = Path(tempfile.mkdtemp(prefix="hybridtower-thumbs-"))
    thumbs = ThumbnailCache(thumbnail_dir, size=thumbnail_size, failure_ttl_s=thumbnail_failure_ttl_s)
    query_errors = _query_error_types()
    search_lock = threading.Lock() if serialize else None
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{TITLE}}", _html_escape(title))
    index_dir = getattr(searcher, "index_dir", None)
    if reopen is None and index_dir is not None and callable(getattr(type(searcher), "open", None)):
        reopen = _default_reopen(searcher)
    live = LiveSearcher(searcher, index_dir if reopen is not None else None, reopen, reload_interval_s)
    batcher = QueryBatcher(batch_window_ms, max_batch) if batching else None
    cache = VectorCache(query_cache) if query_cache and query_cache > 0 else None
    roots_cache: dict[int, tuple] = {}  # id(manifest) -> (manifest, real roots)

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.live = live
    app.state.thumbnails = thumbs
    app.state.batcher = batcher
    app.state.query_cache = cache
    app.state.started = time.time()
    app.state.allowed_hosts = tuple(allowed_hosts) if allowed_hosts is not None else default_hosts()

    def error(status: int, code: str, detail: str, headers: dict | None = None):
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    def trailing_slash_redirect(request: Request):
        """A relative redirect from ``/route/`` to ``/route`` when that is a route (never echoes Host)."""
        path = request.scope.get("path", "")
        if request.method not in ("GET", "HEAD") or len(path) < 2 or not path.endswith("/"):
            return None
        target = dict(request.scope, path=path.rstrip("/"))
        if not target["path"] or target["path"].startswith("//"):
            return None
        for route in app.router.routes:
            match, _ = route.matches(target)
            if match == Match.FULL:
                raw = request.scope.get("raw_path") or path.encode("utf-8")
                location = raw.rstrip(b"/").decode("latin-1")
                if not location.startswith("/") or location.startswith("//"):
                    return None
                query = request.scope.get("query_string") or b""
                if query:
                    location += "?" + query.decode("latin-1")
                return Response(status_code=307, headers={"Location": location})
        return None

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            redirect = trailing_slash_redirect(request)
            if redirect is not None:
                return redirect
        code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else "http_error"
        return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error(400, "invalid_request", "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        # the details (which may hold server paths) go to the server log only
        log.error("unhandled error on %s %s", request.method, printable(request.url.path), exc_info=exc)
        return error(500, "internal_error", "the server failed to answer this request; the details are in its log")

    def roots_of(s) -> tuple[str, ...]:
        manifest = getattr(s, "manifest", None)
        hit = roots_cache.get(id(manifest))
        if hit is None or hit[0] is not manifest:
            if len(roots_cache) > 8:
                roots_cache.clear()
            hit = roots_cache[id(manifest)] = (manifest, real_roots(manifest if isinstance(manifest, dict) else None))
        return hit[1]

    def open_video(s, vid: str) -> OpenedVideo:
        """The checked, open file of indexed video ``vid``, or a 404: ids only, never paths."""
        if not _ID.fullmatch(vid):
            raise StarletteHTTPException(404, f"no video with id '{printable(vid[:40])}': ids are non-negative integers")
        entry = s.entry(int(vid)) if callable(getattr(s, "entry", None)) else None
        if entry is None:
            raise StarletteHTTPException(404, f"no video with id {int(vid)} in this index")
        try:
            return open_indexed(int(vid), entry, roots_of(s))
        except NotServable as exc:
            raise StarletteHTTPException(404, str(exc)) from None

    def get_and_head(path: str, **kw):
        return app.api_route(path, methods=["GET", "HEAD"], **kw)

    @get_and_head("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    @get_and_head("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @get_and_head("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        if name not in STATIC_FILES:
            raise StarletteHTTPException(404, "no such static file")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @get_and_head("/healthz")
    def healthz():
        s = live.current()
        status = live.status()
        body = {
            "status": "degraded" if status.get("reload_error") else "ok",
            "videos": len(s),
            "uptime_s": round(time.time() - app.state.started, 3),
            "max_k": max_k,
            "default_k": default_k,
            "max_query_chars": max_query_chars,
            **_manifest_summary(s),
            "index": status,
            "batching": batcher.stats() if batcher is not None and _can_batch(s) else None,
            "query_cache": cache.stats() if cache is not None and _can_batch(s) else None,
        }
        return body

    def run_search(s, text: str, k: int, vector):
        kw = {} if vector is None else {"query_vector": vector}
        if search_lock is not None and vector is None:
            with search_lock:
                return s.search(text, k=k, **kw)
        return s.search(text, k=k, **kw)

    async def encode_and_search(s, text: str, k: int):
        """Search ``text``: its vector from the cache, else encoded in a batch with concurrent requests
        (ranked in the batcher's worker right after), else by the searcher itself (unbatched)."""
        if not _can_batch(s) or (batcher is None and cache is None):
            return await run_in_threadpool(run_search, s, text, k, None)
        from ..index.searcher import clean_query as searcher_clean  # the text the searcher would encode

        encoded_text, _ = searcher_clean(text)
        key = (_model_key(s), encoded_text)
        vector = cache.get(key) if cache is not None else None
        if vector is None and batcher is not None:
            def finish(v):
                if cache is not None:
                    cache.put(key, v)
                return run_search(s, text, k, v)

            return await batcher.aencode(s, encoded_text, finish)
        if vector is None:
            vector = (await run_in_threadpool(s.encode_queries, [encoded_text]))[0]
            cache.put(key, vector)
        return await run_in_threadpool(run_search, s, text, k, vector)

    @get_and_head("/search")
    async def search(request: Request):
        t0 = time.perf_counter()
        s = live.current()
        params = request.query_params
        try:
            cq = clean_query(params.get("q"), max_chars=max_query_chars)
        except EmptyQuery as exc:
            return error(400, "empty_query", str(exc))
        notes = list(cq.notes)
        k_raw = params.get("k")
        if k_raw is None or k_raw.strip() == "":
            k = default_k
        else:
            try:
                k = int(k_raw.strip())
            except ValueError:
                return error(400, "invalid_k", f"k must be a whole number between 1 and {max_k}, got "
                                               f"'{printable(k_raw[:40])}'")
            if k < 1:
                return error(400, "invalid_k", f"k must be between 1 and {max_k}, got {k}")
            if k > max_k:
                notes.append(f"k lowered from {k} to the maximum {max_k}")
                k = max_k
        try:
            result = await encode_and_search(s, cq.text, k)
        except query_errors as exc:  # type: ignore[misc]
            return error(400, "invalid_query", str(exc))
        except EmptyQuery as exc:
            return error(400, "empty_query", str(exc))
        truncated = bool(getattr(result, "truncated", False))
        searcher_notes = [str(n) for n in (getattr(result, "notes", None) or [])]
        num_tokens = getattr(result, "num_tokens", None)
        if truncated and not any("truncat" in n.lower() or "token" in n.lower() for n in searcher_notes):
            searcher_notes.append(
                "query truncated to the model's text context"
                + (f" (it needs {num_tokens} tokens)" if num_tokens else "")
            )
        notes.extend(searcher_notes)
        hits = [_hit_json(rank, h) for rank, h in enumerate(getattr(result, "hits", []) or [], start=1)]
        return JSONResponse({
            "query": cq.text,
            "k": k,
            "hits": hits,
            "took_ms": round((time.perf_counter() - t0) * 1000.0, 3),
            "search_ms": _float_or_none(getattr(result, "took_ms", None)),
            "truncated": truncated or cq.cut,
            "num_tokens": num_tokens if isinstance(num_tokens, int) else None,
            "notes": notes,
            "total_videos": len(s),
        })

    @get_and_head("/videos/{vid}")
    def video(vid: str):
        opened = open_video(live.current(), vid)
        try:
            media_type = VIDEO_MEDIA_TYPES.get(Path(opened.name).suffix.lower(), "application/octet-stream")
            return DescriptorFileResponse(opened, media_type=media_type, content_disposition_type="inline",
                                          filename=opened.name,
                                          headers={"X-Content-Type-Options": "nosniff",
                                                   "Cache-Control": "private, max-age=60"})
        except BaseException:
            opened.close()
            raise

    @get_and_head("/videos/{vid}/thumbnail")
    def thumbnail(vid: str):
        opened = open_video(live.current(), vid)
        try:
            data = thumbs.get(opened)
        except ThumbnailError as exc:
            return error(404, "thumbnail_unavailable", str(exc))
        finally:
            opened.close()
        return Response(data, media_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"})

    app.add_middleware(DroppedConnectionGuard)
    app.add_middleware(HostCheck, allowed_hosts=app.state.allowed_hosts)
    return app


def _can_batch(searcher) -> bool:
    return callable(getattr(searcher, "encode_queries", None))


def _model_key(searcher):
    """What identifies the text encoder of ``searcher`` (the same weights give the same vectors)."""
    manifest = getattr(searcher, "manifest", None)
    model = manifest.get("model") if isinstance(manifest, dict) else None
    if isinstance(model, dict) and model.get("weights_sha256"):
        return (model.get("config_hash"), model["weights_sha256"])
    return ("object", id(getattr(searcher, "model", searcher)))


def _default_reopen(searcher):
    """``Searcher.open`` of the same folder, device and re-rank options (the manifest's checkpoint)."""
    cls = type(searcher)
    index_dir = searcher.index_dir
    kw = {}
    device = getattr(searcher, "device", None)
    if device is not None:
        kw["device"] = str(device)
    for name in ("rerank_all", "candidates"):
        if hasattr(searcher, name):
            kw[name] = getattr(searcher, name)

    def reopen():
        return cls.open(index_dir, **kw)

    return reopen


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else round(float(value), 3)
    except (TypeError, ValueError):
        return None


def _hit_json(rank: int, hit) -> dict:
    hid = int(hit.id)
    path = getattr(hit, "path", None)
    return {
        "rank": rank,
        "id": hid,
        "video_id": str(getattr(hit, "video_id", hid)),
        "name": Path(path).name if path else str(getattr(hit, "video_id", hid)),
        "score": round(float(hit.score), 6),
        "video_url": f"/videos/{hid}",
        "thumbnail_url": f"/videos/{hid}/thumbnail",
    }


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


__all__: Sequence[str] = ["create_app", "SearcherLike", "STATIC_DIR"]
