"""Index throughput against its two bounds: decode-only, encode-only and the full ``hybridtower index``.

    python benchmarks/index_throughput.py                          # tiny + pig-vit-b-32, synthetic + 45 s clips
    python benchmarks/index_throughput.py --models tiny --synth 64 --long 12 --rounds 2
    python benchmarks/index_throughput.py --models vit-b-32 --sets synthetic --big-videos 8 --rounds 1

For every (model, clip set) it measures, in ONE process and interleaved round by round (so a machine
whose load changes affects every figure alike):

- ``decode``  videos/s of the index run's own decoding loader (``index.encoding.make_loader``: the
  model's frame sampling and preprocessing, the SHA-256 fingerprint of each file, one video per worker
  task) with W = ``--workers`` single-threaded workers (default the CLI's, min(4, cores)), nothing else
  running;
- ``encode``  videos/s of ``model.encode_video`` over the same frames, already decoded in memory, in
  batches of the same size, with 1 torch thread and with every core (``--encode-threads``), nothing else
  running; the encode bound is the faster of the two;
- ``index``   videos/s of ``build_index`` (what ``hybridtower index --overwrite --window 0`` runs: scan,
  decode in workers overlapped with encoding in the main process, commit with fsync, checksums) into a
  fresh folder, wall time of the whole call, for each decode-workers x encoder-threads split of
  ``--splits`` (``auto`` = what ``hybridtower index`` does: W workers, the encoder's threads chosen by
  measurement between the cores the workers leave and every core, ``index.encoding.ThreadTuner``;
  ``WxT`` = W workers and T encoder threads, fixed);

and the SHA-256 pass alone (``hash``), since it reads every byte of every file. It prints the medians
of the rounds, the two bounds, ``min`` = min(decode, encode) (the issue's goal: index >= 0.85 x min)
and ``serial`` = 1 / (1/decode + 1/encode), what the pipeline can give when decoding and encoding need
the same cores (both bounds are measured with the whole machine), and each split's index / min and
index / serial. ``--window 0``: one vector per file, the work both bounds measure (with the default
30 s windows a 45 s clip is probed, then decoded and encoded as 2 windows).

Clips: ``hybridtower synth`` clips (12 frames, 64-96 px) and 45 s clips (320x240, 25 fps, a key frame
every 2 s, one per container mp4/webm/avi/mkv, copied to reach ``--long`` files) from
``benchmarks/decode_throughput.py``. pig-vit-b-32 gets random weights (cost does not depend on them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"tiny": "pig-tiny", "vit-b-32": "pig-vit-b-32"}


def _decode_bench_module():
    path = Path(__file__).with_name("decode_throughput.py")
    spec = importlib.util.spec_from_file_location("decode_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_sets(work: Path, n_synth: int, n_long: int, long_seconds: float) -> dict[str, list[Path]]:
    from hybridtower.data.synthetic import SynthConfig, generate

    synth = work / "synth"
    have = len(list((synth / "videos").iterdir())) if (synth / "videos").is_dir() else 0
    if have < n_synth or not (synth / "captions.jsonl").is_file():
        generate(synth, SynthConfig(videos=n_synth, images=0, seed=0, workers=0), overwrite=True, progress=False)
    synth_files = sorted((synth / "videos").iterdir())[:n_synth]
    writer = _decode_bench_module().write_long_clip
    formats = [("mp4", "mp4", "libx264"), ("webm", "webm", "libvpx-vp9"), ("avi", "avi", "mpeg4"), ("mkv", "matroska", "libx264")]
    masters = []
    for i, (ext, fmt, codec) in enumerate(formats[: max(1, min(4, n_long))]):
        p = work / f"master{i}_{int(long_seconds)}s.{ext}"
        if not p.is_file():
            writer(p, fmt, codec, long_seconds, seed=i)
        masters.append(p)
    long_dir = work / "long"
    long_dir.mkdir(exist_ok=True)
    long_files = []
    for k in range(n_long):
        src = masters[k % len(masters)]
        dst = long_dir / f"clip{k:03d}{src.suffix}"
        if not dst.is_file():
            shutil.copyfile(src, dst)
        long_files.append(dst)
    return {"synthetic": synth_files, f"long {long_seconds:.0f} s": long_files}


def link_folder(folder: Path, files: list[Path]) -> Path:
    """A folder holding exactly ``files`` (hard links when possible) for ``build_index`` to scan."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for f in files:
        try:
            os.link(f, folder / f.name)
        except OSError:
            shutil.copyfile(f, folder / f.name)
    return folder


