"""Build and update an index: ``build_index(paths, out, checkpoint)`` and ``merge_shards(out)``.

A run scans the PATHs, compares every file with the committed entries (size + mtime first; when those
changed, the SHA-256 of the content decides), and encodes only new or changed files, in path order, with
``VideoFrames`` decoding in ``num_workers`` processes and ``model.encode_video`` in batches (the same
frames and the same encoder ``hybridtower.encode.encode_videos`` uses for ``evaluate``). Every
``commit_every`` encoded videos or ``COMMIT_SECONDS`` (and at the end, and on Ctrl-C) the results are committed as a new
generation (see ``store``), so a killed run loses at most the uncommitted batch and a rerun continues.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` encodes the files ``r, r + W, ...`` of the work list
into its own sub-index ``INDEX_DIR/shards/rank-r-of-W`` and rank 0 then merges every shard into the
main index (``merge_shards``; also ``hybridtower index --merge``). No process group is needed: ranks
share nothing but the file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.errors import ConfigError, HybridTowerError
from . import store
from .identity import check_same_model, load_checkpoint
from .scan import INDEX_EXTENSIONS, FoundFile, collect_files, file_sha256, normalise_extensions

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SKIPPED = 3  # the run finished but some files could not be indexed (listed in errors.jsonl)
COMMIT_SECONDS = 300.0  # also commit when this long has passed since the last commit (slow videos/devices)


# ----------------------------------------------------------------------------------------------------
# fault injection for the crash tests: HYBRIDTOWER_TEST_PAUSE_AT=POINT[:N] makes the N-th visit of POINT
# write HYBRIDTOWER_TEST_PAUSE_FILE and block, so a test can SIGKILL the process exactly there.
_visits: Counter = Counter()


def _pause_point(point: str) -> None:
    spec = os.environ.get("HYBRIDTOWER_TEST_PAUSE_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _visits[point] += 1
    if _visits[point] == int(nth or 1):
        Path(os.environ["HYBRIDTOWER_TEST_PAUSE_FILE"]).write_text(f"{point}:{_visits[point]}\n")
        while True:  # wait for the test's SIGKILL
            time.sleep(0.05)


# ----------------------------------------------------------------------------------------------------
@dataclass
class IndexOptions:
    extensions: tuple[str, ...] = INDEX_EXTENSIONS
    prune: bool = False  # drop entries whose file no longer exists
    ann: str | None = None  # flat | ivf | hnsw; None keeps the index's current kind (flat for a new index)
    ann_params: dict = field(default_factory=dict)  # nlist / nprobe (ivf), M / ef_construction / ef_search (hnsw)
    batch_size: int = 16
    num_workers: int = 0
    commit_every: int = 256  # encoded videos per commit (a kill loses at most this many)
    device: str = "cpu"
    precision: str = "fp32"
    progress: bool = True
    overwrite: bool = False  # start a new index even if one (of another model) is there
    merge_timeout: float = 24 * 3600.0  # rank 0: seconds to wait for the other ranks' shards


@dataclass
class IndexRunSummary:
    index_dir: str
    found: int = 0  # video files found under the PATHs
    unchanged: int = 0
    touched: int = 0  # size/mtime changed but same content: metadata updated, not re-encoded
    to_encode: int = 0  # new or changed files this process had to encode
    encoded: int = 0
    skipped: list = field(default_factory=list)  # [{"path", "error"}]
    pruned: int = 0
    vanished: int = 0  # entries whose file is gone (kept unless --prune)
    count: int = 0  # videos in the index after the run
    generation: int = 0
    seconds: float = 0.0
    videos_per_s: float = 0.0
    ann: str = "flat"
    shard: str | None = None  # rank-R-of-W for a torchrun rank that only wrote its shard
    merged_shards: int = 0
    up_to_date: bool = False

    @property
    def exit_code(self) -> int:
        # a torchrun rank other than 0 always exits 0: torchrun kills every rank when one exits non-zero
        # (rank 0 could be stopped mid-merge), and rank 0 reports every rank's skipped files after merging
        if self.shard is not None:
            return EXIT_OK
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------
def _index_frames_class():
    from ..data.datasets import VideoFrames

    class IndexFrames(VideoFrames):
        """VideoFrames over paths that also reports each file's (size, mtime_ns, sha256) as decoded."""

        def __getitem__(self, idx: int) -> dict:
            vid, path = self.videos[idx]
            try:
                st = os.stat(path)
                sha = file_sha256(path)
            except OSError as exc:
                return {"error": f"cannot read file: {exc.strerror or exc}", "video_index": idx, "video_id": vid}
            try:
                item = super().__getitem__(idx)
            except Exception as exc:  # anything a broken file makes a decoder raise: skip, never die
                return {"error": f"cannot decode: {type(exc).__name__}: {exc}", "video_index": idx, "video_id": vid}
            if "error" not in item:
                item["fingerprint"] = (int(st.st_size), int(st.st_mtime_ns), sha)
            return item

    return IndexFrames


