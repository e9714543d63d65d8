"""Offline index and online search over your own videos.

    from hybridtower.index import build_index, IndexOptions, Searcher
    summary = build_index(["my_videos/"], "my_index", checkpoint="runs/pig")   # incremental, resumable
    hits = Searcher.open("my_index").search("a red ball bounces", k=5).hits
    report = verify_index("my_index")                                          # full integrity check

Modules: :mod:`.store` (on-disk layout, manifest schema, checksums, commit protocol), :mod:`.verify` (full
integrity check), :mod:`.scan` (files and fingerprints), :mod:`.identity` (model identity),
:mod:`.builder` (an index run: plan, repair, encode, commit), :mod:`.options` (run options, summary,
exit codes), :mod:`.session` (the commit session), :mod:`.encoding` (decode + encode loop),
:mod:`.workers` (decoding workers die with their parent), :mod:`.shards` (torchrun shards, merge),
:mod:`.faults` (crash-test fault injection), :mod:`.ann` (FAISS), :mod:`.searcher` (queries).
Heavy imports (torch, faiss, av) happen inside functions.
"""

from .builder import build_index, merge_shards
from .options import EXIT_NO_VIDEOS, EXIT_OK, EXIT_SKIPPED, IndexOptions, IndexRunSummary
from .scan import INDEX_EXTENSIONS
from .searcher import Hit, QueryError, Searcher, SearchResult, clean_query
from .store import IndexFormatError, IndexLockedError, IndexMismatchError, read_manifest
from .verify import VerifyReport, verify_index

__all__ = [
    "EXIT_OK", "EXIT_SKIPPED", "EXIT_NO_VIDEOS", "IndexOptions", "IndexRunSummary", "build_index", "merge_shards",
    "INDEX_EXTENSIONS", "Hit", "QueryError", "Searcher", "SearchResult", "clean_query",
    "IndexFormatError", "IndexLockedError", "IndexMismatchError", "read_manifest", "VerifyReport", "verify_index",
]