def decode_only(model, paths: list[str], options) -> tuple[float, list]:
    from hybridtower.index.encoding import make_loader

    t0 = time.perf_counter()
    batches = [b["frames"] for b in make_loader(model, paths, options) if b["frames"] is not None]
    dt = time.perf_counter() - t0
    return len(paths) / dt, batches


def encode_only(model, batches, threads: int) -> float:
    import torch

    from hybridtower.index.encoding import torch_threads

    n = sum(len(b) for b in batches)
    with torch_threads(threads), torch.no_grad():
        t0 = time.perf_counter()
        for b in batches:
            model.encode_video(b)
        return n / (time.perf_counter() - t0)


def full_index(folder: Path, out: Path, ckpt: Path, options, expected: int, split=None) -> float:
    """videos/s of one ``build_index`` run; ``split`` (workers, encoder threads) or None for ``options``."""
    import dataclasses

    from hybridtower.index import build_index

    if split is not None:
        options = dataclasses.replace(options, num_workers=split[0], encoder_threads=split[1])  # None: the tuner
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    s = build_index([folder], out, ckpt, options)
    dt = time.perf_counter() - t0
    if s.encoded != expected:
        raise RuntimeError(f"the index run encoded {s.encoded} of {expected} videos: {s.skipped[:3]}")
    shutil.rmtree(out)
    return expected / dt


def hash_only(paths: list[str]) -> float:
    from hybridtower.index.scan import file_fingerprint

    t0 = time.perf_counter()
    for p in paths:
        file_fingerprint(p)
    return len(paths) / (time.perf_counter() - t0)


