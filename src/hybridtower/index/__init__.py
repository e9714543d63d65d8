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
Heavy imports (torch, faiss, av) happen inside functions, and the names below are imported on first use
(module ``__getattr__``): a search does not import the builder (nor yaml) it never runs.
"""

import importlib

_WHERE = {
    "build_index": "builder", "merge_shards": "builder",
    "EXIT_NO_VIDEOS": "options", "EXIT_OK": "options", "EXIT_SKIPPED": "options", "IndexOptions": "options",
    "IndexRunSummary": "options",
    "INDEX_EXTENSIONS": "scan",
    "Hit": "searcher", "QueryError": "searcher", "Searcher": "searcher", "SearchResult": "searcher",
    "clean_query": "searcher",
    "IndexFormatError": "store", "IndexLockedError": "store", "IndexMismatchError": "store",
    "read_manifest": "store",
    "VerifyReport": "verify", "verify_index": "verify",
}

__all__ = [
    "EXIT_OK", "EXIT_SKIPPED", "EXIT_NO_VIDEOS", "IndexOptions", "IndexRunSummary", "build_index", "merge_shards",
    "INDEX_EXTENSIONS", "Hit", "QueryError", "Searcher", "SearchResult", "clean_query",
    "IndexFormatError", "IndexLockedError", "IndexMismatchError", "read_manifest", "VerifyReport", "verify_index",
]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
