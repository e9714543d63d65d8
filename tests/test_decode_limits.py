"""Decoding is bounded: absurd frame sizes are scaled down or refused, non-regular files are refused fast.

The memory check decodes in fresh subprocesses and compares their peak RSS: ``VmHWM`` on Linux, because
``resource.getrusage``'s ``ru_maxrss`` keeps the parent's (pytest's) peak across fork + exec there;
``ru_maxrss`` elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from blocking import within

from hybridtower.data.synthetic import write_video
from hybridtower.data.video import decode
from hybridtower.data.video.decode import (
    MAX_FRAME_PIXELS,
    VideoDecodeError,
    capped_size,
    probe_video,
    read_all_frames,
    read_frames,
)

# a 3-frame 4096x4096 clip: ~11 KB on disk, 50 MB per decoded RGB frame before the cap
BIG = 4096
# extra peak RSS allowed over decoding a 64x64 clip in the same way: the 12 returned frames at the cap
# (12 x 1440 x 1440 x 3 = 75 MB) plus the decoder's 4096x4096 YUV frames (25 MB each, a few held by
# H.264's reference list and the conversion) and the container probe; uncapped, the 12 frames alone
# would be 604 MB (and were twice that with the old stack-and-copy).
RSS_BOUND_MB = 300

MEASURE = """
import resource, sys
from hybridtower.data.video.decode import read_frames
frames = read_frames(sys.argv[1], 12)
try:
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(frames.shape[1], frames.shape[2], peak // 1024)
"""


def _clip(path: Path, size: int, frames: int = 3) -> Path:
    arr = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):  # flat blocks: cheap to encode at any size
        arr[i, :, : size // 2, i % 3] = 200
        arr[i, size // 4 :, :, (i + 1) % 3] = 90
    write_video(arr, path, "mp4", "libx264", 10)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    return {"big": _clip(root / "huge.mp4", BIG), "small": _clip(root / "small.mp4", 64, 12)}


def _peak(path: Path) -> tuple[int, int, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=120,
                         env=env, check=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def test_capped_size():
    assert capped_size(640, 480) == (640, 480)
    assert capped_size(1920, 1080) == (1920, 1080)
    assert capped_size(3840, 2160) == (1920, 1080)  # 4K UHD: exactly half
    assert capped_size(4096, 4096) == (1440, 1440)
    w, h = capped_size(100_000, 100)  # a strip: the area is capped, the aspect ratio kept
    assert w * h <= MAX_FRAME_PIXELS and h == 45 and abs(w / h - 1000) < 15
    assert capped_size(64, 64, max_pixels=1024) == (32, 32)


def test_huge_frames_come_back_at_the_capped_size_with_bounded_memory(clips):
    info = probe_video(clips["big"])
    assert (info.width, info.height) == (BIG, BIG)  # the header tells the truth; the frames are capped
    h, w, peak_big = _peak(clips["big"])
    assert (w, h) == capped_size(BIG, BIG) == (1440, 1440)
    _, _, peak_small = _peak(clips["small"])
    assert peak_big - peak_small < RSS_BOUND_MB, (peak_big, peak_small)
    frames = read_all_frames(clips["big"])
    assert frames.shape == (3, 1440, 1440, 3)
    assert frames[0, 700, 100, 0] > 150 and frames[0, 700, 1300, 0] < 100  # content kept, scaled


def test_frames_above_the_decoding_limit_are_refused_by_name(clips, monkeypatch):
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 64 * 64 - 1)
    with pytest.raises(VideoDecodeError) as err:
        read_frames(clips["small"], 4)
    msg = str(err.value)
    assert "64x64 exceed the decoding limit" in msg
    assert "video small.mp4:" in msg and str(clips["small"].parent) not in msg


def test_read_all_frames_refuses_a_file_too_long_to_hold(clips):
    with pytest.raises(VideoDecodeError, match="too long to decode whole"):
        read_all_frames(clips["small"], max_bytes=5 * 64 * 64 * 3)
    assert read_all_frames(clips["small"]).shape == (12, 64, 64, 3)




@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_and_device_are_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    os.symlink("/dev/zero", tmp_path / "zero.mkv")
    for name, kind in (("pipe.mp4", "FIFO"), ("zero.mkv", "character device")):
        for fn in (read_frames, probe_video):
            with pytest.raises(VideoDecodeError) as err:
                within(10.0, fn, tmp_path / name)
            assert kind in err.value.reason and f"video {name}:" in str(err.value)
            assert str(tmp_path) not in str(err.value)
    with pytest.raises(VideoDecodeError, match="is a directory"):
        read_frames(tmp_path)


def test_a_stream_that_changes_size_comes_back_at_its_first_size(tmp_path):
    """Two raw H.264 streams back to back: 64x64 then 128x96. Every frame is scaled to the first size
    (before, stacking frames of two sizes failed with a ValueError)."""
    parts = []
    for name, (w, h, value) in {"a.h264": (64, 64, 200), "b.h264": (128, 96, 50)}.items():
        write_video(np.full((4, h, w, 3), value, np.uint8), tmp_path / name, "h264", "libx264", 10)
        parts.append((tmp_path / name).read_bytes())
    joined = tmp_path / "joined.h264"
    joined.write_bytes(b"".join(parts))
    frames = read_all_frames(joined)
    assert frames.shape == (8, 64, 64, 3)
    assert (frames[:4, 10, 10, 0] > 150).all() and (frames[4:, 10, 10, 0] < 100).all()
