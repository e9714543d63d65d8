"""Build and update an index: ``build_index(paths, out, checkpoint)`` (and ``merge_shards(out)``).

A run scans the PATHs, verifies the committed index (``verify.verify_index``), compares every file with
the committed entries (size + mtime first; when those changed, the SHA-256 of the content decides), and
encodes only new or changed files, in path order (``encoding.encode_files``). Every ``commit_every``
encoded videos or ``COMMIT_SECONDS`` (and at the end, and on Ctrl-C) the results are committed as a new
generation (``session.Session``, ``store``), so a killed run loses at most the uncommitted batch and a
rerun continues.

Damage found by the verification is repaired from the source videos: the videos whose stored rows are
damaged (a segment missing, truncated, altered, of the wrong shape, or rows that are not finite / not unit
norm) are re-encoded under their ids, and a damaged FAISS file is rebuilt. A damaged entries table (the
list of what was indexed) cannot be rebuilt from the rows: the run refuses with an IndexFormatError that
says to rebuild with ``--overwrite``. A run never reports "up to date" over a damaged index.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` encodes the files ``r, r + W, ...`` of the work list
into its own sub-index ``INDEX_DIR/shards/rank-r-of-W`` and rank 0 then merges every shard into the
main index (``shards``). No process group is needed: ranks share nothing but the file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from ..core.display import printable_path
from ..core.errors import ConfigError, HybridTowerError
from . import store
from .encoding import encode_files
from .faults import pause_point
from .identity import check_same_model, load_checkpoint
from .options import EXIT_NO_VIDEOS, EXIT_OK, EXIT_SKIPPED, IndexOptions, IndexRunSummary, finish, run_record
from .scan import FoundFile, collect_files, file_sha256, normalise_extensions
from .session import Session, apply_metadata, request_ann
from .shards import merge_shards, run_distributed, shard_name
from .verify import verify_index
from .weak_match import calibrate_weak_match, needs_calibration, top1_function

__all__ = ["EXIT_OK", "EXIT_SKIPPED", "EXIT_NO_VIDEOS", "IndexOptions", "IndexRunSummary", "build_index",
           "merge_shards", "shard_name", "calibrate_weak_match", "top1_function"]

LOST = "its stored vector was damaged and the file is no longer there: dropped from the index"


def _resolve_device(device: str) -> str:
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None:
        return f"cuda:{int(local)}"
    return device


def resolve_windows(options: IndexOptions, existing: dict | None) -> None:
    """Set ``options.window`` / ``options.stride`` (seconds): what was asked, else the index's recorded
    setting (an index built before windows existed: 0, one row per file), else the defaults. Asking an
    existing index for other windows than it was built with is refused (its rows would mix two layouts)."""
    from ..data.video.windows import DEFAULT_STRIDE, DEFAULT_WINDOW, check_window

    recorded = None
    if existing is not None:
        w = existing.get("windows") or {"window": 0.0, "stride": 0.0}
        recorded = (float(w.get("window", 0.0)), float(w.get("stride", 0.0)))
    if options.window is None and options.stride is None:
        window, stride = recorded if recorded is not None else (DEFAULT_WINDOW, DEFAULT_STRIDE)
    else:
        window = options.window if options.window is not None else (recorded[0] if recorded else DEFAULT_WINDOW)
        window, stride = check_window(window, options.stride)  # stride None: half the window
        if recorded is not None and (window, stride) != recorded:
            raise ConfigError(f"this index was built with --window {recorded[0]:g} --stride {recorded[1]:g}; update it "
                              f"with the same (or no) --window/--stride, or rebuild with --overwrite")
    options.window, options.stride = check_window(window, stride)


def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world > 1 and not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def _template(model, identity: dict, paths, options: IndexOptions, shard: dict | None = None,
              out: Path | None = None) -> dict:
    from ..encode import eval_sample_mode, preprocess_for

    pre = preprocess_for(model)
    qi = bool(model.query_independent)
    return {
        "model": identity,
        "windows": {"window": float(options.window or 0.0), "stride": float(options.stride or 0.0)},
        "vectors_per_video": int(getattr(model, "vectors_per_video", 1) or 1),
        "index_kind": "vectors" if qi else "frames+rerank",
        "dim": int(model.embed_dim),
        "frame_count": int(model.cfg.video.num_frames),
        "preprocess": {**asdict(pre), "num_frames": int(model.cfg.video.num_frames), "sample_mode": eval_sample_mode(model)},
        "roots": [os.path.abspath(os.fspath(p)) for p in paths],
        "extensions": list(options.extensions),
        "shard": shard,
        "model_file": own_model_file(identity, out) if shard is None and out is not None else None,
    }


def own_model_file(identity: dict, out: Path) -> str | None:
    """``store.MODEL_FILE`` when the run's checkpoint is the one kept inside the index (``--model SPEC``)."""
    ckpt = identity.get("checkpoint")
    try:
        return store.MODEL_FILE if ckpt and Path(ckpt).resolve() == (Path(out) / store.MODEL_FILE).resolve() else None
    except OSError:
        return None


