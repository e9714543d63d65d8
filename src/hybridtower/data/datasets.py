"""PyTorch datasets over :class:`SplitData` (captions stay strings: tokenisation belongs to the model side).

All three datasets decode inside ``__getitem__``, so a ``torch.utils.data.DataLoader`` with
``num_workers > 0`` decodes videos in worker processes (each worker opens its own files; the datasets
hold only paths and strings, so they pickle cheaply). Rough guide for ``num_workers``: one worker per
spare CPU core; on this 2-core machine 2 workers roughly double decode throughput over 0 (see
``docs/data.md``). Randomness (jittered frames, the caption drawn for a video) comes from a
``random.Random`` seeded by ``(seed, epoch, index)``, so results do not depend on the number of
workers; call ``set_epoch(epoch)`` each epoch to draw new samples.

A file that fails to decode does not crash a worker: the item is ``{"error": str, "video_index": i,
...}`` and :func:`collate_skip_errors` drops it from the batch and lists it under ``"errors"``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .annotations.base import DataError, SplitData
from .video.decode import VideoDecodeError, read_frames
from .video.transforms import PreprocessConfig, preprocess_frames

__all__ = ["TrainPairs", "VideoFrames", "ImageCaptions", "collate_skip_errors", "load_image"]


def item_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream of one item in one epoch (caption choice, then frame sampling)."""
    return random.Random(f"{seed}:{epoch}:{index}")


def error_item(video_index: int, video_id: str, error: str) -> dict:
    """What a dataset returns for a video it cannot read (``collate_skip_errors`` lists it)."""
    return {"error": error, "video_index": video_index, "video_id": video_id}


class TrainPairs(Dataset):
    """Training pairs, one item per VIDEO (method.md §2.2 "video epochs"): each access draws one of its
    captions at random and samples ``num_frames`` frames with ``sample_mode`` (default the PIG train
    "jitter").

    Videos without a file or without captions are left out (``self.skipped`` lists their ids).
    Item: ``{"frames": float [T, 3, S, S], "text": str, "video_index": int, "video_id": str}`` where
    ``video_index`` indexes ``split.videos``; a decode failure gives ``{"error", "video_index", "video_id"}``.
    """

    def __init__(
        self,
        split: SplitData,
        num_frames: int = 12,
        preprocess: PreprocessConfig | None = None,
        sample_mode: str = "jitter",
        seed: int = 0,
    ):
        self.split_name = split.name
        self.num_frames = num_frames
        self.preprocess = preprocess or PreprocessConfig()
        self.sample_mode = sample_mode
        self.seed = seed
        self.epoch = 0
        caps = split.captions_by_video()
        self.items: list[tuple[int, str, str, list[str]]] = []
        self.skipped: list[str] = []
        for i, v in enumerate(split.videos):
            texts = caps.get(v.video_id, [])
            if v.path is None or not texts:
                self.skipped.append(v.video_id)
                continue
            self.items.append((i, v.video_id, str(v.path), texts))
        if not self.items:
            raise DataError(f"split {split.name!r} has no video with both a file and a caption")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        vindex, vid, path, texts = self.items[idx]
        rng = item_rng(self.seed, self.epoch, idx)
        text = texts[rng.randrange(len(texts))]
        try:
            frames = read_frames(path, self.num_frames, self.sample_mode, rng)
        except VideoDecodeError as exc:
            return error_item(vindex, vid, str(exc))
        return {
            "frames": preprocess_frames(frames, self.preprocess),
            "text": text,
            "video_index": vindex,
            "video_id": vid,
        }


