"""The decode + encode loop of an index run: ``encode_files(session, model, work, options, summary)``.

Files are decoded by ``VideoFrames`` (the frame sampling ``evaluate`` uses for this model,
``encode.eval_sample_mode``: linspace for PIG / CLIP-ViP, segment middles for meanP / X-Pool, and the
model's preprocessing) in ``num_workers`` DataLoader processes that die with their parent and run
single-threaded (``workers.worker_init_fn``), and encoded in batches with ``model.encode_video`` in the
main process: the frames and encoder ``hybridtower.encode`` uses for ``evaluate``. Each decoded file also reports its (size, mtime_ns, sha256) fingerprint. A file the decoder
cannot read, or whose encoding holds non-finite values, is skipped and listed, never stored.
"""

from __future__ import annotations

import sys
import time

from ..core.display import printable
from . import store
from .faults import pause_point
from .options import COMMIT_SECONDS, IndexOptions, IndexRunSummary
from .scan import FoundFile, file_fingerprint
from .session import Session
from .workers import worker_init_fn


def _index_frames_class():
    from ..data.datasets import VideoFrames

    class IndexFrames(VideoFrames):
        """VideoFrames over paths that also reports each file's (size, mtime_ns, sha256) as decoded."""

        def __getitem__(self, idx: int) -> dict:
            pause_point("decode")
            vid, path = self.videos[idx]
            try:  # size, mtime and hash from one descriptor; a FIFO/device or a file still changing is refused
                fingerprint = file_fingerprint(path)
            except OSError as exc:
                return {"error": f"cannot read file: {exc.strerror or type(exc).__name__}", "video_index": idx,
                        "video_id": vid}
            try:
                item = super().__getitem__(idx)
            except Exception as exc:  # anything a broken file makes a decoder raise: skip, never die
                return {"error": f"cannot decode: {type(exc).__name__}: {exc}", "video_index": idx, "video_id": vid}
            if "error" not in item:
                item["fingerprint"] = fingerprint
            return item

    return IndexFrames


def _collate(batch: list[dict]) -> dict:
    from ..data.datasets import collate_skip_errors

    out = collate_skip_errors(batch)
    out["fingerprints"] = [b["fingerprint"] for b in batch if "error" not in b]
    return out


def make_loader(model, paths: list[str], options: IndexOptions):
    """The decoding DataLoader of an index run over ``paths`` (batches of ``_collate``); also what
    ``benchmarks/index_throughput.py`` times as the decode-only bound."""
    from torch.utils.data import DataLoader

    from ..encode import eval_sample_mode, preprocess_for

    IndexFrames = _index_frames_class()
    ds = IndexFrames(paths, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                     sample_mode=eval_sample_mode(model))
    return DataLoader(ds, batch_size=options.batch_size, num_workers=options.num_workers, collate_fn=_collate,
                      worker_init_fn=worker_init_fn() if options.num_workers else None)


def encode_files(session: Session, model, work: list[FoundFile], options: IndexOptions, summary: IndexRunSummary,
                 desc: str) -> None:
    """Decode + encode ``work`` in order, committing every ``commit_every`` encoded videos."""
    import torch
    from tqdm.auto import tqdm

    from ..encode import autocast_context

    if not work:
        return
    loader = make_loader(model, [f.path for f in work], options)
    device = next(model.parameters()).device
    bar = tqdm(total=len(work), desc=printable(desc), unit="video", disable=not options.progress, dynamic_ncols=True)
    since_commit = 0

    def skip(f: FoundFile, error: str) -> None:
        session.errors.append({"path": f.path, "error": error})
        summary.skipped.append({"path": f.path, "error": error})

    try:
        for batch in loader:
            for err in batch["errors"]:
                skip(work[int(err["video_index"])], err["error"])
            if batch["frames"] is not None:
                with torch.no_grad(), autocast_context(device, options.precision):
                    out = model.encode_video(batch["frames"].to(device, non_blocking=True)).float()
                if model.query_independent:
                    vecs, frames = out.cpu().numpy(), None
                else:  # X-Pool: keep the frame features; the first-stage vector is their normalised mean
                    frames = out.cpu().numpy()
                    vecs = torch.nn.functional.normalize(out.mean(dim=1), dim=-1).cpu().numpy()
                bad = {int(r) for rows in store.bad_rows(vecs, frames).values() for r in rows}
                for j, (vi, fp) in enumerate(zip(batch["video_index"].tolist(), batch["fingerprints"])):
                    f = work[vi]
                    if j in bad:
                        skip(f, "the model produced non-finite or non-normalised values for this video")
                        continue
                    session.add(f.path, f.video_id, fp, vecs[j], None if frames is None else frames[j])
                    summary.encoded += 1
                    since_commit += 1
            bar.update(len(batch["video_index"]) + len(batch["errors"]))
            pause_point("encoded")
            if since_commit >= options.commit_every or (since_commit and time.monotonic() - session.last_commit > COMMIT_SECONDS):
                session.commit(complete=False)
                since_commit = 0
    except KeyboardInterrupt:
        bar.close()
        if session.pending or session.dirty:
            print(f"interrupted: committing the {len(session.pending)} video(s) encoded since the last commit",
                  file=sys.stderr, flush=True)
            session.commit(complete=False)
        raise
    bar.close()
