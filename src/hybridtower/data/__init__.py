"""Data layer: video decoding and sampling, annotation readers, torch datasets, the synthetic benchmark.

Never imports ``hybridtower.models``. Heavy imports (torch, av) happen inside the submodules that need
them; ``from hybridtower.data import load_split`` stays light.

- :mod:`hybridtower.data.video` - ``probe_video``, ``read_frames``, ``sample_indices``, ``PreprocessConfig``
- :mod:`hybridtower.data.annotations` - ``load_split("FORMAT:ROOT", split)``, ``list_formats()``
- :mod:`hybridtower.data.datasets` - ``TrainPairs``, ``VideoFrames``, ``ImageCaptions``, ``collate_skip_errors``
- :mod:`hybridtower.data.synthetic` - ``generate`` (``hybridtower synth``)
"""

from .annotations import (
    CaptionRecord,
    DataError,
    SplitData,
    VideoRecord,
    list_formats,
    choose_test_split,
    list_splits,
    load_split,
    parse_data_spec,
)
from .video.decode import VideoDecodeError, VideoInfo, probe_video, read_frames
from .video.sampling import sample_indices
from .video.transforms import PreprocessConfig, preprocess_frames

__all__ = [
    "CaptionRecord",
    "DataError",
    "SplitData",
    "VideoRecord",
    "list_formats",
    "choose_test_split",
    "list_splits",
    "load_split",
    "parse_data_spec",
    "VideoDecodeError",
    "VideoInfo",
    "probe_video",
    "read_frames",
    "sample_indices",
    "PreprocessConfig",
    "preprocess_frames",
]