class VideoFrames(Dataset):
    """Evaluation / indexing: one item per video of ``split.videos`` (same order), deterministic frames.

    Item: ``{"frames": float [T, 3, S, S], "video_index": int, "video_id": str}``; a missing or broken
    file gives ``{"error": str, "video_index", "video_id"}`` so the collate can skip and report it.
    ``videos`` may also be a plain list of paths (``video_id`` is then the path).
    """

    def __init__(
        self,
        split: SplitData | list,
        num_frames: int = 12,
        preprocess: PreprocessConfig | None = None,
        sample_mode: str = "uniform",
        seed: int = 0,
    ):
        if isinstance(split, SplitData):
            self.videos = [(v.video_id, str(v.path) if v.path is not None else None) for v in split.videos]
        else:
            self.videos = [(str(p), str(p)) for p in split]
        self.num_frames = num_frames
        self.preprocess = preprocess or PreprocessConfig()
        self.sample_mode = sample_mode
        self.seed = seed

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, idx: int) -> dict:
        vid, path = self.videos[idx]
        if path is None:
            return error_item(idx, vid, f"video {vid!r}: file not found")
        try:
            frames = read_frames(path, self.num_frames, self.sample_mode, item_rng(self.seed, 0, idx))
        except VideoDecodeError as exc:
            return error_item(idx, vid, str(exc))
        return {"frames": preprocess_frames(frames, self.preprocess), "video_index": idx, "video_id": vid}


def load_image(path) -> np.ndarray:
    """An image file as uint8 ``[H, W, 3]`` RGB; a broken file raises VideoDecodeError (same error path)."""
    from PIL import Image, UnidentifiedImageError

    from ..core.io import open_regular

    try:
        fd, _ = open_regular(path)  # a FIFO or device named like an image is refused, never blocks
        with os.fdopen(fd, "rb") as fh, Image.open(fh) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise VideoDecodeError(path, "file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VideoDecodeError(path, f"not a readable image: {exc}") from None


class ImageCaptions(Dataset):
    """Image-caption pairs for pretraining a tiny CLIP, one item per CAPTION whose media file exists.

    With an ``images`` split the media are image files; with any video split one frame is drawn at
    random from the caption's video each access (``frame_mode="random"``) or the middle frame
    (``"middle"``, deterministic). Item: ``{"frames": float [1, 3, S, S], "text": str,
    "video_index": int, "video_id": str}`` or an error item.
    """

    def __init__(
        self,
        split: SplitData,
        preprocess: PreprocessConfig | None = None,
        seed: int = 0,
        frame_mode: str = "random",
    ):
        if frame_mode not in ("random", "middle"):
            raise DataError(f"ImageCaptions frame_mode must be 'random' or 'middle', got {frame_mode!r}")
        self.is_images = split.format == "images"
        self.preprocess = preprocess or PreprocessConfig()
        self.seed = seed
        self.epoch = 0
        self.frame_mode = frame_mode
        index = split.video_index()
        self.items = []
        for c in split.captions:
            i = index[c.video_id]
            path = split.videos[i].path
            if path is not None:
                self.items.append((i, c.video_id, str(path), c.text))
        if not self.items:
            raise DataError(f"split {split.name!r} has no caption whose image/video file exists")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        vindex, vid, path, text = self.items[idx]
        try:
            if self.is_images or Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
                frame = load_image(path)[None]
            else:
                mode = "random" if self.frame_mode == "random" else "uniform"
                frame = read_frames(path, 1, mode, item_rng(self.seed, self.epoch, idx))
        except VideoDecodeError as exc:
            return error_item(vindex, vid, str(exc))
        return {"frames": preprocess_frames(frame, self.preprocess), "text": text, "video_index": vindex, "video_id": vid}


def collate_skip_errors(batch: list[dict]) -> dict:
    """Stack the good items of ``batch``; list the failed ones instead of raising.

    Returns ``{"frames": Tensor [B, T, 3, S, S] or None when every item failed, "texts": [str] (absent
    texts omitted), "video_index": LongTensor [B], "video_ids": [str], "errors": [{"video_index",
    "video_id", "error"}]}``.
    """
    import torch

    good = [b for b in batch if "error" not in b]
    errors = [{"video_index": b["video_index"], "video_id": b.get("video_id"), "error": b["error"]} for b in batch if "error" in b]
    out = {
        "frames": torch.stack([b["frames"] for b in good]) if good else None,
        "texts": [b["text"] for b in good if "text" in b],
        "video_index": torch.tensor([b["video_index"] for b in good], dtype=torch.long),
        "video_ids": [b.get("video_id") for b in good],
        "errors": errors,
    }
    return out
