"""Offline index and online search over your own videos.

    from hybridtower.index import build_index, IndexOptions, Searcher
    summary = build_index(["my_videos/"], "my_index", checkpoint="runs/pig")   # incremental, resumable
    hits = Searcher.open("my_index").search("a red ball bounces", k=5).hits

Modules: :mod:`.store` (on-disk layout and commit protocol), :mod:`.scan` (files and fingerprints),
:mod:`.identity` (model identity), :mod:`.builder` (indexing, torchrun shards, merge), :mod:`.ann`
(FAISS), :mod:`.searcher` (queries). Heavy imports (torch, faiss, av) happen inside functions.
"""

from .builder import EXIT_OK, EXIT_SKIPPED, IndexOptions, IndexRunSummary, build_index, merge_shards
from .scan import INDEX_EXTENSIONS
from .searcher import Hit, QueryError, Searcher, SearchResult, clean_query
from .store import IndexFormatError, IndexLockedError, IndexMismatchError, read_manifest

__all__ = [
    "EXIT_OK", "EXIT_SKIPPED", "IndexOptions", "IndexRunSummary", "build_index", "merge_shards",
    "INDEX_EXTENSIONS", "Hit", "QueryError", "Searcher", "SearchResult", "clean_query",
    "IndexFormatError", "IndexLockedError", "IndexMismatchError", "read_manifest",
]
