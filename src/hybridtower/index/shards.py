"""torchrun sharding: each rank indexes its share into ``INDEX_DIR/shards/rank-R-of-W``; rank 0 (or
``hybridtower index --merge``) merges the shards into the main index in one commit (``merge_shards``) and
then calibrates the merged index's weak-match threshold once (``weak_match``), as a single-process build
does when it completes."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from ..core.display import printable_path
from ..core.errors import HybridTowerError
from . import store
from .encoding import encode_files
from .identity import check_same_model
from .options import IndexOptions, IndexRunSummary, finish, run_record
from .scan import FoundFile
from .session import Session, apply_metadata, request_ann
from .verify import verify_index
from .weak_match import calibrate_weak_match

log = logging.getLogger(__name__)


def shard_name(rank: int, world: int) -> str:
    return f"rank-{rank}-of-{world}"


def worklist_sha(files: list[FoundFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(os.fsencode(f.path) + f"\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def run_distributed(paths, out: Path, model, identity, options, summary, to_encode, touched, gone, problems, rank,
                    world, t0, template_for):
    mine = to_encode[rank::world]
    shard_dir = out / store.SHARDS / shard_name(rank, world)
    sha = worklist_sha(mine)
    shard_info = {"rank": rank, "world_size": world, "worklist_sha": sha, "worklist": len(mine)}
    summary.shard = shard_name(rank, world)
    with store.IndexWriter(shard_dir) as writer:
        base = writer.manifest
        if base is not None:
            check_same_model(base["model"], identity, shard_dir)
            if (base.get("shard") or {}).get("worklist_sha") != sha and base.get("complete"):
                base = None  # a finished shard of an older run (the merge failed?): start this one afresh
            elif not verify_index(shard_dir, base).ok:
                log.warning("shard %s is damaged: starting it afresh", shard_dir.name)
                base = None
        session = Session(writer, model, identity, base, template_for(shard_info))
        session.errors = list(problems) if rank == 0 else []
        done = {e.path: e for e in session.entries.values()}
        work = [f for f in mine if not (f.path in done and done[f.path].size == f.size and done[f.path].mtime_ns == f.mtime_ns)]
        summary.to_encode = len(work)
        encode_files(session, model, work, options, summary, desc=f"rank {rank}/{world}")
        session.commit(complete=True, extra={"last_run": run_record(summary, t0)})
    if rank != 0:
        summary.count = -1
        finish(summary, t0)
        return summary
    # rank 0: wait for every rank's shard of THIS work list, then merge
    expected = {shard_name(r, world): worklist_sha(to_encode[r::world]) for r in range(world)}
    deadline = time.monotonic() + options.merge_timeout
    announced = False
    while True:
        pending = [name for name, s in expected.items() if not _shard_done(out / store.SHARDS / name, s)]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise HybridTowerError(f"gave up waiting for shards {pending} after {options.merge_timeout:.0f} s; "
                                   f"run `hybridtower index --merge --out INDEX_DIR` once they finish")
        if not announced:
            print(f"rank 0: waiting for shards {pending}", file=sys.stderr, flush=True)
            announced = True
        time.sleep(0.5)
    return merge_shards(out, options=options, touched=touched, gone=gone, summary=summary, t0=t0, model=model)


def _windows(manifest: dict) -> dict:
    return manifest.get("windows") or {"window": 0.0, "stride": 0.0}  # older indexes: one row per file


def _model_for_calibration(out: Path, manifest: dict, device: str):
    """The model the merged index was built with, loaded from its own model file or the checkpoint it
    records; None (with a note) when that is not possible."""
    from .identity import load_checkpoint, same_model

    own = store.model_file_path(out, manifest)
    checkpoint = own if own is not None and own.is_file() else manifest["model"].get("checkpoint")
    why = "the index records no checkpoint"
    if checkpoint:
        try:
            model, identity = load_checkpoint(checkpoint, device=device)
        except Exception as exc:  # the merge is committed; without the model only the cue is missing
            why = f"its checkpoint cannot be loaded ({type(exc).__name__})"
        else:
            if same_model(manifest["model"], identity):
                return model
            why = "the checkpoint it records now holds another model"
    print(f"note: weak-match calibration skipped after the merge: {why}; the next `hybridtower index` run over "
          f"this index (with --checkpoint) calibrates it", file=sys.stderr, flush=True)
    return None


def _shard_done(shard_dir: Path, sha: str) -> bool:
    try:
        m = store.read_manifest(shard_dir)
    except store.IndexFormatError:
        return False
    return bool(m.get("complete")) and (m.get("shard") or {}).get("worklist_sha") == sha


def merge_shards(out, options: IndexOptions | None = None, *, touched=(), gone=(), summary: IndexRunSummary | None = None,
                 t0: float | None = None, keep_shards: bool = False, model=None) -> IndexRunSummary:
    """Merge every shard under ``out/shards`` into the main index at ``out`` (one commit), then delete them.

    Shards must have been made by the same model as the main index (and each other). Entries of a shard
    replace main-index entries with the same path (keeping their ids); new paths get new ids in path order.
    A damaged main index is refused (a single-process run repairs it first); a damaged shard is refused.

    The merged index's weak-match threshold is then measured once with ``model`` (rank 0 passes the model
    it encoded with), or else with the checkpoint the index records (``--merge``); when that checkpoint
    cannot be loaded, or is not the index's model, the merge stands without the cue and a note says so (the
    next single-process run over the index calibrates it).
    """
    options = options or IndexOptions()
    t0 = time.monotonic() if t0 is None else t0
    out = Path(out).absolute()
    summary = summary or IndexRunSummary(index_dir=str(out))
    shard_root = out / store.SHARDS
    shard_dirs = sorted(p for p in shard_root.iterdir() if p.is_dir()) if shard_root.is_dir() else []
    manifests = []
    for d in shard_dirs:
        try:
            manifests.append((d, store.read_manifest(d)))
        except store.IndexFormatError:
            log.warning("skipping %s: it holds no committed shard", printable_path(d.name))
    if not manifests and not (out / store.MANIFEST).is_file():
        raise HybridTowerError(f"nothing to merge: {printable_path(out.name)} has no index and no shards")
    with store.IndexWriter(out) as writer:
        base_entries = None
        if writer.manifest is not None:
            report = verify_index(out, writer.manifest)
            if not report.ok:
                raise store.IndexFormatError(
                    f"{report.problems[0].message}; the main index is damaged: run a single-process "
                    f"`hybridtower index` over the same videos to repair it, then merge", file=report.problems[0].file)
            base_entries = report.entries
        ref = writer.manifest or manifests[0][1]
        for d, m in manifests:
            check_same_model(ref["model"], m["model"], out.name, what=f"shard {d.name} made with checkpoint")
            if _windows(m) != _windows(ref):
                raise HybridTowerError(f"shard {d.name} was made with windows {_windows(m)}, the index uses "
                                       f"{_windows(ref)}: run the shards again with the index's --window/--stride")
        model_identity = ref["model"]
        template = {k: v for k, v in (manifests[0][1] if manifests else ref).items()
                    if k in ("model", "index_kind", "dim", "frame_count", "preprocess", "roots", "extensions", "windows",
                             "vectors_per_video")}
        template["model"] = model_identity
        template["shard"] = None
        own = out / store.MODEL_FILE
        template["model_file"] = (store.MODEL_FILE if own.is_file() and model_identity.get("checkpoint")
                                  and Path(model_identity["checkpoint"]).resolve() == own.resolve() else None)
        session = Session(writer, None, model_identity, writer.manifest, template, base_entries)
        session.errors = []
        apply_metadata(session, list(touched), list(gone), options, summary)
        rows = []
        for d, m in manifests:
            if not m.get("complete"):
                print(f"note: shard {d.name} is incomplete; merging the {m.get('count', 0)} video(s) it committed",
                      file=sys.stderr, flush=True)
            data = store.load_index(d, m)
            first = 0
            for e in data.entries:
                sel = slice(first, first + e.rows)  # all rows of the video (windows, PIG-M), contiguous
                first += e.rows
                rows.append((e, data.vectors[sel], None if data.frames is None else data.frames[sel],
                             data.starts[sel], data.ends[sel]))
            session.errors.extend(store.read_errors(d))
        rows.sort(key=lambda t: t[0].path)  # new files get ids in path order, whatever shard they came from
        for e, vec, frames, starts, ends in rows:
            session.add(e.path, e.video_id, (e.size, e.mtime_ns, e.sha256), vec, frames, starts, ends)
        summary.encoded = max(summary.encoded, len(rows))  # videos the ranks added in this run
        summary.merged_shards = len(manifests)
        request_ann(session, options)
        gen = session.commit(complete=True, build_ann=True, extra={"last_run": run_record(summary, t0)})
        calibrator = model if model is not None else _model_for_calibration(out, writer.manifest, options.device)
        if calibrator is not None:
            calibrate_weak_match(writer, calibrator)
        summary.count = len(session.entries)
        summary.generation = gen
        summary.ann = session.ann.get("kind", "flat")
        summary.skipped = list({(e["path"], e["error"]): e for e in summary.skipped + session.errors}.values())
    if not keep_shards:
        shutil.rmtree(shard_root, ignore_errors=True)
    summary.shard = None
    finish(summary, t0)
    return summary

