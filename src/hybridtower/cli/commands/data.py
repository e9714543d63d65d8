"""``hybridtower data ...``: check a dataset before training (``data inspect``, ``data formats``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG = """\
examples:
  hybridtower data formats                                   # every FORMAT and the files it expects
  hybridtower data inspect --data msrvtt:datasets/msrvtt     # counts per split, missing videos
  hybridtower data inspect --data msrvtt:data/synth --split test-1ka --decode
  hybridtower data inspect --data jsonl:my_videos/captions.jsonl --decode --json > report.json
  hybridtower data inspect --data msvd:datasets/msvd --video-root /mnt/msvd/YouTubeClips

Exit status: 0 when every video is present (and, with --decode, readable); 1 otherwise.
The report goes to stdout; the progress bar (only when stderr is a terminal) to stderr. Control
characters in ids, paths and reasons are printed as escapes; unreadable files are named relative to
the split's video folder.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="inspect datasets (counts, missing and unreadable videos)",
        description="Dataset tools. Datasets are named --data FORMAT:ROOT; see `hybridtower data formats`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    insp = sub.add_parser(
        "inspect",
        help="videos, captions per split, missing files; --decode opens every video",
        description="Report what a dataset holds before training: videos and captions per split, missing "
        "video files, and with --decode every video opened and sampled (12 uniform frames) with the reason "
        "for each unreadable one.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    insp.add_argument("--data", required=True, metavar="FORMAT:ROOT", help="e.g. msrvtt:datasets/msrvtt or jsonl:my/captions.jsonl")
    insp.add_argument("--split", help="one split (default: every split the dataset has)")
    insp.add_argument("--video-root", help="folder holding the videos (default: the reader's, e.g. ROOT/videos)")
    insp.add_argument("--decode", action="store_true", help="open and sample every video; list unreadable ones")
    insp.add_argument("--frames", type=int, default=12, help="frames sampled per video with --decode (default 12)")
    insp.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="decode processes (default 2)")
    insp.add_argument("--show", type=int, default=10, help="how many missing/unreadable ids to print (default 10; --json lists all)")
    insp.add_argument("--json", action="store_true", help="print the report as JSON")
    insp.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    insp.set_defaults(func=run_inspect)
    fmts = sub.add_parser("formats", help="list dataset formats and the files each expects under ROOT")
    fmts.set_defaults(func=run_formats)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_formats(args) -> int:
    from ...data.annotations import list_formats

    from ...core.display import printable

    for name, desc in list_formats().items():
        print(f"{name:8s} {printable(desc)}")
    return 0


def _check_video(job):
    from ...data.video.decode import VideoDecodeError, read_frames

    vid, path, frames = job
    try:
        arr = read_frames(path, frames, "uniform")
        return vid, None, list(arr.shape)
    except VideoDecodeError as exc:
        return vid, exc.reason, None
    except Exception as exc:  # a decoder bug must not end the whole report; never show the full path
        return vid, f"{type(exc).__name__}: {str(exc).replace(path, os.path.basename(path))}", None


def _decode_all(split, frames: int, workers: int, progress: bool = True) -> tuple[list[dict], dict]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    jobs = [(v.video_id, str(v.path), frames) for v in split.videos if v.path is not None]
    paths = {v.video_id: str(v.path) for v in split.videos if v.path is not None}
    bad, shapes = [], {}
    bar = tqdm(total=len(jobs), desc=f"decode {split.name}", unit="video", leave=False, file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()))
    try:
        if workers <= 1 or len(jobs) < 8:
            results = map(_check_video, jobs)
            for res in results:
                _collect(res, bad, shapes, paths)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for res in pool.map(_check_video, jobs, chunksize=8):
                    _collect(res, bad, shapes, paths)
                    bar.update(1)
    finally:
        bar.close()
    return bad, shapes


def _collect(res, bad, shapes, paths):
    vid, reason, shape = res
    if reason is not None:
        bad.append({"video_id": vid, "path": paths[vid], "reason": reason})
    else:
        key = f"{shape[2]}x{shape[1]}"
        shapes[key] = shapes.get(key, 0) + 1


def run_inspect(args) -> int:
    from ...data.annotations import list_splits, load_split

    splits = [args.split] if args.split else list_splits(args.data)
    if not args.split and "all" in splits and len(splits) > 1:
        splits.remove("all")  # a JSONL's "all" repeats the named splits
    report = {"data": args.data, "splits": []}
    problems = False
    for name in splits:
        split = load_split(args.data, name, args.video_root)
        entry = split.summary()
        entry["missing"] = list(split.missing)
        problems |= bool(split.missing)
        if args.decode:
            bad, sizes = _decode_all(split, args.frames, args.workers, progress=not args.no_progress)
            entry["decoded_ok"] = entry["videos"] - entry["videos_missing"] - len(bad)
            entry["unreadable"] = bad
            entry["frame_sizes"] = sizes
            problems |= bool(bad)
        report["splits"].append(entry)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, args.show)
    return 1 if problems else 0


def _shown_path(path: str, video_root: str) -> str:
    """``path`` relative to the split's video folder when it lies inside it, else its base name."""
    if video_root:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(video_root))
        if not rel.startswith(os.pardir):
            return rel
    return os.path.basename(path)


def _print_report(report: dict, show: int) -> None:
    from ...core.display import printable, printable_path

    print(f"dataset {printable(report['data'])}")
    for e in report["splits"]:
        cpv = e["captions_per_video"]
        root = printable_path(e["video_root"]) if e["video_root"] else "-"
        print(
            f"  split {printable(e['split'])}: {e['videos']} videos, {e['captions']} captions "
            f"({cpv['min']}-{cpv['max']} per video, mean {cpv['mean']}); videos from {root}"
        )
        if e["videos_without_captions"]:
            print(f"    {e['videos_without_captions']} videos have no caption")
        if e["missing"]:
            print(
                f"    MISSING: {len(e['missing'])} video files not found "
                f"({e['captions_of_missing_videos']} captions refer to them): "
                + ", ".join(printable(m) for m in e["missing"][:show])
                + (" ..." if len(e["missing"]) > show else "")
            )
        else:
            print("    all video files found")
        if "unreadable" in e:
            sizes = ", ".join(f"{k} ({n})" for k, n in sorted(e["frame_sizes"].items()))
            print(f"    decoded OK: {e['decoded_ok']} videos; frame sizes: {sizes or '-'}")
            for b in e["unreadable"][:show]:
                shown = printable_path(_shown_path(b["path"], e["video_root"]))
                print(f"    UNREADABLE {printable(b['video_id'])}: {shown}: {printable(b['reason'])}")
            if len(e["unreadable"]) > show:
                print(f"    ... {len(e['unreadable']) - show} more unreadable (use --json for all)")
