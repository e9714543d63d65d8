"""``hybridtower bench efficiency``: offline and online cost of PIG, Two-Tower and X-Pool, measured side by side."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "measure costs: `bench efficiency` times and counts PIG against Two-Tower and X-Pool"
EFF_HELP = "offline FLOPs/time/storage per video and online latency per query for N = 1k..1M videos (PIG, PIG-M per M, Two-Tower, X-Pool)"
EFF_EPILOG = """\
What it measures (random-weight models: FLOPs and time do not depend on the weights):
  offline, per video   FLOPs (torch.utils.flop_counter, 2 FLOPs per multiply-add), time and stored
                       bytes of meanP, CLIP-ViP, X-Pool (frame features) and PIG (encoder, ITS,
                       generator, fusion, and their sum)
  online, per query    text encode + exact top-k search over N stored videos: one matrix product
                       for PIG and Two-Tower (torch, FAISS IndexFlatIP with the BLAS threshold
                       chosen by measurement, and the Searcher's own exact search with the kernel
                       it calibrates), the X-Pool fusion with every video for X-Pool;
                       ratios PIG/Two-Tower and X-Pool/PIG at each N
  floor                bytes of stored vectors per query / read bandwidth (a read-only scan of
                       2 x --bandwidth-mb, same run); the copy figure (read + write) is printed beside it
  PIG-M, per M         offline FLOPs/time and stored bytes per video for M = --m-values pseudo-query
                       vectors per video, and the search over M x N rows + max per video at each N
                       (M = 1 is PIG), beside Two-Tower and X-Pool
  device               everything (models, galleries, searches) runs on --device; the report lists the
                       devices every timed tensor lived on ("devices_used")

Exact search at the floor, every kernel side by side: python benchmarks/search_bound.py
Compressed vectors (sqfp16, sq8) against exact search: python benchmarks/ann_recall.py --latency

A gallery larger than --max-gallery-gb (or half the free memory) is not allocated: X-Pool's latency
there is extrapolated linearly from the largest measured N and labelled "extrapolated".

examples:
  hybridtower bench efficiency --model-size vit-b-32 --plot docs/efficiency.png --markdown docs/efficiency_table.md
  hybridtower bench efficiency --model-size vit-b-32 --device cuda --out bench_gpu.json
  hybridtower bench efficiency --quick --json          # tiny model, small galleries, seconds
"""


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        mult = 1
        if part[-1] in "km":
            mult = 1000 if part[-1] == "k" else 1_000_000
            part = part[:-1]
        try:
            value = float(part) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad gallery size {part!r}: use numbers like 1000, 10k, 1M") from None
        if value < 1 or value != int(value):
            raise argparse.ArgumentTypeError(f"gallery size must be a positive integer, got {part!r}")
        out.append(int(value))
    if not out:
        raise argparse.ArgumentTypeError("no gallery size given")
    return out


def _m_values(text: str) -> list[int]:
    if text.strip().lower() in ("none", "0", ""):
        return []
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --m-values {text!r}: use integers like 1,2,4,8 (or none)") from None
    if any(m < 1 for m in out):
        raise argparse.ArgumentTypeError(f"--m-values must be positive integers, got {text!r}")
    return out


def register(sub) -> None:
    p = sub.add_parser("bench", help=HELP, description=HELP)
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    e = bsub.add_parser("efficiency", help=EFF_HELP, description=EFF_HELP, epilog=EFF_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--model-size", default=None, choices=["tiny", "vit-b-32", "vit-b-16"],
                   help="backbone of every framework (default vit-b-32, the paper's; tiny with --quick)")
    e.add_argument("--device", default="cpu", help="cpu or cuda (FAISS is measured on CPU runs only)")
    e.add_argument("--sizes", type=_sizes, default=None, metavar="N,N,...",
                   help="gallery sizes (default 1k,10k,100k,1M; --quick: 1k,10k)")
    e.add_argument("--quick", action="store_true",
                   help="tiny model, galleries 1k,10k, few repeats: a smoke run in seconds")
    e.add_argument("--repeats", type=int, default=None, help="timed repetitions per online point (default 7, quick 2)")
    e.add_argument("--offline-repeats", type=int, default=None, help="timed repetitions per offline measurement (default 3)")
    e.add_argument("--offline-batch", type=int, default=1, help="videos per offline forward pass (time reported per video)")
    e.add_argument("--min-seconds", type=float, default=None,
                   help="repeat cheap online calls until each measurement spans this long (default 1, quick 0.1)")
    e.add_argument("--topk", type=int, default=10, help="results returned per query (default 10)")
    e.add_argument("--threads", type=int, default=None, help="torch and FAISS threads (default: as configured)")
    e.add_argument("--max-gallery-gb", type=float, default=8.0,
                   help="largest stored array to allocate; larger galleries are extrapolated (default 8)")
    e.add_argument("--no-faiss", action="store_true", help="skip the FAISS IndexFlatIP measurements")
    e.add_argument("--bandwidth-mb", type=int, default=None,
                   help="array size of the copy benchmark (default 512 MiB); the read scan uses twice that")
    e.add_argument("--m-values", type=_m_values, default=None, metavar="M,M,...",
                   help="PIG-M: pseudo-query vectors per video to cost (offline, stored bytes, search over M x N "
                        "rows at each N); default 1,2,4,8; 'none' skips it")
    e.add_argument("--xpool-chunk", type=int, default=None,
                   help="videos per X-Pool scoring chunk (default 4096 on a CPU, 65536 on a GPU)")
    e.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    e.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    e.add_argument("--markdown", metavar="FILE", help="also write the Markdown tables to FILE")
    e.add_argument("--plot", metavar="FILE", help="write a log-log plot of latency against N (PNG)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=run_efficiency_command)


def run_efficiency_command(args) -> int:
    from ...analysis.efficiency import EfficiencyConfig, format_markdown, plot_latency, run_efficiency
    from ...core.io import atomic_write_json, atomic_write_text

    quick = args.quick
    cfg = EfficiencyConfig(
        model_size=args.model_size or ("tiny" if quick else "vit-b-32"),
        device=args.device,
        sizes=args.sizes or ([1_000, 10_000] if quick else EfficiencyConfig().sizes),
        repeats=args.repeats or (2 if quick else 7),
        offline_repeats=args.offline_repeats or (1 if quick else 3),
        offline_batch=args.offline_batch,
        topk=args.topk,
        threads=args.threads,
        max_gallery_gb=args.max_gallery_gb,
        faiss=not args.no_faiss,
        bandwidth_mb=args.bandwidth_mb or (64 if quick else 512),
        xpool_chunk=args.xpool_chunk,
    )
    if args.m_values is not None:
        cfg.m_values = args.m_values
    if args.min_seconds is not None:
        cfg.min_seconds = args.min_seconds
    elif quick:
        cfg.min_seconds = 0.1
    report = run_efficiency(cfg, progress=not args.no_progress)
    if quick:
        report["command"] += " (--quick)"
    md = format_markdown(report)
    if args.out:
        atomic_write_json(args.out, report)
    if args.markdown:
        atomic_write_text(args.markdown, md)
    if args.plot:
        plot_latency(report, args.plot)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(md)
        for label, path in (("json", args.out), ("markdown", args.markdown), ("plot", args.plot)):
            if path:
                print(f"{label}: {path}")
    return 0
