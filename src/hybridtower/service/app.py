"""The FastAPI app: ``create_app(searcher)`` exposes one already opened searcher over HTTP.

Routes (GET and HEAD; details and the JSON shapes in docs/service.md):

- ``/``                          the web page (plain HTML/CSS/JS from ``static/``, no external resources)
- ``/search?q=TEXT&k=N&offset=M``  JSON results; odd queries get 400 or a 200 with notes, never a 500
- ``POST /search/image?k=N``     search by an example image (the raw image as the body, ``Content-Type: image/*``)
- ``/similar/{id}?start=S&k=N``  "more like this": that video's (window's) vector as the query
- ``/videos/{id}``               the indexed file (HTTP range requests supported, so players can seek)
- ``/videos/{id}/playback``      JSON: play the original or a preview (browsers cannot play every file)
- ``/videos/{id}/preview``       a browser-playable H.264/MP4 preview, made on first request (:mod:`.previews`)
- ``/videos/{id}/thumbnail``     JPEG of the middle frame, generated lazily and cached on disk
- ``/examples``                  example queries drawn from the collection's own captions (:mod:`.examples`)
- ``/healthz``                   liveness plus the index size and model name
- ``/docs``, ``/openapi.json``   read-only API docs, served locally (:mod:`.apidocs`)

Every hit is ``Hit.to_public_dict()`` (the CLI's ``search --json`` emits the same) plus the page's fields
``rank``, ``name`` and URLs (docs/service.md, "The hit schema").

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
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..core.display import printable
from ..core.timefmt import parse_time
from . import apidocs
from .examples import example_queries
from .batching import DEFAULT_CACHE_SIZE, DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS, FifoLock, QueryBatcher, VectorCache
from .files import DescriptorFileResponse, NotServable, OpenedVideo, open_indexed, real_roots
from .middleware import DroppedConnectionGuard, HostCheck, default_hosts
from .previews import DEFAULT_MAX_BYTES as DEFAULT_PREVIEW_MAX_BYTES
from .previews import DEFAULT_MAX_HEIGHT as DEFAULT_PREVIEW_MAX_HEIGHT
from .previews import DEFAULT_MAX_SECONDS as DEFAULT_PREVIEW_MAX_SECONDS
from .previews import PreviewCache, PreviewError
from .queries import DEFAULT_MAX_QUERY_CHARS, EmptyQuery, clean_query
from .reload import LiveSearcher
from .thumbnails import ThumbnailCache, ThumbnailError

log = logging.getLogger("hybridtower.service")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {  # the only static files served (name -> media type)
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
DEFAULT_MAX_IMAGE_BYTES = 16 << 20  # largest image upload (bytes)
MAX_RANKED = 1000  # offset + k never exceeds this (the searcher's own bound)
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

    ``search`` returns an object with ``hits`` (``hybridtower.index.searcher.Hit``: its ``to_public_dict()``
    is the hit schema), ``took_ms``, ``truncated``, ``num_tokens`` and ``notes``; ``entry(id)`` returns the indexed row
    (``path``, ``video_id``, ``size``, ``mtime_ns``) or None; ``manifest["roots"]`` lists the indexed
    folders (files outside them are never served). Optional: ``encode_queries(texts)`` and
    ``search(..., query_vector=v)`` (batching); ``vector(id, start=)``, ``rows_of(id)`` and
    ``search_vector(v, k, exclude_id=)`` (``/similar``, through ``index.image_query.similar``); ``index_dir``
    and ``open`` (following new generations).
    """

    manifest: dict

    def search(self, query: str, k: int = 10) -> Any: ...

    def entry(self, id: int) -> Any: ...

    def __len__(self) -> int: ...


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
    preview_dir: str | Path | None = None,
    preview_max_seconds: float = DEFAULT_PREVIEW_MAX_SECONDS,
    preview_max_height: int = DEFAULT_PREVIEW_MAX_HEIGHT,
    preview_max_bytes: int = DEFAULT_PREVIEW_MAX_BYTES,
    preview_workers: int = 1,
    preview_queue: int = 8,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
):
    """Build the app around ``searcher`` (already opened: the model is not loaded here).

    ``thumbnail_dir``: where thumbnails are cached (default: a temporary folder for this process).
    ``max_k``: larger ``k`` values are lowered to it (with a note). ``serialize``: run one search at a
    time when not batching, in the order the requests came (a FIFO lock: the model already uses every
    core for one query; this also protects searchers that are not thread-safe). ``allowed_hosts``: the ``Host`` names answered (default: loopback names).
    ``batching``: encode the queries of concurrent requests together (needs ``searcher.encode_queries``;
    see :mod:`hybridtower.service.batching`); ``query_cache``: LRU size of query vectors (0 = off).
    ``reopen``: a callable returning a freshly opened searcher, called when the index gets a new
    generation (checked at most every ``reload_interval_s`` seconds; default for a real ``Searcher``:
    ``Searcher.open`` of its folder; a negative interval turns following off).
    ``preview_dir``: where browser-playable previews are cached (default: a temporary folder for this
    process; ``hybridtower serve`` passes a per-user cache folder; never inside the index folder, whose
    garbage collector removes unknown files); ``preview_workers`` previews are made at once, at most
    ``preview_queue`` more wait (others get 503). ``max_image_bytes``: largest image upload.
    """
    import tempfile

    from ..index import image_query  # the index package: image search and "more like this"
    from ..index.searcher import QueryError
    from ..index.searcher import clean_query as searcher_clean  # the text the searcher encodes

    if thumbnail_dir is None:
        thumbnail_dir = Path(tempfile.mkdtemp(prefix="hybridtower-thumbs-"))
    if preview_dir is None:
        preview_dir = Path(tempfile.mkdtemp(prefix="hybridtower-previews-"))
    thumbs = ThumbnailCache(thumbnail_dir, size=thumbnail_size, failure_ttl_s=thumbnail_failure_ttl_s)
    previews = PreviewCache(preview_dir, max_seconds=preview_max_seconds, max_height=preview_max_height,
                            max_bytes=preview_max_bytes)
    preview_limiter = anyio.CapacityLimiter(max(1, int(preview_workers)))
    preview_waiting = [0]
    examples_cache: dict = {}
    search_lock = FifoLock() if serialize else None  # unbatched: one search at a time, first come first served
    batched_in_flight = [0]  # searches now waiting for the batcher (the event loop's count: no lock needed)
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{TITLE}}", _html_escape(title))
    index_dir = getattr(searcher, "index_dir", None)
    if reopen is None and index_dir is not None and callable(getattr(type(searcher), "open", None)):
        reopen = _default_reopen(searcher)
    live = LiveSearcher(searcher, index_dir if reopen is not None else None, reopen, reload_interval_s)
    batcher = QueryBatcher(batch_window_ms, max_batch) if batching else None
    cache = VectorCache(query_cache) if query_cache and query_cache > 0 else None
    roots_cache: dict[int, tuple] = {}  # id(manifest) -> (manifest, real roots)

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url="/openapi.json", redirect_slashes=False,
                  description="Text-to-video search over a hybridtower index. Hits follow one schema "
                              "(docs/service.md, 'The hit schema'); errors are {\"error\", \"detail\"}.")
    app.state.live = live
    app.state.thumbnails = thumbs
    app.state.previews = previews
    app.state.batcher = batcher
    app.state.query_cache = cache
    app.state.search_lock = search_lock  # unbatched searches (FifoLock), None when not serialized
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
        """GET and HEAD on ``path``; only GET appears in the OpenAPI schema (one operation per route)."""
        def register(fn):
            app.api_route(path, methods=["GET"], **kw)(fn)
            app.api_route(path, methods=["HEAD"], **{**kw, "include_in_schema": False})(fn)
            return fn

        return register

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

    def search_alone(s, text: str, k: int, key):
        """One search on its own (unbatched): the cached vector, else the searcher encodes it."""
        if key is None:
            return s.search(text, k=k)
        vector = cache.get(key)
        if vector is None:
            vector = s.encode_queries([key[1]])[0]
            cache.put(key, vector)
        return s.search(text, k=k, query_vector=vector)

    async def encode_and_search(s, text: str, k: int):
        """Search ``text``: its vector from the cache or encoded in a batch with concurrent requests (ranked
        in the batcher's worker right after, awaited here on the event loop: no thread of the pool is
        held), else on its own in the thread pool, one at a time in arrival order (``serialize``)."""
        key = None
        if _can_batch(s) and (batcher is not None or cache is not None):
            encoded_text, _ = searcher_clean(text)
            key = (_model_key(s), encoded_text)
        if key is not None and batcher is not None:
            vector = cache.get(key) if cache is not None else None
            if vector is None:
                def finish(v):
                    if cache is not None:
                        cache.put(key, v)
                    return s.search(text, k=k, query_vector=v)

                # with no other search in flight nobody can share this encode soon: no window (one user
                # does not pay the batching window on every query)
                batched_in_flight[0] += 1
                try:
                    return await batcher.aencode(s, encoded_text, finish, alone=batched_in_flight[0] == 1)
                finally:
                    batched_in_flight[0] -= 1
            return await run_in_threadpool(s.search, text, k=k, query_vector=vector)
        if search_lock is None:
            return await run_in_threadpool(search_alone, s, text, k, key)
        async with search_lock:  # the thread pool call finishes before the lock is released, even if cancelled
            return await run_in_threadpool(search_alone, s, text, k, key)

    def whole_number(params, name: str, code: str, expected: str) -> int | None:
        """The integer parameter ``name`` (None when absent or blank); _BadRequest ``code`` saying
        ``{name} must be {expected}`` when it is not a whole number."""
        raw = params.get(name)
        if raw is None or raw.strip() == "":
            return None
        try:
            return int(raw.strip())
        except ValueError:
            raise _BadRequest(code, f"{name} must be {expected}, got '{printable(raw[:40])}'") from None

    def parse_k_offset(params) -> tuple[int, int, list[str]]:
        """(k, offset, notes) from ``k`` and ``offset``; raises _BadRequest."""
        notes: list[str] = []
        k = whole_number(params, "k", "invalid_k", f"a whole number between 1 and {max_k}")
        if k is None:
            k = default_k
        elif k < 1:
            raise _BadRequest("invalid_k", f"k must be between 1 and {max_k}, got {k}")
        elif k > max_k:
            notes.append(f"k lowered from {k} to the maximum {max_k}")
            k = max_k
        offset = whole_number(params, "offset", "invalid_offset", "a whole number >= 0")
        if offset is None:
            offset = 0
        else:
            if offset < 0:
                raise _BadRequest("invalid_offset", f"offset must be >= 0, got {offset}")
            if offset + k > MAX_RANKED:
                raise _BadRequest("invalid_offset", f"offset + k must be at most {MAX_RANKED} (results are ranked "
                                                    f"up to that depth), got {offset + k}")
        return k, offset, notes

    def parse_start(params) -> float | None:
        raw = params.get("start")
        if raw is None or raw.strip() == "":
            return None
        try:
            value = parse_time(raw)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value > 1e7:
            raise _BadRequest("invalid_start", f"start must be a time (seconds, MM:SS or HH:MM:SS), "
                                               f"got '{printable(raw[:40])}'")
        return value

    def result_json(s, result, *, query: str, k: int, offset: int, notes: list[str], t0: float, cut: bool = False,
                    extra: dict | None = None) -> JSONResponse:
        truncated = bool(getattr(result, "truncated", False))
        searcher_notes = [str(n) for n in (getattr(result, "notes", None) or [])]
        num_tokens = getattr(result, "num_tokens", None)
        if truncated and not any("truncat" in n.lower() or "token" in n.lower() for n in searcher_notes):
            searcher_notes.append(
                "query truncated to the model's text context"
                + (f" (it needs {num_tokens} tokens)" if num_tokens else "")
            )
        notes = notes + searcher_notes
        ranked = list(getattr(result, "hits", []) or [])
        hits = [_hit_json(rank, h) for rank, h in enumerate(ranked[offset:offset + k], start=offset + 1)]
        # the result's own threshold (None for image/example queries: it is calibrated on text queries)
        threshold = (result.weak_threshold if hasattr(result, "weak_threshold")
                     else getattr(s, "weak_threshold", None))
        top_weak = bool(ranked) and bool(getattr(ranked[0], "weak", False))
        return JSONResponse({
            "query": query,
            "k": k,
            "offset": offset,
            "hits": hits,
            "has_more": len(ranked) > offset + k or (len(ranked) == offset + k and offset + k < min(len(s), MAX_RANKED)),
            "took_ms": round((time.perf_counter() - t0) * 1000.0, 3),
            "search_ms": _float_or_none(getattr(result, "took_ms", None)),
            "truncated": truncated or cut,
            "num_tokens": num_tokens if isinstance(num_tokens, int) else None,
            "notes": notes,
            "weak_threshold": _float_or_none(threshold, 6),
            "no_close_match": top_weak,
            "total_videos": len(s),
            **(extra or {}),
        })

    @get_and_head("/search")
    async def search(request: Request):
        """Text search. Query parameters: `q` (the text), `k` (results per page, default and maximum set at
        start), `offset` (skip this many ranked results: paging; offset + k <= 1000). Answers the result
        object with `hits` in the hit schema; odd queries get 400 or a 200 with notes."""
        t0 = time.perf_counter()
        s = live.current()
        params = request.query_params
        try:
            cq = clean_query(params.get("q"), max_chars=max_query_chars)
        except EmptyQuery as exc:
            return error(400, "empty_query", str(exc))
        notes = list(cq.notes)
        try:
            k, offset, k_notes = parse_k_offset(params)
        except _BadRequest as exc:
            return error(400, exc.code, exc.detail)
        notes.extend(k_notes)
        try:
            result = await encode_and_search(s, cq.text, offset + k)
        except QueryError as exc:
            return error(400, "invalid_query", str(exc))
        except EmptyQuery as exc:
            return error(400, "empty_query", str(exc))
        return result_json(s, result, query=cq.text, k=k, offset=offset, notes=notes, t0=t0, cut=cq.cut)

    @app.post("/search/image")
    async def search_image(request: Request):
        """Search by an example image: the raw image file as the request body with `Content-Type: image/*`
        (JPEG, PNG, WebP, ...; at most the server's image size limit). Query parameters `k`, `offset` as for
        `/search`. Answers the same result object as `/search`."""
        t0 = time.perf_counter()
        s = live.current()
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if not ctype.startswith("image/"):
            return error(415, "unsupported_media_type", "send the image file itself as the body, with a "
                                                        "Content-Type of image/* (e.g. image/jpeg)")
        try:
            k, offset, notes = parse_k_offset(request.query_params)
        except _BadRequest as exc:
            return error(400, exc.code, exc.detail)
        declared = request.headers.get("content-length")
        if declared and declared.strip().isdigit() and int(declared) > max_image_bytes:
            return error(413, "image_too_large", f"the image is larger than the limit of {max_image_bytes:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_image_bytes:
                return error(413, "image_too_large", f"the image is larger than the limit of {max_image_bytes:,} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            return error(400, "empty_image", "the request body is empty: send the image file as the body")
        try:
            result = await run_in_threadpool(image_query.search_image, s, data, offset + k)
        except QueryError as exc:
            return error(400, "invalid_image", str(exc))
        return result_json(s, result, query=getattr(result, "query", "") or "an example image", k=k, offset=offset,
                           notes=notes, t0=t0)

    @get_and_head("/similar/{vid}")
    async def similar(vid: str, request: Request):
        """"More like this": the stored vector of video `vid` (of its window starting at `start` seconds,
        when given) is the query; the video itself is left out. Query parameters `start`, `k`, `offset`."""
        t0 = time.perf_counter()
        s = live.current()
        if not _ID.fullmatch(vid):
            return error(404, "not_found", f"no video with id '{printable(vid[:40])}': ids are non-negative integers")
        vid_int = int(vid)
        entry = s.entry(vid_int) if callable(getattr(s, "entry", None)) else None
        if entry is None:
            return error(404, "not_found", f"no video with id {vid_int} in this index")
        try:
            start = parse_start(request.query_params)
            k, offset, notes = parse_k_offset(request.query_params)
        except _BadRequest as exc:
            return error(400, exc.code, exc.detail)
        try:
            result = await run_in_threadpool(image_query.similar, s, vid_int, start, offset + k)
        except QueryError as exc:  # e.g. no window of this video at `start`: the parameter is wrong, 400
            return error(400, "invalid_query", str(exc))
        name = Path(getattr(entry, "video_id", "") or str(vid_int)).name
        label = f"more like {printable(name)}" + (f" at {_clock(start)}" if start is not None else "")
        return result_json(s, result, query=label, k=k, offset=offset, notes=notes, t0=t0,
                           extra={"source": {"id": vid_int, "start": start}})

    @get_and_head("/videos/{vid}")
    def video(vid: str):
        """The indexed file itself (range requests supported). Only ids of the index; never a path."""
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

    @get_and_head("/videos/{vid}/playback")
    def playback(vid: str, request: Request):
        """How to play video `vid` in a browser, starting at `start` seconds: `{"kind": "original"|"preview"
        |"none", "url", "offset", "start", "reason", "video_url"}`. A preview's time 0 is `offset` seconds
        of the original; "none" means the file cannot be decoded (use `video_url` to download it)."""
        try:
            start = parse_start(request.query_params)
        except _BadRequest as exc:
            return error(400, exc.code, exc.detail)
        s = live.current()
        opened = open_video(s, vid)
        hid = int(vid)
        video_url = f"/videos/{hid}"
        try:
            plan = previews.plan(opened, s.entry(hid), start)
        except PreviewError as exc:
            return {"id": hid, "kind": "none", "url": None, "offset": 0.0, "start": start, "reason": str(exc),
                    "video_url": video_url}
        finally:
            opened.close()
        if plan.kind == "original":
            url = video_url
        else:
            url = f"/videos/{hid}/preview" + (f"?from={plan.offset:g}" if plan.offset else "")
        return {"id": hid, "kind": plan.kind, "url": url, "offset": plan.offset, "start": start,
                "reason": plan.reason, "video_url": video_url}

    @get_and_head("/videos/{vid}/preview")
    async def preview(vid: str, request: Request):
        """A browser-playable preview (silent H.264/MP4, at most 480 lines) of video `vid` from `from`
        seconds (a multiple of 30; default 0), made on first request and cached. 422 when the file cannot
        be decoded, 503 when too many previews are being made."""
        raw = request.query_params.get("from")
        start = 0.0
        if raw is not None and raw.strip() != "":
            try:
                start = parse_time(raw)
            except ValueError:
                start = -1.0
            if not previews.valid_segment(start) or start > 1e7:
                return error(400, "invalid_from", "from must be a multiple of 30 seconds (as /playback gives it)")
        s = live.current()
        opened = await run_in_threadpool(open_video, s, vid)
        try:
            entry = s.entry(int(vid))
            path = previews.cached(opened, entry, start)
            if path is None:
                if preview_waiting[0] >= preview_queue + preview_limiter.total_tokens:
                    return error(503, "busy", "too many previews are being made; try again shortly",
                                 headers={"Retry-After": "5"})
                preview_waiting[0] += 1
                try:
                    path = await anyio.to_thread.run_sync(previews.get, opened, entry, start, limiter=preview_limiter)
                finally:
                    preview_waiting[0] -= 1
        except PreviewError as exc:
            return error(422, "preview_failed", str(exc))
        finally:
            opened.close()
        try:
            st = os.stat(path)
        except OSError:
            return error(503, "busy", "the preview was just removed from the cache; try again",
                         headers={"Retry-After": "1"})
        return FileResponse(path, stat_result=st, media_type=previews.encoder()[2],
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"})

    @get_and_head("/videos/{vid}/thumbnail")
    def thumbnail(vid: str):
        """JPEG of the middle frame of video `vid` (made on first request, cached)."""
        opened = open_video(live.current(), vid)
        try:
            data = thumbs.get(opened)
        except ThumbnailError as exc:
            return error(404, "thumbnail_unavailable", str(exc))
        finally:
            opened.close()
        return Response(data, media_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"})

    @get_and_head("/examples")
    def examples():
        """Example queries drawn from the indexed collection's own captions (`[]` when it has none)."""
        s = live.current()
        key = id(getattr(s, "manifest", None))
        hit = examples_cache.get("value")
        if hit is None or hit[0] != key or hit[1] is not getattr(s, "manifest", None):
            try:
                found = example_queries(s)
            except Exception:  # never fail the page over examples
                log.warning("reading example captions failed", exc_info=True)
                found = []
            hit = examples_cache["value"] = (key, getattr(s, "manifest", None), found)
        return {"examples": hit[2]}

    @get_and_head("/docs", include_in_schema=False)
    def docs():
        return HTMLResponse(apidocs.docs_page(title), headers={**apidocs.DOCS_HEADERS, "Cache-Control": "no-cache"})

    @get_and_head("/docs/assets/{name}", include_in_schema=False)
    def docs_asset(name: str):
        folder = apidocs.assets_dir()
        if folder is None or name not in apidocs.ASSETS:
            raise StarletteHTTPException(404, "no such file")
        return FileResponse(folder / name, media_type=apidocs.ASSETS[name],
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"})

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


def _float_or_none(value, digits: int = 3) -> float | None:
    try:
        return None if value is None else round(float(value), digits)
    except (TypeError, ValueError):
        return None


class _BadRequest(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def _clock(seconds: float | None) -> str:
    """``75.5`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    if seconds is None:
        return ""
    t = int(seconds)
    h, m, sec = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _hit_json(rank: int, hit) -> dict:
    """THE hit schema (``Hit.to_public_dict()``, as ``search --json``) plus what the page needs: ``rank``,
    ``name`` (base name) and URLs (no server path)."""
    out = hit.to_public_dict()
    hid = int(out["id"])
    start = out.get("start")
    at = "" if start is None else f"?start={float(start):g}"
    path = getattr(hit, "path", None)  # server side: only its base name is shown
    name = os.path.basename(path) if path else str(out.get("video_id") or hid).replace("\\", "/").rpartition("/")[2]
    name = name or str(hid)
    out.update({
        "rank": rank,
        "name": name,
        "video_url": f"/videos/{hid}",
        "thumbnail_url": f"/videos/{hid}/thumbnail",
        "playback_url": f"/videos/{hid}/playback{at}",
        "similar_url": f"/similar/{hid}{at}",
    })
    return out


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


__all__: Sequence[str] = ["create_app", "SearcherLike", "STATIC_DIR"]
