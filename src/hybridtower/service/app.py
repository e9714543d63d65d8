"""The FastAPI app: ``create_app(searcher)`` exposes one already opened searcher over HTTP.

Routes (all GET; details and the JSON shapes in docs/service.md):

- ``/``                        the web page (plain HTML/CSS/JS from ``static/``, no external resources)
- ``/search?q=TEXT&k=N``       JSON results; odd queries get 400 or a 200 with notes, never a 500
- ``/videos/{id}``             the indexed file (HTTP range requests supported, so players can seek)
- ``/videos/{id}/thumbnail``   JPEG of the middle frame, generated lazily and cached on disk
- ``/healthz``                 liveness plus the index size and model name

Only files that are in the index can be served: URLs carry integer ids, never paths, and every id is
looked up in the searcher (``video_path(id)``); anything else is a 404. The app holds no model logic: the
searcher is opened once by the caller (``hybridtower serve``) and shared by all requests.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .queries import DEFAULT_MAX_QUERY_CHARS, EmptyQuery, clean_query
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
    ``took_ms``, ``truncated``, ``num_tokens`` and ``notes``; ``video_path(id)`` returns the file of an
    indexed video or None.
    """

    def search(self, query: str, k: int = 10) -> Any: ...

    def video_path(self, id: int) -> Path | None: ...

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
):
    """Build the app around ``searcher`` (already opened: the model is not loaded here).

    ``thumbnail_dir``: where thumbnails are cached (default: a temporary folder for this process).
    ``max_k``: larger ``k`` values are lowered to it (with a note). ``serialize``: run one search at a
    time (the model already uses every core for one query; this also protects searchers that are not
    thread-safe).
    """
    if thumbnail_dir is None:
        import tempfile

        thumbnail_dir = Path(tempfile.mkdtemp(prefix="hybridtower-thumbs-"))
    thumbs = ThumbnailCache(thumbnail_dir, size=thumbnail_size)
    query_errors = _query_error_types()
    search_lock = threading.Lock() if serialize else None
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{TITLE}}", _html_escape(title))

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.searcher = searcher
    app.state.thumbnails = thumbs
    app.state.started = time.time()

    def error(status: int, code: str, detail: str, headers: dict | None = None):
        return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else "http_error"
        return error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error(400, "invalid_request", "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # pragma: no cover - a bug if reached
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    def lookup(vid: str) -> Path:
        """The file of indexed video ``vid`` or a 404: ids only, never paths."""
        if not _ID.fullmatch(vid):
            raise StarletteHTTPException(404, f"no video with id {vid[:40]!r}: ids are non-negative integers")
        path = searcher.video_path(int(vid))
        if path is None:
            raise StarletteHTTPException(404, f"no video with id {int(vid)} in this index")
        path = Path(path)
        if not path.is_file():
            raise StarletteHTTPException(404, f"video {int(vid)} is in the index but its file is gone")
        return path

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        if name not in STATIC_FILES:
            raise StarletteHTTPException(404, "no such static file")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz():
        return {
            "status": "ok",
            "videos": len(searcher),
            "uptime_s": round(time.time() - app.state.started, 3),
            "max_k": max_k,
            "default_k": default_k,
            "max_query_chars": max_query_chars,
            **_manifest_summary(searcher),
        }

    @app.get("/search")
    def search(request: Request):
        t0 = time.perf_counter()
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
                return error(400, "invalid_k", f"k must be a whole number between 1 and {max_k}, got {k_raw[:40]!r}")
            if k < 1:
                return error(400, "invalid_k", f"k must be between 1 and {max_k}, got {k}")
            if k > max_k:
                notes.append(f"k lowered from {k} to the maximum {max_k}")
                k = max_k
        try:
            if search_lock is not None:
                with search_lock:
                    result = searcher.search(cq.text, k=k)
            else:
                result = searcher.search(cq.text, k=k)
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
            "total_videos": len(searcher),
        })

    @app.api_route("/videos/{vid}", methods=["GET", "HEAD"])
    def video(vid: str):
        path = lookup(vid)
        media_type = VIDEO_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media_type, content_disposition_type="inline",
                            filename=path.name, headers={"X-Content-Type-Options": "nosniff",
                                                         "Cache-Control": "private, max-age=60"})

    @app.get("/videos/{vid}/thumbnail")
    def thumbnail(vid: str):
        path = lookup(vid)
        try:
            thumb = thumbs.get(path)
        except ThumbnailError as exc:
            return error(404, "thumbnail_unavailable", str(exc))
        return FileResponse(thumb, media_type="image/jpeg",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300"})

    return app


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
