"""Peak memory (RSS) of decoding one video: a normal clip against absurd frame sizes.

    python benchmarks/decode_memory.py --work-dir bench-mem           # about 30 s
    python benchmarks/decode_memory.py --work-dir bench-mem --json

It writes short H.264 clips of flat colour blocks (a few KB each whatever their size, like a hostile
upload) and measures the peak RSS of a fresh Python process doing one of:

- ``read_frames``   ``read_frames(path, 12)``: what ``data inspect --decode`` and the thumbnails do;
- ``index item``    one ``VideoFrames`` item, i.e. decoding plus the 224 px preprocessing: what an
  indexing or evaluation worker does per video.

``baseline`` is the same process importing what it needs (torch for the index item) and decoding nothing. The peak is the process's
``VmHWM`` (Linux ``/proc/self/status``); elsewhere ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. On Linux
``ru_maxrss`` is no good here: it keeps the parent's peak across fork + exec, so a child of a 700 MB
process reports at least 700 MB whatever it does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CLIPS = [  # name, width, height, frames
    ("normal 320x240", 320, 240, 24),
    ("full HD 1920x1080", 1920, 1080, 12),
    ("absurd 4096x4096", 4096, 4096, 3),
    ("absurd 8192x4320", 8192, 4320, 2),
    ("refused 8192x8192", 8192, 8192, 2),
]

CHILD = """
import json, resource, sys

def peak_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

mode, path = sys.argv[1], sys.argv[2]
from hybridtower.data.video.decode import VideoDecodeError, read_frames
if mode.startswith("index item"):
    from hybridtower.data.datasets import VideoFrames  # imports torch
shape, error = None, None
try:
    if mode == "read_frames":
        shape = list(read_frames(path, 12).shape)
    elif mode == "index item":
        item = VideoFrames([path], num_frames=12)[0]
        shape, error = (list(item["frames"].shape), None) if "frames" in item else (None, item["error"])
except VideoDecodeError as exc:
    error = str(exc)
print(json.dumps({"peak_mb": peak_mb(), "shape": shape, "error": error}))
"""


def write_clip(path: Path, width: int, height: int, frames: int) -> None:
    from hybridtower.data.synthetic import write_video

    arr = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        arr[i, :, : width // 2, i % 3] = 200
        arr[i, height // 4 :, :, (i + 1) % 3] = 90
    write_video(arr, path, "mp4", "libx264", 10)


def measure(mode: str, path: Path | str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", help="where the clips are written (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="decode-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [{"clip": "baseline (imports only)", "mode": mode, **measure(mode + " imports", "-")}
            for mode in ("read_frames", "index item")]
    for name, w, h, n in CLIPS:
        path = work / f"{w}x{h}.mp4"
        if not path.exists():
            write_clip(path, w, h, n)
        for mode in ("read_frames", "index item"):
            rows.append({"clip": name, "file_kb": round(path.stat().st_size / 1024, 1), "mode": mode, **measure(mode, path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'clip':26s} {'file':>8s} {'mode':12s} {'peak RSS':>9s}  result")
    for r in rows:
        size = f"{r['file_kb']} KB" if "file_kb" in r else ""
        result = r["error"] or (" x ".join(map(str, r["shape"])) if r["shape"] else "")
        print(f"{r['clip']:26s} {size:>8s} {r.get('mode', ''):12s} {r['peak_mb']:7.0f} MB  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
