"""Frame preprocessing built from the backbone's preprocessing config (size, mean/std, resize mode).

The PIG / CLIP-ViP release resizes frames to ``224 x 224`` *without* keeping the aspect ratio
("squash"), bicubic, then normalises with CLIP's mean/std; train and test are identical (no
augmentation). That is the default here. ``resize_mode="shortest"`` gives CLIP4Clip / open_clip's
"resize the short side, centre-crop" instead, and ``resize_mode="longest"`` open_clip's "resize the long
side, keep the aspect, pad to a square (centred) with ``fill``" (its ``ResizeKeepRatio(longest=1)`` +
``CenterCropOrPad``: nothing of the frame is cut off). An open_clip model's ``visual.preprocess_cfg`` dict
can be turned into a config with :meth:`PreprocessConfig.from_open_clip`.

A "shortest" resize of a frame far longer than wide (a 60000 x 2 stream) would make a float copy of
``S x 30000 S`` only to keep its centre ``S x S``: such a frame (long side over :data:`MAX_ASPECT` times
the short one) is first cut to the centre part the crop keeps, with :data:`MAX_ASPECT` x its short side
of margin, and the crop is placed where the full-size resize would have put it (:func:`shortest_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...core.errors import ConfigError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("squash", "shortest", "longest")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
#: "shortest" resizing of a frame whose long side is more than this many times its short side first cuts
#: it to its centre part of this many times the short side (the resized copy stays at most S x MAX_ASPECT S)
MAX_ASPECT = 8


@dataclass
class PreprocessConfig:
    image_size: int = 224  # output frames are image_size x image_size
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN  # per-channel mean subtracted (RGB, 0..1 scale)
    std: tuple[float, float, float] = OPENAI_CLIP_STD  # per-channel std divided by
    resize_mode: str = "squash"  # "squash": resize to SxS ignoring aspect (PIG release); "shortest": short side + centre crop; "longest": long side + centred padding
    interpolation: str = "bicubic"  # bicubic | bilinear | nearest
    fill: int = 0  # "longest" only: the padding's pixel value, 0..255 on every channel (open_clip's fill_color)

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"preprocess.resize_mode must be one of {list(RESIZE_MODES)}, got {self.resize_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess.interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        if int(self.image_size) < 1:
            raise ConfigError(f"preprocess.image_size must be positive, got {self.image_size}")
        if isinstance(self.fill, bool) or not isinstance(self.fill, (int, np.integer)) or not 0 <= int(self.fill) <= 255:
            raise ConfigError(f"preprocess.fill must be a whole number 0..255, got {self.fill!r}")
        self.fill = int(self.fill)
        self.mean = tuple(float(x) for x in self.mean)
        self.std = tuple(float(x) for x in self.std)

    @classmethod
    def from_open_clip(cls, preprocess_cfg: dict, resize_mode: str | None = None) -> "PreprocessConfig":
        """From open_clip's ``model.visual.preprocess_cfg`` (keys size, mean, std, interpolation, resize_mode,
        fill_color).

        ``resize_mode`` overrides the open_clip value. A non-square ``size`` is refused (frames here are
        square).
        """
        size = preprocess_cfg.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(set(int(x) for x in size)) != 1:
                raise ConfigError(f"preprocess size must be square here, got {tuple(size)}")
            size = size[0]
        mode = resize_mode or preprocess_cfg.get("resize_mode", "shortest")
        return cls(
            image_size=int(size),
            mean=tuple(preprocess_cfg.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(preprocess_cfg.get("std", OPENAI_CLIP_STD)),
            resize_mode=mode,
            interpolation=preprocess_cfg.get("interpolation", "bicubic"),
            fill=preprocess_cfg.get("fill_color", 0),
        )


def shortest_plan(h: int, w: int, s: int) -> tuple[slice, slice, tuple[int, int], tuple[int, int]]:
    """How a "shortest" resize (short side to ``s``, centre ``s x s`` crop) of an ``h x w`` frame is done:
    ``(rows, cols, out_hw, (top, left))``: the input part ``frame[rows, cols]`` is resized to ``out_hw`` and
    ``[top:top+s, left:left+s]`` of that is the result.

    Up to :data:`MAX_ASPECT`: the whole frame, the size and crop of open_clip / CLIP4Clip (unchanged
    output). Longer: the centre ``MAX_ASPECT x short`` part, resized at the same scale, and the crop offset
    that puts the output where the full-size resize put it (to half an output pixel; only a
    cut edge's antialiasing differs, ``(MAX_ASPECT - 1) / 2`` crop widths away from what is kept), so the float
    copy is at most ``s x MAX_ASPECT s`` whatever the frame's shape.
    """
    h, w, s = int(h), int(w), int(s)
    scale = s / min(h, w)
    full = (max(s, round(h * scale)), max(s, round(w * scale)))
    crop = ((full[0] - s) // 2, (full[1] - s) // 2)
    whole = slice(None)
    short, long = min(h, w), max(h, w)
    if long <= MAX_ASPECT * short:
        return whole, whole, full, crop
    axis = 0 if h > w else 1  # the long axis
    keep = MAX_ASPECT * short
    off = (long - keep) // 2
    size = max(s, round(keep * full[axis] / long))  # the kept part at the full resize's scale
    # the full crop's first edge, in input pixels (align_corners=False: edges map to edges), in the part
    edge = crop[axis] * long / full[axis] - off
    start = min(max(0, round(edge * size / keep)), size - s)
    part = slice(off, off + keep)
    if axis == 0:
        return part, whole, (size, full[1]), (start, crop[1])
    return whole, part, (full[0], size), (crop[0], start)


def preprocess_frames(frames: np.ndarray, cfg: PreprocessConfig | None = None, chunk: int = 4):
    """uint8 ``[T, H, W, 3]`` RGB -> float32 ``torch.Tensor [T, 3, S, S]`` (resized, normalised).

    Frames are converted to float and resized ``chunk`` at a time, so the float copy at the input size
    (4 bytes a sample, 4x the decoded frames) never exists for the whole clip at once; each frame is
    resized on its own, so the result does not depend on ``chunk``.
    """
    import torch
    import torch.nn.functional as F

    cfg = cfg or PreprocessConfig()
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [T, H, W, 3], got {tuple(frames.shape)}")
    s = int(cfg.image_size)
    t, h, w = frames.shape[:3]
    if cfg.resize_mode == "squash":
        out_hw = (s, s)
    elif cfg.resize_mode == "shortest":
        rows, cols, out_hw, (top, left) = shortest_plan(h, w, s)
        frames = frames[:, rows, cols]  # a view: only the kept part is converted to float below
    else:  # "longest": the long side becomes s, the other keeps the aspect (at least one pixel)
        ratio = max(h / s, w / s)
        out_hw = (min(s, max(1, round(h / ratio))), min(s, max(1, round(w / ratio))))
    # "longest": where the resized frame lies in the s x s output (padding split as open_clip does:
    # the odd pixel goes to the bottom / right)
    pad_top, pad_left = (s - out_hw[0]) // 2, (s - out_hw[1]) // 2
    kw = {} if cfg.interpolation == "nearest" else {"align_corners": False, "antialias": True}
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((t, 3, s, s), dtype=torch.float32)
    step = max(1, int(chunk))
    for start in range(0, t, step):
        part = np.ascontiguousarray(frames[start : start + step])
        x = torch.from_numpy(part).permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != out_hw:
            x = F.interpolate(x, size=out_hw, mode=cfg.interpolation, **kw)
        if cfg.resize_mode == "shortest":
            x = x[..., top : top + s, left : left + s]
        x = x.clamp_(0.0, 1.0)  # bicubic overshoot; PIL clamps to uint8 range too
        if cfg.resize_mode == "longest" and x.shape[-2:] != (s, s):
            canvas = torch.full((x.shape[0], 3, s, s), cfg.fill / 255.0, dtype=torch.float32)
            canvas[..., pad_top : pad_top + out_hw[0], pad_left : pad_left + out_hw[1]] = x
            x = canvas
        out[start : start + x.shape[0]] = (x - mean) / std
    return out