def kept_roots(new_roots: list[str], existing: dict | None, kept_paths: list[str]) -> list[str]:
    """This run's roots, then every earlier root that still holds a kept entry (an index grown over
    several folders keeps serving all of them: the service serves files only inside recorded roots)."""
    roots = list(new_roots)
    for root in (existing or {}).get("roots") or []:
        if root in roots:
            continue
        prefix = root.rstrip(os.sep) + os.sep
        if any(p == root or p.startswith(prefix) for p in kept_paths):
            roots.append(root)
    return roots


def _plan(files: list[FoundFile], entries: dict[int, store.Entry], by_path: dict[str, int]):
    """(unchanged, touched [(entry, FoundFile)], to_encode [FoundFile], missing_entries [Entry]).

    ``by_path`` may name ids that ``entries`` lacks (damaged rows): their files are encoded again."""
    unchanged, touched, to_encode = 0, [], []
    seen = set()
    for f in files:
        eid = by_path.get(f.path)
        if eid is None or eid not in entries:
            to_encode.append(f)
            continue
        seen.add(eid)
        e = entries[eid]
        if e.size == f.size and e.mtime_ns == f.mtime_ns:
            unchanged += 1
            continue
        try:
            same = f.size == e.size and file_sha256(f.path) == e.sha256
        except OSError:
            same = False
        if same:
            touched.append((e, f))
        else:
            to_encode.append(f)
    missing = [e for i, e in entries.items() if i not in seen]
    return unchanged, touched, to_encode, missing


def _prepare_out(out: Path, options: IndexOptions) -> None:
    """--overwrite: delete the index files at ``out`` (only files an index consists of, nothing else)."""
    if not (options.overwrite and (out / store.MANIFEST).exists()):
        return
    with contextlib.suppress(OSError):
        if (out / store.LOCK).is_dir() and not (out / store.LOCK).is_symlink():
            (out / store.LOCK).rmdir()  # an empty folder where the lock belongs: --overwrite may take its place
    # take the lock (nobody else may be writing) without reading the manifest, which may be the damage
    with contextlib.closing(store.acquire_lock(out)):
        (out / store.MANIFEST).unlink()  # first: a kill from here on leaves "no index", never a broken one
        for p in list(out.iterdir()):
            if p.is_dir() and p.name in (store.SEGMENTS, store.SHARDS):
                shutil.rmtree(p)
            elif p.is_file() and (p.name in (store.ERRORS,) or p.name.startswith(("entries-", "faiss-"))):
                p.unlink()


