"""The decode + encode loop of an index run: ``encode_files(session, model, work, options, summary)``.

Files are decoded by ``VideoFrames`` (the frame sampling ``evaluate`` uses for this model,
``encode.eval_sample_mode``: linspace for PIG / CLIP-ViP, segment middles for meanP / X-Pool, and the
model's preprocessing) in ``num_workers`` DataLoader processes that die with their parent and run
one torch thread each (``workers.worker_init_fn``), one video per task, and encoded in batches of
``batch_size`` consecutive videos with ``model.encode_video`` in the main process (``_item_loader``),
with torch threads chosen by measurement (``ThreadTuner``: on the CPU, the cores the workers leave or every
core, whichever encodes faster per video on this machine now; ``options.encoder_threads`` fixes them): the frames and encoder
``hybridtower.encode`` uses for ``evaluate``. Files are read with ``data.video.decode.read_frames_or_probe``,
which counts the packets of a file whose header has no frame count when its duration matters, so a header
that overstates it cannot lose the file. Each decoded file also reports its (size, mtime_ns, sha256)
fingerprint. A file the decoder cannot read, or whose encoding holds non-finite values, is skipped and
listed, never stored.

Moment windows (``options.window`` > 0): the first pass opens each file once; a file no longer than the
window is sampled and encoded exactly as without windows (same frames, same vector), a longer one only
reports its duration. Each long file is then read window by window (``data.video.windows``: a second
loader over (file, window) items, so memory holds about three batches of windows' frames (one being
encoded, two decoded ahead) whatever the file's length; every window is reached by seeking) and stored as one row per window with its start / end. A
window that cannot be decoded skips its whole file, except when the file's data ends before its header says
(a window after the first finds no frames, or the decoder runs out before its frames: 'truncated', 'zero
decodable frames'; a file cut short whose frame count is exact, such as an MP4 with its index first): then
its windows end there, the ones before are stored and ``summary.shortened`` says so.

PIG-M models (``encode_video`` -> [B, M, D]) store M rows per video or window, row m with the m-th
equal part of the video's (window's) time range: the pseudo-query of segment m is made from the frames
sampled in about that part (``PIG.segments``).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from ..core.display import printable
from . import store
from .faults import pause_point
from .options import COMMIT_SECONDS, IndexOptions, IndexRunSummary
from .scan import FoundFile, file_fingerprint
from .session import Session
from .workers import worker_init_fn


def _index_frames_class():
    from ..data.datasets import VideoFrames, item_rng
    from ..data.video import VideoDecodeError
    from ..data.video.decode import read_frames_or_probe
    from ..data.video.transforms import preprocess_frames

    class IndexFrames(VideoFrames):
        """VideoFrames over paths that also reports each file's (size, mtime_ns, sha256) as decoded; with
        ``window`` > 0 (or ``want_duration``) a file longer than the window comes back as ``{"long": ...}``."""

        window: float = 0.0
        want_duration: bool = False

        def _read(self, idx: int, vid, path) -> dict:
            # read_frames_or_probe, also without windows: read_frames' frames, but a Matroska / WebM header
            # that overstates the video is corrected by counting its packets instead of skipping the file
            try:
                frames, info = read_frames_or_probe(path, self.num_frames, self.sample_mode,
                                                    item_rng(self.seed, 0, idx), self.window)
            except VideoDecodeError as exc:
                return {"error": str(exc), "video_index": idx, "video_id": vid}
            if frames is None:
                return {"long": {"duration": float(info.duration)}, "video_index": idx, "video_id": vid}
            return {"frames": preprocess_frames(frames, self.preprocess), "video_index": idx, "video_id": vid,
                    "duration": float(info.duration)}

        def __getitem__(self, idx: int) -> dict:
            pause_point("decode")
            vid, path = self.videos[idx]
            try:  # size, mtime and hash from one descriptor; a FIFO/device or a file still changing is refused
                fingerprint = file_fingerprint(path)
            except OSError as exc:
                return {"error": f"cannot read file: {exc.strerror or type(exc).__name__}", "video_index": idx,
                        "video_id": vid}
            try:
                item = self._read(idx, vid, path)
            except Exception as exc:  # anything a broken file makes a decoder raise: skip, never die
                return {"error": f"cannot decode: {type(exc).__name__}: {exc}", "video_index": idx, "video_id": vid}
            if "error" not in item:
                item["fingerprint"] = fingerprint
            return item

    return IndexFrames


class WindowFrames:
    """One item per (file, window): ``{"frames": [T, 3, S, S], "video_index": item}`` or an error item."""

    def __init__(self, items: list[tuple[str, float, float]], num_frames: int, preprocess, sample_mode: str):
        self.items, self.num_frames, self.preprocess, self.sample_mode = items, num_frames, preprocess, sample_mode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        from ..data.datasets import item_rng
        from ..data.video.decode import read_window
        from ..data.video.transforms import preprocess_frames

        pause_point("decode")
        path, start, end = self.items[idx]
        try:
            frames = read_window(path, start, end, self.num_frames, self.sample_mode, item_rng(0, 0, idx))
        except Exception as exc:  # VideoDecodeError and anything else a broken file raises: skip the file
            reason = getattr(exc, "reason", "")
            past = start > 0 and (reason.startswith("truncated") or reason.endswith("zero decodable frames"))
            return {"error": f"cannot decode the window {start:g}-{end:g} s: {exc}", "video_index": idx, "video_id": path,
                    "past_data": past}
        return {"frames": preprocess_frames(frames, self.preprocess), "video_index": idx, "video_id": path}


def _collate(batch: list[dict]) -> dict:
    from ..data.datasets import collate_skip_errors

    out = collate_skip_errors([b for b in batch if "long" not in b])
    good = [b for b in batch if "error" not in b and "long" not in b]
    out["fingerprints"] = [b.get("fingerprint") for b in good]
    out["durations"] = [b.get("duration") for b in good]
    out["long"] = [b for b in batch if "long" in b]
    return out


def _as_is(item):
    """The DataLoader's per-item "collate" (items are grouped into batches in the main process)."""
    return item