def _collate(batch: list[dict]) -> dict:
    from ..data.datasets import collate_skip_errors

    out = collate_skip_errors(batch)
    out["fingerprints"] = [b["fingerprint"] for b in batch if "error" not in b]
    return out


def _resolve_device(device: str) -> str:
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None:
        return f"cuda:{int(local)}"
    return device


def _dist_env() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world > 1 and not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def _worklist_sha(files: list[FoundFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def shard_name(rank: int, world: int) -> str:
    return f"rank-{rank}-of-{world}"


# ----------------------------------------------------------------------------------------------------
class _Session:
    """In-memory state of one writer: the entries, the pending (encoded, uncommitted) rows, the template."""

    def __init__(self, writer: store.IndexWriter, model, identity: dict, base_manifest: dict | None, template: dict):
        self.writer = writer
        self.model = model
        self.template = template
        self.entries: dict[int, store.Entry] = {}
        if base_manifest:
            self.entries = {e.id: e for e in store.read_entries(writer.dir, base_manifest)}
            self.segment_rows = dict(base_manifest.get("segment_rows", {}))
            self.ann = dict(base_manifest.get("ann") or {"kind": "flat", "params": {}, "file": None})
        else:
            self.segment_rows = {}
            self.ann = {"kind": "flat", "params": {}, "file": None}
        self.by_path = {e.path: e.id for e in self.entries.values()}
        self.next_id = int((base_manifest or {}).get("next_id", 0))
        self.next_id = max([self.next_id] + [i + 1 for i in self.entries])
        self.pending: list[tuple[store.Entry, np.ndarray, np.ndarray | None]] = []
        self.errors: list[dict] = []
        self.dirty = False  # metadata changes (touches, prunes) not committed yet
        self.last_commit = time.monotonic()

    def id_for(self, path: str) -> int:
        if path in self.by_path:
            return self.by_path[path]
        i = self.next_id
        self.next_id += 1
        self.by_path[path] = i
        return i

    def add(self, f_path: str, video_id: str, fingerprint, vector: np.ndarray, frames: np.ndarray | None) -> None:
        size, mtime_ns, sha = fingerprint
        e = store.Entry(self.id_for(f_path), f_path, video_id, size, mtime_ns, sha, "", -1)
        self.pending.append((e, vector, frames))

    def remove(self, entry_id: int) -> None:
        e = self.entries.pop(entry_id, None)
        if e is not None:
            self.by_path.pop(e.path, None)
            self.dirty = True

    def manifest(self, gen: int, entries_file: str, complete: bool, extra: dict | None = None) -> dict:
        live = Counter(e.segment for e in self.entries.values())
        segments = sorted(s for s in self.segment_rows if live.get(s))
        m = dict(self.template)
        m.update(
            generation=gen,
            entries_file=entries_file,
            segments=segments,
            segment_rows={s: self.segment_rows[s] for s in segments},
            count=len(self.entries),
            next_id=self.next_id,
            ann=self.ann,
            complete=complete,
            package_version=__version__,
        )
        m.update(extra or {})
        return m

    def commit(self, complete: bool = False, extra: dict | None = None, build_ann: bool = False) -> int:
        w = self.writer
        gen = w.next_generation()
        if self.pending:
            ids = np.asarray([e.id for e, _, _ in self.pending], dtype=np.int64)
            vecs = np.stack([v for _, v, _ in self.pending])
            frames = np.stack([f for _, _, f in self.pending]) if self.pending[0][2] is not None else None
            seg = w.write_segment(gen, ids, vecs, frames)
            _pause_point("segment")
            for row, (e, _, _) in enumerate(self.pending):
                e.segment, e.row = seg, row
                self.entries[e.id] = e
            self.segment_rows[seg] = len(self.pending)
            self.pending = []
            self.ann = dict(self.ann, file=None)  # the stored ANN index no longer covers every vector
        elif self.dirty:
            self.ann = dict(self.ann, file=None)
        if complete:
            self._maybe_compact(gen)
            if build_ann:
                self._build_ann(gen)
        entries_file = w.write_entries(gen, list(self.entries.values()))
        w.write_errors(self.errors)
        _pause_point("entries")
        w.commit(self.manifest(gen, entries_file, complete, extra))
        _pause_point("committed")
        w.collect_garbage()
        self.dirty = False
        self.last_commit = time.monotonic()
        return gen

    def _maybe_compact(self, gen: int) -> None:
        """Rewrite the live rows into one segment when segments pile up or many rows are dead."""
        live = Counter(e.segment for e in self.entries.values())
        segs = [s for s in self.segment_rows if live.get(s)]
        total = sum(self.segment_rows[s] for s in segs)
        if len(segs) <= 1 and total == len(self.entries):
            return
        if len(segs) <= 8 and total - len(self.entries) <= 0.2 * max(total, 1):
            return
        entries = sorted(self.entries.values(), key=lambda e: e.id)
        vecs, frames = self._gather(entries)
        name = self.writer.write_segment(gen, np.asarray([e.id for e in entries], dtype=np.int64), vecs, frames, tag="c")
        for row, e in enumerate(entries):
            e.segment, e.row = name, row
        self.segment_rows = {name: len(entries)}

    def _gather(self, entries: list[store.Entry], with_frames: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        return store.gather_rows(self.writer.dir, entries, int(self.template["dim"]), with_frames)

    def _build_ann(self, gen: int) -> None:
        from .ann import build_ann, resolve_params, save_ann

        kind = self.ann.get("kind", "flat")
        requested = dict(self.ann.get("requested") or {})
        params = resolve_params(kind, requested, len(self.entries))
        self.ann = {"kind": kind, "requested": requested, "params": params, "file": None, "count": len(self.entries)}
        if kind == "flat" or not self.entries:
            return  # exact search needs no stored structure: the Searcher uses the vectors directly
        entries = sorted(self.entries.values(), key=lambda e: e.id)
        vecs, _ = self._gather(entries, with_frames=False)
        index = build_ann(vecs, kind, params)
        name, path = self.writer.ann_path(gen, kind)
        save_ann(index, path)
        _pause_point("ann")
        self.ann["file"] = name


# ----------------------------------------------------------------------------------------------------
def _template(model, identity: dict, paths, options: IndexOptions, shard: dict | None = None) -> dict:
    from ..encode import preprocess_for

    pre = preprocess_for(model)
    qi = bool(model.query_independent)
    return {
        "model": identity,
        "index_kind": "vectors" if qi else "frames+rerank",
        "dim": int(model.embed_dim),
        "frame_count": int(model.cfg.video.num_frames),
        "preprocess": {**asdict(pre), "num_frames": int(model.cfg.video.num_frames), "sample_mode": "uniform"},
        "roots": [os.path.abspath(os.fspath(p)) for p in paths],
        "extensions": list(options.extensions),
        "shard": shard,
    }


def _plan(files: list[FoundFile], entries: dict[int, store.Entry], by_path: dict[str, int]):
    """(unchanged, touched [(entry, FoundFile)], to_encode [FoundFile], missing_entries [Entry])."""
    unchanged, touched, to_encode = 0, [], []
    seen = set()
    for f in files:
        eid = by_path.get(f.path)
        if eid is None:
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


def _encode_files(session: _Session, model, work: list[FoundFile], options: IndexOptions, summary: IndexRunSummary,
                  desc: str) -> None:
    """Decode + encode ``work`` in order, committing every ``commit_every`` encoded videos."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ..encode import autocast_context, preprocess_for

    if not work:
        return
    IndexFrames = _index_frames_class()
    ds = IndexFrames([f.path for f in work], num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model))
    loader = DataLoader(ds, batch_size=options.batch_size, num_workers=options.num_workers, collate_fn=_collate)
    device = next(model.parameters()).device
    bar = tqdm(total=len(work), desc=desc, unit="video", disable=not options.progress, dynamic_ncols=True)
    since_commit = 0
    try:
        for batch in loader:
            for err in batch["errors"]:
                f = work[int(err["video_index"])]
                session.errors.append({"path": f.path, "error": err["error"]})
                summary.skipped.append({"path": f.path, "error": err["error"]})
            if batch["frames"] is not None:
                with torch.no_grad(), autocast_context(device, options.precision):
                    out = model.encode_video(batch["frames"].to(device, non_blocking=True)).float()
                if model.query_independent:
                    vecs, frames = out.cpu().numpy(), None
                else:  # X-Pool: keep the frame features; the first-stage vector is their normalised mean
                    frames = out.cpu().numpy()
                    vecs = torch.nn.functional.normalize(out.mean(dim=1), dim=-1).cpu().numpy()
                for j, (vi, fp) in enumerate(zip(batch["video_index"].tolist(), batch["fingerprints"])):
                    f = work[vi]
                    session.add(f.path, f.video_id, fp, vecs[j], None if frames is None else frames[j])
                summary.encoded += len(batch["fingerprints"])
                since_commit += len(batch["fingerprints"])
            bar.update(len(batch["video_index"]) + len(batch["errors"]))
            _pause_point("encoded")
            if since_commit >= options.commit_every or (since_commit and time.monotonic() - session.last_commit > COMMIT_SECONDS):
                session.commit(complete=False)
                since_commit = 0
    except KeyboardInterrupt:
        bar.close()
        if session.pending or session.dirty:
            print(f"interrupted: committing the {len(session.pending)} video(s) encoded since the last commit", flush=True)
            session.commit(complete=False)
        raise
    bar.close()


def _prepare_out(out: Path, options: IndexOptions) -> None:
    """--overwrite: delete the index files at ``out`` (only files an index consists of, nothing else)."""
    if not (options.overwrite and (out / store.MANIFEST).exists()):
        return
    with store.IndexWriter(out):  # take the lock: nobody else may be writing it
        (out / store.MANIFEST).unlink()  # first: a kill from here on leaves "no index", never a broken one
        for p in list(out.iterdir()):
            if p.is_dir() and p.name in (store.SEGMENTS, store.SHARDS):
                shutil.rmtree(p)
            elif p.is_file() and (p.name in (store.ERRORS,) or p.name.startswith(("entries-", "faiss-"))):
                p.unlink()


def build_index(paths, out, checkpoint=None, options: IndexOptions | None = None, *, rank: int | None = None,
                world_size: int | None = None) -> IndexRunSummary:
    """Create or update the index at ``out`` from the video files under ``paths``. See the module doc."""
    options = options or IndexOptions()
    options.extensions = normalise_extensions(options.extensions)
    if options.ann is not None and options.ann not in ("flat", "ivf", "hnsw"):
        raise ConfigError(f"--ann must be flat, ivf or hnsw, got {options.ann!r}")
    if options.batch_size < 1 or options.commit_every < 1 or options.num_workers < 0:
        raise ConfigError("batch_size and commit_every must be >= 1 and num_workers >= 0")
    if not paths:
        raise ConfigError("give at least one video file or folder to index")
    env_rank, env_world = _dist_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    out = Path(out).absolute()
    missing_args = [str(p) for p in paths if not os.path.exists(p)]
    if missing_args:
        raise HybridTowerError(f"no such file or folder: {', '.join(missing_args)}")
    t0 = time.monotonic()
    if rank == 0:
        _prepare_out(out, options)
    if checkpoint is None and not (out / store.MANIFEST).is_file():
        raise ConfigError(f"{out} is not an index yet: pass --checkpoint to create it")
    with contextlib.ExitStack() as stack:
        # a single process holds the writer lock from planning to the last commit; torchrun ranks write
        # only their shards and rank 0 takes the main lock to merge
        writer = stack.enter_context(store.IndexWriter(out)) if world == 1 else None
        if writer is not None:
            existing = writer.manifest
        else:
            existing = store.read_manifest(out) if (out / store.MANIFEST).is_file() else None
        if checkpoint is None:
            checkpoint = existing["model"]["checkpoint"]
        model, identity = load_checkpoint(checkpoint, device=_resolve_device(options.device))
        if existing is not None:
            check_same_model(existing["model"], identity, out)

        files, problems = collect_files(paths, options.extensions, exclude=[out])
        summary = IndexRunSummary(index_dir=str(out), found=len(files))
        summary.skipped.extend(problems)
        base_entries = {e.id: e for e in store.read_entries(out, existing)} if existing else {}
        unchanged, touched, to_encode, missing = _plan(files, base_entries, {e.path: e.id for e in base_entries.values()})
        gone = [e for e in missing if not os.path.exists(e.path)]
        summary.unchanged, summary.touched, summary.to_encode = unchanged, len(touched), len(to_encode)
        summary.vanished = len(gone)
        _pause_point("scanned")

        if writer is None:
            return _run_distributed(paths, out, model, identity, options, summary, to_encode, touched, gone, problems,
                                    rank, world, t0)

        session = _Session(writer, model, identity, existing, _template(model, identity, paths, options))
        session.errors = list(problems)
        ann_changed = _request_ann(session, options)
        _apply_metadata(session, touched, gone, options, summary)
        _encode_files(session, model, to_encode, options, summary, desc=f"index {out.name}")
        nothing_new = (not summary.encoded and not session.dirty and not ann_changed and existing is not None
                       and existing.get("complete") and not _errors_changed(writer.dir, session.errors)
                       and (session.ann.get("kind") == "flat" or session.ann.get("file")))
        if nothing_new:
            summary.up_to_date = True
            gen = writer.generation
        else:
            gen = session.commit(complete=True, build_ann=True, extra={"last_run": _run_record(summary, t0)})
        summary.count = len(session.entries)
        summary.generation = gen
        summary.ann = session.ann.get("kind", "flat")
    _finish(summary, t0)
    return summary


def _request_ann(session: _Session, options: IndexOptions) -> bool:
    """Set the ANN kind/params this run asks for; True when they differ from the committed ones."""
    cur = session.ann or {}
    kind = options.ann or cur.get("kind", "flat")
    requested = dict(cur.get("requested") or {}) if kind == cur.get("kind") else {}
    requested.update({k: v for k, v in (options.ann_params or {}).items() if v is not None})
    changed = kind != cur.get("kind", "flat") or requested != (cur.get("requested") or {})
    session.ann = {**cur, "kind": kind, "requested": requested}
    if changed:
        session.ann["file"] = None
    return changed


def _errors_changed(index_dir: Path, errors: list[dict]) -> bool:
    return store.read_errors(index_dir) != errors


def _apply_metadata(session: _Session, touched, gone, options: IndexOptions, summary: IndexRunSummary) -> None:
    for e, f in touched:
        if e.id in session.entries:
            session.entries[e.id] = store.Entry(**{**asdict(session.entries[e.id]), "size": f.size, "mtime_ns": f.mtime_ns})
            session.dirty = True
    if options.prune:
        for e in gone:
            session.remove(e.id)
        summary.pruned = len(gone)
        summary.vanished = 0


def _run_record(summary: IndexRunSummary, t0: float) -> dict:
    return {"finished": time.time(), "seconds": round(time.monotonic() - t0, 3), "encoded": summary.encoded,
            "skipped": len(summary.skipped), "pruned": summary.pruned, "touched": summary.touched}


def _finish(summary: IndexRunSummary, t0: float) -> None:
    summary.seconds = round(time.monotonic() - t0, 3)
    summary.videos_per_s = round(summary.encoded / summary.seconds, 3) if summary.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------------
def _run_distributed(paths, out: Path, model, identity, options, summary, to_encode, touched, gone, problems, rank, world, t0):
    mine = to_encode[rank::world]
    shard_dir = out / store.SHARDS / shard_name(rank, world)
    sha = _worklist_sha(mine)
    shard_info = {"rank": rank, "world_size": world, "worklist_sha": sha, "worklist": len(mine)}
    summary.shard = shard_name(rank, world)
    with store.IndexWriter(shard_dir) as writer:
        base = writer.manifest
        if base is not None:
            check_same_model(base["model"], identity, shard_dir)
            if (base.get("shard") or {}).get("worklist_sha") != sha and base.get("complete"):
                base = None  # a finished shard of an older run (the merge failed?): start this one afresh
        session = _Session(writer, model, identity, base, _template(model, identity, paths, options, shard_info))
        session.errors = list(problems) if rank == 0 else []
        done = {e.path: e for e in session.entries.values()}
        work = [f for f in mine if not (f.path in done and done[f.path].size == f.size and done[f.path].mtime_ns == f.mtime_ns)]
        summary.to_encode = len(work)
        _encode_files(session, model, work, options, summary, desc=f"rank {rank}/{world}")
        session.commit(complete=True, extra={"last_run": _run_record(summary, t0)})
    if rank != 0:
        summary.count = -1
        _finish(summary, t0)
        return summary
    # rank 0: wait for every rank's shard of THIS work list, then merge
    expected = {shard_name(r, world): _worklist_sha(to_encode[r::world]) for r in range(world)}
    deadline = time.monotonic() + options.merge_timeout
    announced = False
    while True:
        pending = [name for name, s in expected.items() if not _shard_done(out / store.SHARDS / name, s)]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise HybridTowerError(f"gave up waiting for shards {pending} after {options.merge_timeout:.0f} s; "
                                   f"run `hybridtower index --merge --out {out}` once they finish")
        if not announced:
            print(f"rank 0: waiting for shards {pending}", flush=True)
            announced = True
        time.sleep(0.5)
    merged = merge_shards(out, options=options, touched=touched, gone=gone, summary=summary, t0=t0)
    return merged


def _shard_done(shard_dir: Path, sha: str) -> bool:
    try:
        m = store.read_manifest(shard_dir)
    except store.IndexFormatError:
        return False
    return bool(m.get("complete")) and (m.get("shard") or {}).get("worklist_sha") == sha


def merge_shards(out, options: IndexOptions | None = None, *, touched=(), gone=(), summary: IndexRunSummary | None = None,
                 t0: float | None = None, keep_shards: bool = False) -> IndexRunSummary:
    """Merge every shard under ``out/shards`` into the main index at ``out`` (one commit), then delete them.

    Shards must have been made by the same model as the main index (and each other). Entries of a shard
    replace main-index entries with the same path (keeping their ids); new paths get new ids in path order.
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
            log.warning("skipping %s: it holds no committed shard", d)
    if not manifests and not (out / store.MANIFEST).is_file():
        raise HybridTowerError(f"nothing to merge: {out} has no index and no shards under {shard_root}")
    with store.IndexWriter(out) as writer:
        ref = writer.manifest or manifests[0][1]
        for d, m in manifests:
            check_same_model(ref["model"], m["model"], out, what=f"shard {d.name} made with checkpoint")
        model_identity = ref["model"]
        template = {k: v for k, v in (manifests[0][1] if manifests else ref).items()
                    if k in ("model", "index_kind", "dim", "frame_count", "preprocess", "roots", "extensions")}
        template["model"] = model_identity
        template["shard"] = None
        session = _Session(writer, None, model_identity, writer.manifest, template)
        session.errors = []
        _apply_metadata(session, list(touched), list(gone), options, summary)
        incoming: list[tuple[store.Entry, str]] = []
        for d, m in manifests:
            if not m.get("complete"):
                print(f"note: shard {d.name} is incomplete; merging the {m.get('count', 0)} video(s) it committed", flush=True)
            for e in store.read_entries(d, m):
                incoming.append((e, str(d)))
            session.errors.extend(store.read_errors(d))
        rows = []
        by_dir: dict[str, list[store.Entry]] = {}
        for e, d in incoming:
            by_dir.setdefault(d, []).append(e)
        for d, es in by_dir.items():
            data = store.load_index(d, store.read_manifest(d))
            row_of = {e.id: i for i, e in enumerate(data.entries)}
            for e in es:
                i = row_of[e.id]
                rows.append((e, data.vectors[i], None if data.frames is None else data.frames[i]))
        rows.sort(key=lambda t: t[0].path)  # new files get ids in path order, whatever shard they came from
        for e, vec, frames in rows:
            session.add(e.path, e.video_id, (e.size, e.mtime_ns, e.sha256), vec, frames)
        summary.encoded = max(summary.encoded, len(rows))  # videos the ranks added in this run
        summary.merged_shards = len(manifests)
        _request_ann(session, options)
        gen = session.commit(complete=True, build_ann=True, extra={"last_run": _run_record(summary, t0)})
        summary.count = len(session.entries)
        summary.generation = gen
        summary.ann = session.ann.get("kind", "flat")
        summary.skipped = list({(e["path"], e["error"]): e for e in summary.skipped + session.errors}.values())
    if not keep_shards:
        shutil.rmtree(shard_root, ignore_errors=True)
    summary.shard = None
    _finish(summary, t0)
    return summary
