"""Decode throughput of uniform 12-frame sampling: with seeking, without, and decoding the whole file.

    python benchmarks/decode_throughput.py                       # synthetic clips + long clips it writes
    python benchmarks/decode_throughput.py --long 6 --long-seconds 60 --json

It writes (into --work-dir, default a temporary folder) a small synthetic set (``hybridtower synth``
clips: 12 frames, 64-96 px) and a few long clips (default 4 x 45 s at 25 fps, 320x240, textured moving
content, key frame every 2 s as in typical web video; one per container: mp4/h264, webm/vp9, avi/mpeg4,
mkv/h264). For each set it prints videos/s and sampled frames/s for

- ``seek``       ``read_frames(path, 12)`` (the data pipeline's default),
- ``no-seek``    ``read_frames(path, 12, seek=False)``: one sequential pass up to the last sampled frame,
- ``whole-file`` decoding every frame of the file (what a decode-everything loader pays),

and DataLoader throughput (decode + 224 px preprocessing) with num_workers 0 and 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_long_clip(path: Path, fmt: str, codec: str, seconds: float, fps: int = 25, size=(320, 240), seed: int = 0) -> None:
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, size=(h, w * 2, 3), dtype=np.uint8)
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.codec_context.gop_size = 2 * fps
    if codec == "libx264":
        stream.options = {"preset": "veryfast", "crf": "23", "keyint": str(2 * fps), "min-keyint": str(2 * fps), "sc_threshold": "0"}
    elif codec == "libvpx-vp9":
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "g": str(2 * fps)}
    else:
        stream.bit_rate = 1_500_000
    for k in range(int(seconds * fps)):
        shift = (3 * k) % w
        arr = np.ascontiguousarray(texture[:, shift : shift + w])
        y = (k * 2) % (h - 40)
        arr[y : y + 40, 100:140] = (230, 40, 40)
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
        frame.pts = k
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()


def decode_whole(path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def bench(paths, fn, repeat: int = 1) -> dict:
    fn(paths[0])  # warm-up (imports, caches)
    t0 = time.perf_counter()
    decoded = 0
    for _ in range(repeat):
        for p in paths:
            decoded += fn(p) or 0
    dt = time.perf_counter() - t0
    n = len(paths) * repeat
    return {"videos": n, "seconds": round(dt, 3), "videos_per_s": round(n / dt, 2), "sampled_frames_per_s": round(12 * n / dt, 1), "decoded_frames_per_s": round(decoded / dt, 1) if decoded else None}


def bench_loader(split, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from hybridtower.data.datasets import VideoFrames, collate_skip_errors

    ds = VideoFrames(split, num_frames=12)
    loader = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate_skip_errors)
    t0 = time.perf_counter()
    n = sum(len(b["video_index"]) for b in loader)
    dt = time.perf_counter() - t0
    return {"num_workers": workers, "videos": n, "seconds": round(dt, 3), "videos_per_s": round(n / dt, 2), "frames_per_s": round(12 * n / dt, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", help="where to write the clips (default: a temporary folder)")
    ap.add_argument("--synth-videos", type=int, default=200, help="synthetic clips to write and read (default 200)")
    ap.add_argument("--long", type=int, default=4, help="long clips (default 4, one per container, cycling)")
    ap.add_argument("--long-seconds", type=float, default=45.0, help="length of the long clips (default 45 s)")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the long clips (default 2)")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args(argv)

    from hybridtower.data.annotations import load_split
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.data.video import read_frames

    tmp = None
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    synth = work / "synth"
    if not (synth / "captions.jsonl").is_file():
        generate(synth, SynthConfig(videos=args.synth_videos, images=0, seed=0), overwrite=True, progress=False)
    split = load_split(f"jsonl:{synth / 'captions.jsonl'}", "all")
    synth_paths = [str(v.path) for v in split.videos]
    formats = [("mp4", "mp4", "libx264"), ("webm", "webm", "libvpx-vp9"), ("avi", "avi", "mpeg4"), ("mkv", "matroska", "libx264")]
    long_paths = []
    for i in range(args.long):
        ext, fmt, codec = formats[i % len(formats)]
        p = work / f"long{i}_{int(args.long_seconds)}s.{ext}"
        if not p.is_file():
            write_long_clip(p, fmt, codec, args.long_seconds, seed=i)
        long_paths.append(str(p))

    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "sets": {}}
    sets = {"synthetic (12 frames, 64-96 px)": (synth_paths, 1)}
    for ext in dict.fromkeys(Path(p).suffix for p in long_paths):
        sets[f"long {args.long_seconds:.0f} s 320x240 25 fps {ext[1:]}"] = ([p for p in long_paths if p.endswith(ext)], args.repeat)
    for name, (paths, rep) in sets.items():
        results["sets"][name] = {
            "seek": bench(paths, lambda p: (read_frames(p, 12), 0)[1], rep),
            "no-seek": bench(paths, lambda p: (read_frames(p, 12, seek=False), 0)[1], rep),
            "whole-file": bench(paths, decode_whole, rep),
        }
    results["dataloader (synthetic, decode + 224 px preprocess)"] = [bench_loader(split, w) for w in (0, 2)]
    results["dataloader (long clips x4, decode + 224 px preprocess)"] = [bench_loader(long_paths * 4, w) for w in (0, 2)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"CPUs: {results['machine']['cpus']}")
        print(f"{'set':45s} {'mode':11s} {'videos/s':>9s} {'frames/s':>9s} {'decoded fr/s':>13s}")
        for name, modes in results["sets"].items():
            for mode, r in modes.items():
                dec = f"{r['decoded_frames_per_s']:.0f}" if r["decoded_frames_per_s"] else "-"
                print(f"{name:45s} {mode:11s} {r['videos_per_s']:9.2f} {r['sampled_frames_per_s']:9.1f} {dec:>13s}")
        for key in [k for k in results if k.startswith("dataloader")]:
            for r in results[key]:
                print(f"{key}: num_workers={r['num_workers']}: {r['videos_per_s']:.1f} videos/s, {r['frames_per_s']:.0f} frames/s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
