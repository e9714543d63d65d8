"""HTTP service over an index: ``create_app(searcher)`` (FastAPI), the web page, thumbnails, previews.

``hybridtower serve INDEX_DIR`` opens a :class:`hybridtower.index.searcher.Searcher` once and runs
this app with uvicorn. See docs/service.md for the routes, JSON shapes, the query rules, batching,
following the index, and the Reliability section (threat model and guarantees).
"""

from .app import STATIC_DIR, SearcherLike, create_app
from .batching import QueryBatcher, VectorCache
from .previews import PreviewCache, PreviewError, browser_playable, default_preview_dir
from .queries import DEFAULT_MAX_QUERY_CHARS, CleanQuery, EmptyQuery, clean_query
from .reload import LiveSearcher
from .thumbnails import ThumbnailCache, ThumbnailError, default_cache_dir, middle_frame_jpeg

__all__ = [
    "create_app",
    "SearcherLike",
    "STATIC_DIR",
    "clean_query",
    "CleanQuery",
    "EmptyQuery",
    "DEFAULT_MAX_QUERY_CHARS",
    "ThumbnailCache",
    "ThumbnailError",
    "default_cache_dir",
    "middle_frame_jpeg",
    "QueryBatcher",
    "VectorCache",
    "LiveSearcher",
    "PreviewCache",
    "PreviewError",
    "browser_playable",
    "default_preview_dir",
]