def prefetch_items(batch_size: int, num_workers: int) -> int:
    """Items each worker keeps decoded ahead (the DataLoader's ``prefetch_factor``): together the workers
    hold two batches, so the next batch is ready when the encoder finishes the current one."""
    return max(2, -(-2 * int(batch_size) // max(1, int(num_workers))))


def _item_loader(ds, options: IndexOptions, collate):
    """Batches of ``options.batch_size`` consecutive items of ``ds``, in order, decoded one item per task.

    Every worker decodes single videos (``batch_size=None`` in the DataLoader) and the main process groups
    them: a batch of B items is ready once its B items are, whichever workers decoded them, so all W
    workers decode from the first batch on (the DataLoader's own batching hands each worker a whole batch:
    a run of at most B videos decodes in one worker while the others idle) and decoding overlaps encoding
    item by item. The batches hold the same items in the same order as ``DataLoader(batch_size=B)``.
    """
    from torch.utils.data import DataLoader

    workers = options.num_workers
    kw = dict(prefetch_factor=prefetch_items(options.batch_size, workers), worker_init_fn=worker_init_fn()) if workers else {}
    loader = DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_as_is, **kw)
    group = []
    for item in loader:
        group.append(item)
        if len(group) == options.batch_size:
            yield collate(group)
            group = []
    if group:
        yield collate(group)


def make_loader(model, paths: list[str], options: IndexOptions, window: float = 0.0):
    """The decoding loader of an index run over ``paths``: an iterator of batches (``_collate``); also what
    ``benchmarks/index_throughput.py`` times as the decode-only bound. With ``window`` > 0, files longer
    than it come back in ``batch["long"]`` (their windows are read by :func:`window_loader`)."""
    from ..encode import eval_sample_mode, preprocess_for

    IndexFrames = _index_frames_class()
    ds = IndexFrames(paths, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                     sample_mode=eval_sample_mode(model))
    ds.window = float(window or 0.0)
    ds.want_duration = _rows_per_clip(model) > 1  # PIG-M rows carry their part of the file's time range
    return _item_loader(ds, options, _collate)


def window_loader(model, items: list[tuple[str, float, float]], options: IndexOptions):
    """Batches (``collate_skip_errors``) of (path, start, end) windows, in order."""
    from ..data.datasets import collate_skip_errors
    from ..encode import eval_sample_mode, preprocess_for

    def collate(batch: list[dict]) -> dict:
        out = collate_skip_errors(batch)
        for err, item in zip(out["errors"], [b for b in batch if "error" in b]):
            err["past_data"] = bool(item.get("past_data"))
        return out

    ds = WindowFrames(items, model.cfg.video.num_frames, preprocess_for(model), eval_sample_mode(model))
    return _item_loader(ds, options, collate)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _busy_cores(sample_s: float = 0.1) -> float | None:
    """Cores kept busy by every process on the machine over the next ``sample_s`` seconds (``/proc/stat``),
    or None where it cannot be read."""
    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", "rb") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 4:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    first = read()
    if first is None:
        return None
    time.sleep(sample_s)
    second = read()
    if second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return cpu_cores() * (total - idle) / total


def machine_was_idle(cores: int | None = None, busy: float | None = None) -> bool:
    """Whether the machine had cores to spare when an index run began: at most half its cores busy over a
    0.1 s sample of ``/proc/stat`` taken before the run's workers start (the 1-minute load average where
    /proc is missing, which also counts the last minute's work). False where neither can be read."""
    cores = cores or cpu_cores()
    if busy is None:
        busy = _busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return False
    return float(busy) <= 0.5 * cores


def encoder_threads(num_workers: int, device, requested: int | None = None) -> list[int] | None:
    """The torch intra-op thread counts the encoder (main process) may use during an index run, for
    :class:`ThreadTuner` to choose from by measurement; None = leave torch's setting.

    On the CPU with ``num_workers`` decoding processes: ``[max(1, cores - num_workers), cores]``, the cores
    the workers leave, or every core. Neither wins everywhere (measured on 2 cores, docs/index.md,
    "Indexing throughput"): with other jobs running, 2 workers + a 2-thread encoder ran pig-tiny at 12.5
    videos/s and 2 workers + 1 thread at 45 (an OpenMP pool with more threads than free cores waits at
    every barrier for a descheduled thread); on a quiet machine, where the encoder dominates and the
    workers mostly wait on a full queue, pig-vit-b-32 ran at 1.71 with 2 threads and 1.07 with 1.
    ``requested`` (>= 1) fixes the count; on a GPU the encoder's CPU threads only launch kernels: left alone;
    without workers decoding and encoding alternate in this process: torch's default.
    """
    if requested:
        return [max(1, int(requested))]
    if getattr(device, "type", str(device)) != "cpu" or not num_workers:
        return None
    cores = cpu_cores()
    return sorted({max(1, cores - int(num_workers)), cores})


class ThreadTuner:
    """Chooses the encoder's torch threads among ``candidates`` by the measured time per video of the
    encoding loop (waiting for decoded frames included), batch by batch.

    The first batch (start-up: workers starting, first decode) is not counted. It runs with the most threads
    when ``start_with_most`` (the machine was idle when the run began: :func:`machine_was_idle`), else with the
    fewest (the milder mistake under load: measured 1.6x slower than the best where the most threads would
    have been 3.6x slower; on the idle machine the fewest cost pig-vit-b-32 0.94 instead of 1.59 videos/s, and
    a run of one batch never gets to try the other); the next ``len(candidates)`` batches try each count
    once, most threads first; after that
    the one with the lowest median of its last ``keep`` measurements runs, and every ``probe_every``-th batch
    tries the others again, so a change of the machine's load moves the choice (at the price of one batch
    in ``probe_every`` run with a worse count).
    """

    def __init__(self, candidates: list[int] | None, probe_every: int = 16, keep: int = 3, *,
                 start_with_most: bool = False):
        self.candidates = sorted(set(candidates or []))
        self.start_with_most = bool(start_with_most)
        self.probe_every = max(2, int(probe_every))
        self.keep = keep
        self.samples: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.batches = 0
        self._probe = 0

    def next(self) -> int | None:
        """Threads for the next batch (None: leave torch's setting)."""
        if not self.candidates:
            return None
        k = len(self.candidates)
        if k == 1 or self.batches == 0:
            return self.candidates[-1 if self.start_with_most else 0]
        if self.batches <= k:
            return self.candidates[-self.batches]
        best = self.best()
        if self.batches % self.probe_every == 0:
            others = [c for c in self.candidates if c != best]
            self._probe += 1
            return others[(self._probe - 1) % len(others)]
        return best

    def record(self, threads: int | None, seconds: float, videos: int) -> None:
        if self.batches > 0 and threads in self.samples and videos > 0:
            self.samples[threads] = (self.samples[threads] + [seconds / videos])[-self.keep:]
        self.batches += 1

    def best(self) -> int:
        import statistics

        measured = {c: statistics.median(v) for c, v in self.samples.items() if v}
        if not measured:
            return self.candidates[-1]
        return min(measured, key=lambda c: (measured[c], -c))


@contextmanager
def torch_threads(n: int | None):
    """Run the body with ``n`` torch intra-op threads (None: unchanged), restoring the previous count."""
    import torch

    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _rows_per_clip(model) -> int:
    return int(getattr(model, "vectors_per_video", 1) or 1)


def _encode(model, frames, device, precision: str):
    """(vectors [B, M, D], frames [B, M?, T, D] or None) of a batch; M = 1 except PIG-M."""
    import torch

    from ..encode import autocast_context

    with torch.no_grad(), autocast_context(device, precision):
        out = model.encode_video(frames.to(device, non_blocking=True)).float()
    if model.query_independent:
        vecs = out.cpu().numpy()
        return (vecs[:, None, :] if vecs.ndim == 2 else vecs), None
    # X-Pool: keep the frame features; the first-stage vector is their normalised mean
    feats = out.cpu().numpy()
    vecs = torch.nn.functional.normalize(out.mean(dim=1), dim=-1).cpu().numpy()
    return vecs[:, None, :], feats[:, None]


def _times(start, end, m: int):
    """Starts and ends [m] of a clip's rows: NaN for a whole file with one row; PIG-M: m equal parts."""
    import numpy as np

    from ..data.video.windows import split_range

    if m == 1:
        return (np.asarray([np.nan if start is None else start]), np.asarray([np.nan if end is None else end]))
    if start is None or end is None or not end > start:
        return np.full(m, np.nan), np.full(m, np.nan)
    parts = split_range(start, end, m)
    return np.asarray([p[0] for p in parts]), np.asarray([p[1] for p in parts])


def encode_files(session: Session, model, work: list[FoundFile], options: IndexOptions, summary: IndexRunSummary,
                 desc: str) -> None:
    """Decode + encode ``work`` in order (long files' windows after the short files), committing every
    ``commit_every`` encoded videos."""
    from tqdm.auto import tqdm

    if not work:
        return
    window = float(options.window or 0.0)
    stride = float(options.stride or 0.0)
    device = next(model.parameters()).device
    candidates = encoder_threads(options.num_workers, device, options.encoder_threads)
    # sampled before the workers start (they would count as busy); only needed when there is a choice
    idle = machine_was_idle() if candidates and len(candidates) > 1 else False
    loader = make_loader(model, [f.path for f in work], options, window)
    bar = tqdm(total=len(work), desc=printable(desc), unit="video", disable=not options.progress, dynamic_ncols=True)
    state = {"since_commit": 0}
    long_files = []  # (work index, fingerprint, windows)

    def skip(f: FoundFile, error: str) -> None:
        session.errors.append({"path": f.path, "error": error})
        summary.skipped.append({"path": f.path, "error": error})

    def store_rows(f: FoundFile, fp, vecs, frames, starts, ends) -> bool:
        bad = {int(r) for rows in store.bad_rows(vecs, None if frames is None else frames).values() for r in rows}
        if bad:
            skip(f, "the model produced non-finite or non-normalised values for this video")
            return False
        session.add(f.path, f.video_id, fp, vecs, frames, starts, ends)
        summary.encoded += 1
        state["since_commit"] += 1
        return True

    def maybe_commit() -> None:
        since = state["since_commit"]
        if since >= options.commit_every or (since and time.monotonic() - session.last_commit > COMMIT_SECONDS):
            session.commit(complete=False)
            state["since_commit"] = 0

    tuner = ThreadTuner(candidates, start_with_most=idle)
    try:
        with torch_threads(None):  # restores torch's thread count afterwards
            _encode_loop(model, work, loader, options, summary, device, window, stride, bar, skip, store_rows,
                         maybe_commit, long_files, tuner)
    except KeyboardInterrupt:
        bar.close()
        if session.pending or session.dirty:
            print(f"interrupted: committing the {len(session.pending)} video(s) encoded since the last commit",
                  file=sys.stderr, flush=True)
            session.commit(complete=False)
        raise
    bar.close()


def _tuned_encode(model, frames, device, precision: str, tuner: ThreadTuner, since: list):
    """``_encode`` with the tuner's threads; records the time since ``since[0]`` (the previous batch's end:
    waiting for this batch's frames included) per video, and moves ``since[0]`` to now."""
    import torch

    threads = tuner.next()
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    out = _encode(model, frames, device, precision)
    now = time.monotonic()
    tuner.record(threads, now - since[0], len(frames))
    since[0] = now
    return out


def _encode_loop(model, work, loader, options, summary, device, window, stride, bar, skip, store_rows, maybe_commit,
                 long_files, tuner: ThreadTuner) -> None:
    from ..data.video.windows import plan_windows

    since = [time.monotonic()]
    for batch in loader:
        for err in batch["errors"]:
            skip(work[int(err["video_index"])], err["error"])
        for item in batch["long"]:
            vi = int(item["video_index"])
            spans = plan_windows(item["long"]["duration"], window, stride)
            long_files.append((vi, item["fingerprint"], spans))
        if batch["frames"] is not None:
            vecs, frames = _tuned_encode(model, batch["frames"], device, options.precision, tuner, since)
            m = vecs.shape[1]
            for j, (vi, fp) in enumerate(zip(batch["video_index"].tolist(), batch["fingerprints"])):
                dur = batch["durations"][j]
                starts, ends = _times(0.0 if m > 1 else None, dur if m > 1 else None, m)
                store_rows(work[vi], fp, vecs[j], None if frames is None else frames[j], starts, ends)
        bar.update(len(batch["video_index"]) + len(batch["errors"]))
        pause_point("encoded")
        maybe_commit()
    if long_files:
        _encode_windows(model, work, long_files, options, summary, device, skip, store_rows, maybe_commit, bar, tuner)


def _encode_windows(model, work, long_files, options, summary, device, skip, store_rows, maybe_commit, bar,
                    tuner: ThreadTuner | None = None) -> None:
    """Encode the windows of the long files, file by file in order; store a file once its last window is in."""
    import numpy as np

    items, owner = [], []
    for k, (vi, _, spans) in enumerate(long_files):
        for start, end in spans:
            items.append((work[vi].path, start, end))
            owner.append(k)
    pending: dict[int, dict] = {}
    failed: set[int] = set()
    ended: dict[int, tuple[float, str]] = {}  # file -> (start of its first window past the data, error)

    def finish(k: int) -> None:
        vi, fp, spans = long_files[k]
        acc = pending.pop(k, None)
        bar.update(1)
        if k in failed:
            return
        cut = ended.get(k)
        if cut is not None and acc is not None:  # the data ends before the header says: keep what came before
            keep = [i for i, w in enumerate(acc["window"]) if w < cut[0]]
            acc = {key: [v[i] for i in keep] for key, v in acc.items() if key != "frames"} | {
                "frames": [acc["frames"][i] for i in keep] if acc["frames"] else []}
        if acc is None or not acc["vecs"]:
            if cut is not None:
                skip(work[vi], cut[1])
            return
        vecs = np.concatenate(acc["vecs"])
        frames = np.concatenate(acc["frames"]) if acc["frames"] else None
        if store_rows(work[vi], fp, vecs, frames, np.concatenate(acc["starts"]), np.concatenate(acc["ends"])):
            summary.windows += len(acc["vecs"])
            if cut is not None:
                summary.shortened.append({
                    "path": work[vi].path,
                    "note": f"indexed up to {cut[0]:g} s of the {spans[-1][1]:g} s its header gives "
                            f"({len(acc['vecs'])} of {len(spans)} windows): {cut[1]}"})

    tuner = tuner or ThreadTuner(None)
    since = [time.monotonic()]
    done_upto = 0  # long files before this index are finished
    for batch in window_loader(model, items, options):
        for err in batch["errors"]:
            wi = int(err["video_index"])
            k = owner[wi]
            if k in failed:
                continue
            if err.get("past_data"):  # the file's data ends here: its windows end here (kept: those before)
                start = items[wi][1]
                if k not in ended or start < ended[k][0]:
                    ended[k] = (start, err["error"])
                continue
            failed.add(k)
            skip(work[long_files[k][0]], err["error"])
        if batch["frames"] is not None:
            vecs, frames = _tuned_encode(model, batch["frames"], device, options.precision, tuner, since)
            m = vecs.shape[1]
            for j, wi in enumerate(batch["video_index"].tolist()):
                k = owner[wi]
                if k in failed:
                    continue
                _, start, end = items[wi]
                starts, ends = _times(start, end, m)
                acc = pending.setdefault(k, {"vecs": [], "frames": [], "starts": [], "ends": [], "window": []})
                acc["window"].append(start)
                acc["vecs"].append(vecs[j])
                if frames is not None:
                    acc["frames"].append(frames[j])
                acc["starts"].append(starts)
                acc["ends"].append(ends)
        last = max([owner[int(i)] for i in batch["video_index"].tolist()] + [owner[int(e["video_index"])] for e in batch["errors"]])
        # windows come in order: every file before the batch's last one is complete (the last one when its
        # final window was in this batch)
        last_item = max([int(i) for i in batch["video_index"].tolist()] + [int(e["video_index"]) for e in batch["errors"]])
        upto = last + 1 if last_item + 1 >= len(items) or owner[last_item + 1] != last else last
        for k in range(done_upto, upto):
            finish(k)
        done_upto = max(done_upto, upto)
        pause_point("encoded")
        maybe_commit()
    for k in range(done_upto, len(long_files)):
        finish(k)
