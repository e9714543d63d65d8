"""Index one long synthetic video with moment windows: wall time and peak memory (issue 10, section 2).

    python benchmarks/long_video.py --hours 2 --work bench-long            # the figures in docs/index.md
    python benchmarks/long_video.py --hours 2 --compare-minutes 10         # also a 10-minute file: same memory?
    python benchmarks/long_video.py --hours 2 --container mp4,mkv          # MP4 and the same stream in Matroska

``--container mkv`` remuxes the MP4 (stream copy, no re-encoding) into Matroska, whose header gives a
duration but no frame count: the index run then counts the file's packets (demux only) before planning
its windows, so a header that overstates the duration cannot plan windows past the real end; the two
rows side by side show what that count costs (2 h, shared 2-core machine: mp4 6.5 s, mkv 6.6 s wall; the
count itself 65 ms).

Writes a ``--hours`` long 64x64, 2 fps synthetic video (``data.synthetic.long.write_long_video``: blank
background with one described scene) in a child process, then indexes it with ``build_index`` (windows
``--window``/``--stride``, default the index defaults 30/15 s) in a fresh child process that reports its
wall time, CPU time (user + sys, less distorted than wall time on a shared machine) and ``ru_maxrss``
(peak resident set size of the indexing process; decoding workers, with
``--workers`` > 0, are reported separately as the largest child). The model is the shipped demo PIG
(``demo-pig-tiny``) unless ``--checkpoint`` is given. With ``--compare-minutes`` a shorter file is
indexed the same way, so the two peaks show whether memory grows with the video's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "hybridtower" / "assets" / "demo-pig-tiny.safetensors"


def _write(path: Path, seconds: float) -> dict:
    from hybridtower.data.synthetic.long import write_long_video

    t0 = time.perf_counter()
    info = write_long_video(path, seconds, seconds / 2, seconds / 2 + 20, seed=0)
    return {"write_s": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size, **info}


def _remux(src: Path, dst: Path) -> None:
    """Copy ``src``'s video packets into a Matroska file ``dst`` (no re-encoding)."""
    import av

    tmp = dst.with_suffix(".part.mkv")
    with av.open(str(src)) as inp, av.open(str(tmp), "w", format="matroska") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
    tmp.replace(dst)


def _index(video: Path, out: Path, checkpoint: str, window: float | None, stride: float | None, workers: int) -> dict:
    from hybridtower.index.builder import IndexOptions, build_index

    t0 = time.perf_counter()
    summary = build_index([video], out, checkpoint, IndexOptions(window=window, stride=stride, num_workers=workers,
                                                                 progress=False, overwrite=True))
    seconds = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"index_s": round(seconds, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "windows": summary.windows, "encoded": summary.encoded,
            "skipped": len(summary.skipped), "windows_per_s": round(summary.windows / seconds, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "children_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def _child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(work: Path, seconds: float, args, container: str = "mp4") -> dict:
    video = work / f"long-{int(seconds)}s" / "long.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    made = _child(["--_write", str(video), str(seconds)]) if not video.is_file() else {"reused": True,
                                                                                     "bytes": video.stat().st_size}
    if container == "mkv":
        mkv = work / f"long-{int(seconds)}s-mkv" / "long.mkv"
        mkv.parent.mkdir(parents=True, exist_ok=True)
        if not mkv.is_file():
            _remux(video, mkv)
        video, made = mkv, {**made, "bytes": mkv.stat().st_size}
    flags = ["--_index", str(video), str(work / f"index-{int(seconds)}s-{container}"), args.checkpoint,
             str(args.window), str(args.stride), str(args.workers)]
    return {"duration_s": seconds, "container": container, "video": made, **_child(flags)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_write":
        print(json.dumps(_write(Path(sys.argv[2]), float(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--_index":
        _, _, video, out, ckpt, window, stride, workers = sys.argv
        w = None if window == "None" else float(window)
        s = None if stride == "None" else float(stride)
        print(json.dumps(_index(Path(video), Path(out), ckpt, w, s, int(workers))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--compare-minutes", type=float, default=None, help="also index a file this long")
    p.add_argument("--work", default="bench-long", help="work folder (videos are reused)")
    p.add_argument("--checkpoint", default=str(DEMO))
    p.add_argument("--window", type=float, default=None)
    p.add_argument("--stride", type=float, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--container", default="mp4",
                   help="comma-separated: mp4 (as written) and/or mkv (the same stream remuxed into Matroska: "
                        "no frame count in its header, so its packets are counted first)")
    args = p.parse_args()
    containers = [c.strip() for c in args.container.split(",") if c.strip()]
    if not containers or any(c not in ("mp4", "mkv") for c in containers):
        raise SystemExit("--container takes mp4 and/or mkv")
    work = Path(args.work)
    runs = []
    for container in containers:
        if args.compare_minutes:
            runs.append(measure(work, args.compare_minutes * 60, args, container))
        runs.append(measure(work, args.hours * 3600, args, container))
    for r in runs:
        v = r["video"]
        print(f"{r['duration_s'] / 3600:.2f} h {r['container']} video ({v['bytes'] / 2**20:.1f} MiB): {r['windows']} windows indexed in "
              f"{r['index_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU of the indexing process (model load included; "
              f"{r['windows_per_s']} windows/s), peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(largest worker {r['children_peak_rss_mib']:.0f} MiB)")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