def _verify_for_update(out: Path, existing: dict, summary: IndexRunSummary):
    """(entries, damaged ids, FAISS file damaged, other problems found) of the committed index."""
    report = verify_index(out, existing)
    if report.fatal:
        p = report.fatal[0]
        raise store.IndexFormatError(f"{p.message}; this cannot be repaired from the videos: rebuild the index with "
                                     f"`hybridtower index PATH... --out INDEX_DIR --checkpoint CKPT --overwrite`",
                                     file=p.file)
    summary.damage = [p.message for p in report.problems]
    return report.entries, report.damaged_ids(), report.ann_damaged, bool(report.problems) or not report.has_checksums


def build_index(paths, out, checkpoint=None, options: IndexOptions | None = None, *, rank: int | None = None,
                world_size: int | None = None) -> IndexRunSummary:
    """Create or update the index at ``out`` from the video files under ``paths``. See the module doc."""
    from .ann import ANN_KINDS

    options = options or IndexOptions()
    options.extensions = normalise_extensions(options.extensions)
    if options.ann is not None and options.ann not in ANN_KINDS:
        raise ConfigError(f"--ann must be one of {', '.join(ANN_KINDS)}, got {options.ann!r}")
    if options.batch_size < 1 or options.commit_every < 1 or options.num_workers < 0:
        raise ConfigError("batch_size and commit_every must be >= 1 and num_workers >= 0")
    if not paths:
        raise ConfigError("give at least one video file or folder to index")
    env_rank, env_world = _dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    out = Path(out).absolute()
    missing_args = [printable_path(p) for p in paths if not os.path.exists(p)]
    if missing_args:
        raise HybridTowerError(f"no such file or folder: {', '.join(missing_args)}")
    t0 = time.monotonic()
    if checkpoint is not None:  # before anything is written or deleted (the load is cached for the run)
        load_checkpoint(checkpoint, device=_resolve_device(options.device))
    if options.window is not None or options.stride is not None:  # bad values refused before anything is touched
        from ..data.video.windows import DEFAULT_WINDOW, check_window
        check_window(options.window if options.window is not None else DEFAULT_WINDOW, options.stride)
    if rank == 0:
        _prepare_out(out, options)
    if checkpoint is None and not (out / store.MANIFEST).is_file():
        raise ConfigError(f"{printable_path(out.name)} is not an index yet: pass --checkpoint (or --model SPEC "
                          f"--pretrained WEIGHTS) to create it")
    with contextlib.ExitStack() as stack:
        # a single process holds the writer lock from planning to the last commit; torchrun ranks write
        # only their shards and rank 0 takes the main lock to merge
        writer = stack.enter_context(store.IndexWriter(out)) if world == 1 else None
        if writer is not None:
            existing = writer.manifest
        else:
            existing = store.read_manifest(out) if (out / store.MANIFEST).is_file() else None
        if checkpoint is None and existing is not None and existing.get("model_file"):
            checkpoint = str(store.model_file_path(out, existing))  # the index's own (moves with the folder)
        if checkpoint is None:
            checkpoint = existing["model"].get("checkpoint")
            if not isinstance(checkpoint, str) or not checkpoint:
                raise ConfigError("the index records no checkpoint: pass --checkpoint")
        model, identity = load_checkpoint(checkpoint, device=_resolve_device(options.device))
        if existing is not None:
            check_same_model(existing["model"], identity, out.name)
        resolve_windows(options, existing)

        files, problems = collect_files(paths, options.extensions, exclude=[out])
        summary = IndexRunSummary(index_dir=str(out), found=len(files), scanned=True)
        summary.skipped.extend(problems)
        base_entries, damaged_ids, ann_damaged, needs_commit = {}, set(), False, False
        if existing is not None:
            entries, damaged_ids, ann_damaged, needs_commit = _verify_for_update(out, existing, summary)
            base_entries = {e.id: e for e in entries}
            if world > 1 and needs_commit and summary.damage:
                raise store.IndexFormatError(f"{summary.damage[0]}; the index is damaged: run a single-process "
                                             f"`hybridtower index` over the same videos to repair it first")
        by_path = {e.path: e.id for e in base_entries.values()}
        healthy = {i: e for i, e in base_entries.items() if i not in damaged_ids}
        unchanged, touched, to_encode, missing = _plan(files, healthy, by_path)
        found_paths = {f.path for f in files}
        lost = [base_entries[i] for i in sorted(damaged_ids) if base_entries[i].path not in found_paths]
        gone = [e for e in missing if not os.path.exists(e.path)]
        summary.unchanged, summary.touched, summary.to_encode = unchanged, len(touched), len(to_encode)
        summary.vanished = len(gone)
        summary.repaired = len(damaged_ids) - len(lost)
        pause_point("scanned")

        if writer is None:
            return run_distributed(paths, out, model, identity, options, summary, to_encode, touched, gone, problems,
                                   rank, world, t0, lambda shard: _template(model, identity, paths, options, shard))

        template = _template(model, identity, paths, options, out=out)
        gone_ids = {e.id for e in lost} | ({e.id for e in gone} if options.prune else set())
        template["roots"] = kept_roots(template["roots"], existing,
                                       [e.path for i, e in base_entries.items() if i not in gone_ids])
        session = Session(writer, model, identity, existing, template, list(base_entries.values()))
        session.errors = list(problems)
        if damaged_ids or ann_damaged or needs_commit:
            session.forget_rows(damaged_ids)
            session.dirty = True
        for e in lost:
            session.by_path.pop(e.path, None)
            session.errors.append({"path": e.path, "error": LOST})
            summary.skipped.append({"path": e.path, "error": LOST})
        ann_changed = request_ann(session, options)
        apply_metadata(session, touched, gone, options, summary)
        encode_files(session, model, to_encode, options, summary, desc=f"index {out.name}")
        nothing_new = (not summary.encoded and not session.dirty and not ann_changed and existing is not None
                       and existing.get("complete") and not _errors_changed(writer.dir, session.errors)
                       and (session.ann.get("kind") == "flat" or session.ann.get("file")))
        if nothing_new:
            summary.up_to_date = True
            gen = writer.generation
            if needs_calibration(existing):  # built before the cue existed, or a malformed weak_match
                calibrate_weak_match(writer, model)
        else:
            gen = session.commit(complete=True, build_ann=True, extra={"last_run": run_record(summary, t0)})
            calibrate_weak_match(writer, model)
        summary.count = len(session.entries)
        summary.generation = gen
        summary.ann = session.ann.get("kind", "flat")
    finish(summary, t0)
    return summary


