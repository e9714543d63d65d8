"""Video decoding (PyAV), frame-index sampling and frame preprocessing."""

from .decode import (
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    VideoInfo,
    decode_frames,
    probe_video,
    read_all_frames,
    read_frames,
)
from .sampling import SAMPLING_MODES, sample_indices
from .transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig, preprocess_frames

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoDecodeError",
    "VideoInfo",
    "decode_frames",
    "probe_video",
    "read_all_frames",
    "read_frames",
    "SAMPLING_MODES",
    "sample_indices",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PreprocessConfig",
    "preprocess_frames",
]
