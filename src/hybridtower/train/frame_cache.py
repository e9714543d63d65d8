"""An in-memory frame cache for small training sets (``cache_frames: true``).

On a CPU, decoding and resizing the clips costs more than the tiny models' training step. With the cache,
every training video is decoded (all of its frames) and preprocessed ONCE; each access then draws the
caption and the frame indices exactly as :class:`hybridtower.data.datasets.TrainPairs` does (the same
``(seed, epoch, index)`` random stream, the same ``sample_indices``) and indexes the cached tensor, so
the training items are the same as without the cache: preprocessing is per frame, so preprocessing
every frame and then selecting equals selecting and then preprocessing.

Memory: frames x 3 x S x S float32 per video (the synthetic benchmark's 700 training clips x 12 frames
at 64 px: about 0.4 GB). Caches are shared inside one process (keyed by the videos and the
preprocessing), so the comparison's runs decode the data once.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

_CACHES: dict[tuple, list] = {}


class _DecodeAll(Dataset):
    def __init__(self, paths: list[str], preprocess):
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from ..data.video.decode import VideoDecodeError, read_all_frames
        from ..data.video.transforms import preprocess_frames

        try:
            return i, preprocess_frames(read_all_frames(self.paths[i]), self.preprocess)
        except VideoDecodeError as exc:
            return i, str(exc)


def _first(batch):
    return batch[0]


class CachedTrainPairs(Dataset):
    """Same items as ``base`` (a TrainPairs), served from decoded-once frames."""

    in_memory = True  # the trainer reads it without DataLoader workers

    def __init__(self, base, num_workers: int = 0, progress: bool = False):
        self.base = base
        key = (tuple(p for _, _, p, _ in base.items), repr(base.preprocess))
        if key not in _CACHES:
            from tqdm.auto import tqdm

            paths = [p for _, _, p, _ in base.items]
            frames: list = [None] * len(paths)
            loader = DataLoader(_DecodeAll(paths, base.preprocess), batch_size=1, num_workers=num_workers,
                                collate_fn=_first)
            for i, x in tqdm(loader, total=len(paths), desc="decode training videos", unit="video",
                             disable=not progress):
                frames[i] = x
            _CACHES[key] = frames
        self.frames = _CACHES[key]

    @property
    def skipped(self):
        return self.base.skipped

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict:
        from ..data.datasets import error_item, item_rng
        from ..data.video.sampling import sample_indices

        vindex, vid, _, texts = self.base.items[idx]
        rng = item_rng(self.base.seed, self.base.epoch, idx)  # TrainPairs' stream: caption, then frames
        text = texts[rng.randrange(len(texts))]
        cached = self.frames[idx]
        if isinstance(cached, str):
            return error_item(vindex, vid, cached)
        indices = sample_indices(cached.shape[0], self.base.num_frames, self.base.sample_mode, rng)
        return {"frames": cached[torch.tensor(indices)], "text": text, "video_index": vindex, "video_id": vid}


def clear_cache() -> None:
    _CACHES.clear()