def parse_splits(text: str, workers: int, cores: int) -> list[tuple[str, tuple[int, int | None]]]:
    """``auto,2x1,1x1`` -> [(label, (workers, encoder threads or None = the index run's own rule))]."""
    from hybridtower.index.encoding import encoder_threads

    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part == "auto":  # the index run's own choice: threads tuned by measurement among these counts
            auto = "/".join(str(t) for t in (encoder_threads(workers, "cpu") or [cores]))
            out.append((f"auto={workers}x{auto}", (workers, None)))
        else:
            w, t = (int(x) for x in part.lower().split("x"))
            out.append((f"{w}x{t}", (w, t)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", help="where to write clips and checkpoints (default: a temporary folder)")
    ap.add_argument("--models", default="tiny,vit-b-32", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--synth", type=int, default=64, help="synthetic clips for the tiny model (default 64)")
    ap.add_argument("--long", type=int, default=12, help="45 s clips for the tiny model (default 12)")
    ap.add_argument("--big-videos", type=int, default=12,
                    help="videos per set for pig-vit-b-32 (default 12: a CPU encodes ~1 video/s)")
    ap.add_argument("--long-seconds", type=float, default=45.0)
    ap.add_argument("--sets", default="synthetic,long", help="clip sets to measure: synthetic, long (default both)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of decode/encode/index (median)")
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the CLI's, min(4, CPUs))")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--encode-threads", default=None,
                    help="torch thread counts of the encode-only bound (default: 1 and every core)")
    ap.add_argument("--splits", default=None,
                    help="decode-workers x encoder-threads splits of the full run, e.g. auto,2x2,1x1 "
                         "(default: auto and W x cores, the run before encoder_threads)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from hybridtower import hub
    from hybridtower.index import IndexOptions
    from hybridtower.index.encoding import cpu_cores
    from hybridtower.index.identity import load_checkpoint

    cores = cpu_cores()
    torch.set_num_threads(cores)
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    enc_threads = sorted({int(x) for x in (args.encode_threads or f"1,{cores}").split(",")})
    splits = parse_splits(args.splits or f"auto,{workers}x{cores}", workers, cores)
    tmp = None
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    n_long = max(args.long, args.big_videos)
    sets = make_sets(work, max(args.synth, args.big_videos), n_long, args.long_seconds)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    results = {"conditions": {"cpus": cores, "load_average_at_start": load, "workers": workers,
                              "encode_threads": enc_threads, "splits": [lbl for lbl, _ in splits],
                              "batch_size": args.batch_size, "rounds": args.rounds, "torch": torch.__version__},
               "runs": []}
    options = IndexOptions(batch_size=args.batch_size, num_workers=workers, progress=False, overwrite=True, window=0)
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        preset = MODELS[key]
        ckpt = work / f"{key}.safetensors"
        if not ckpt.is_file():
            torch.manual_seed(0)
            hub.save_model(hub.create_model(preset).eval(), ckpt)
        model, _ = load_checkpoint(ckpt)
        wanted = {x.strip() for x in args.sets.split(",")}
        for set_name, files in sets.items():
            if set_name.split()[0] not in wanted:
                continue
            limit = args.big_videos if key != "tiny" else (args.synth if set_name == "synthetic" else args.long)
            files = files[:limit]
            folder = link_folder(work / "in" / f"{key}-{set_name.split()[0]}", files)
            paths = sorted(str(p) for p in folder.iterdir())
            rows = {"decode": [], **{f"encode_{t}t": [] for t in enc_threads},
                    **{f"index_{lbl}": [] for lbl, _ in splits}, "hash": []}
            full_index(folder, work / "warm-idx", ckpt, options, len(paths))  # warm-up: imports, caches, page cache
            for r in range(args.rounds):
                d, batches = decode_only(model, paths, options)
                rows["decode"].append(d)
                for t in (enc_threads if r % 2 == 0 else enc_threads[::-1]):
                    rows[f"encode_{t}t"].append(encode_only(model, batches, t))
                del batches
                for lbl, split in (splits if r % 2 == 0 else splits[::-1]):
                    rows[f"index_{lbl}"].append(full_index(folder, work / "idx", ckpt, options, len(paths), split))
                rows["hash"].append(hash_only(paths))
            med = {k: statistics.median(v) for k, v in rows.items()}
            encode = max(med[f"encode_{t}t"] for t in enc_threads)
            low = min(med["decode"], encode)
            serial = 1.0 / (1.0 / med["decode"] + 1.0 / encode)
            run = {"model": preset, "set": set_name, "videos": len(paths),
                   "mb_per_video": round(sum(os.path.getsize(p) for p in paths) / len(paths) / 1e6, 2),
                   **{f"{k}_videos_per_s": round(v, 2) for k, v in med.items()},
                   "encode_bound_videos_per_s": round(encode, 2), "min_bound_videos_per_s": round(low, 2),
                   "serial_bound_videos_per_s": round(serial, 2),
                   "index_over_min_bound": {lbl: round(med[f"index_{lbl}"] / low, 3) for lbl, _ in splits},
                   "index_over_serial_bound": {lbl: round(med[f"index_{lbl}"] / serial, 3) for lbl, _ in splits},
                   "hash_share_of_decode": round(med["decode"] / med["hash"], 3),
                   "rounds": {k: [round(x, 2) for x in v] for k, v in rows.items()}}
            results["runs"].append(run)
            if not args.json:
                encs = "  ".join(f"encode {t}t {med[f'encode_{t}t']:.2f}" for t in enc_threads)
                print(f"{preset} {set_name}, {len(paths)} videos ({run['mb_per_video']} MB each), videos/s "
                      f"(median of {args.rounds}):", flush=True)
                print(f"    bounds: decode {med['decode']:.2f} ({workers} workers)  {encs}  ->  min {low:.2f}  "
                      f"serial {serial:.2f}   (sha256 alone {med['hash']:.0f})", flush=True)
                for lbl, _ in splits:
                    v = med[f"index_{lbl}"]
                    print(f"    index {lbl:>9s} (workers x encoder threads): {v:7.2f}   index/min {v / low:.2f}   "
                          f"index/serial {v / serial:.2f}", flush=True)
                print("    rounds: " + "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in run["rounds"].items()),
                      flush=True)
    try:
        results["conditions"]["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        c = results["conditions"]
        print(f"conditions: {c['cpus']} CPUs, load average {tuple(round(x, 2) for x in c['load_average_at_start'] or ())} -> "
              f"{tuple(round(x, 2) for x in c.get('load_average_at_end') or ())}, batch {c['batch_size']}, "
              f"median of {c['rounds']} rounds, torch {c['torch']}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