def save_model_into_index(out, spec: str, pretrained: str | None, overwrite: bool = False) -> Path:
    """Build ``spec`` (``clip:ARCH``, a preset) with ``hybridtower.create_model(spec, pretrained=...)`` and keep it
    as the index's own checkpoint, ``INDEX_DIR/model.safetensors`` (recorded and checksummed in the manifest,
    never garbage-collected; search and serve use it later, offline). When the index already holds one, the
    new build must be the same model (same config and weights), unless ``overwrite``; then nothing is
    written. The identity of the build is computed from the model in memory: it is the identity its saved
    file would load with (``save_model`` stores the resolved config and the state dict as they are)."""
    from .. import hub
    from .identity import model_identity, same_model

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    target = out / store.MODEL_FILE
    model = hub.create_model(spec, pretrained=pretrained).eval()
    if overwrite or not target.is_file():
        hub.save_model(model, target)
        return target
    if not same_model(load_checkpoint(target)[1], model_identity(model, None)):
        raise ConfigError(f"{printable_path(out.name)} holds a model other than {spec} (pretrained "
                          f"{pretrained or 'none'}): rebuild with --overwrite, or index without --model")
    return target


def _errors_changed(index_dir: Path, errors: list[dict]) -> bool:
    try:
        return (index_dir / store.ERRORS).read_bytes() != store.errors_text(errors).encode("utf-8")
    except OSError:
        return True
