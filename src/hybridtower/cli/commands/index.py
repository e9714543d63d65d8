"""``hybridtower index PATH... --checkpoint CKPT --out INDEX_DIR``: build or update a search index."""

from __future__ import annotations

import argparse
import json
import os

HELP = "index your own videos for text search (incremental, resumable, torchrun-shardable)"
DESCRIPTION = """\
Walk the video files and folders given as PATH, encode one vector per video with the model of
--checkpoint (X-Pool models: the per-frame features their re-ranking needs) and store them in
INDEX_DIR. A second run over the same folders encodes only new or changed files (size + mtime, then a
SHA-256 of the content); --prune drops entries whose file is gone. A run that is interrupted
(Ctrl-C, kill -9, power loss) leaves the last committed index intact; run the same command again to
continue. Unreadable files are skipped and listed in the summary and in INDEX_DIR/errors.jsonl.

Folders are searched recursively for the extensions in --extensions (hidden files and folders are
skipped); a file named explicitly is indexed whatever its extension.

Exit status: 0 all files indexed; 3 the index was updated but some files were skipped;
2 usage or model errors (nothing written); 130 interrupted (what was encoded is committed)."""
EPILOG = """\
examples:
  hybridtower index my_videos/ --checkpoint runs/pig --out my_index
  hybridtower index my_videos/ more/clip.mov --out my_index --prune      # update: new/changed files only
  hybridtower index my_videos/ --checkpoint runs/pig --out my_index --ann hnsw
  torchrun --nproc-per-node 4 -m hybridtower.cli.main index videos/ --checkpoint runs/pig --out idx --device cuda
  hybridtower index --merge --out idx            # merge the shards of a torchrun run whose rank 0 died
"""


def register(sub) -> None:
    p = sub.add_parser("index", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH", help="video files and/or folders to index")
    p.add_argument("--out", "-o", required=True, metavar="INDEX_DIR", help="index folder (created if needed)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="our checkpoint (.safetensors file or run folder); required for a new index, "
                        "defaults to the one the index was built with")
    p.add_argument("--prune", action="store_true", help="drop entries whose file no longer exists")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the index at INDEX_DIR first (e.g. to re-index with another model)")
    p.add_argument("--ann", choices=["flat", "ivf", "hnsw"], default=None,
                   help="vector search structure: flat = exact inner product (default for a new index), "
                        "ivf / hnsw = approximate, for large collections (see docs/index.md for recall)")
    p.add_argument("--nlist", type=int, help="ivf: number of cells (default clamp(4*sqrt(N), 1, N/39))")
    p.add_argument("--nprobe", type=int, help="ivf: cells visited per query (default 16)")
    p.add_argument("--hnsw-m", type=int, dest="M", help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidate list size at query time (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoder batch (default 16)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding worker processes (default: min(4, CPU cores))")
    p.add_argument("--commit-every", type=int, default=256,
                   help="commit after this many encoded videos; an interrupted run loses at most these (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast on CUDA")
    p.add_argument("--extensions", default=None,
                   help="comma-separated extensions to pick up in folders "
                        "(default mp4,webm,avi,mkv,mov,m4v,mpg,mpeg)")
    p.add_argument("--merge", action="store_true",
                   help="only merge the shards under INDEX_DIR/shards (left by a torchrun run) into the index")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...core.errors import ConfigError
    from ...index import INDEX_EXTENSIONS, IndexOptions, build_index, merge_shards

    exts = tuple(e for e in args.extensions.split(",")) if args.extensions else INDEX_EXTENSIONS
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    ann_params = {k: v for k, v in dict(nlist=args.nlist, nprobe=args.nprobe, M=args.M, ef_search=args.ef_search).items()
                  if v is not None}
    options = IndexOptions(
        extensions=exts, prune=args.prune, ann=args.ann, ann_params=ann_params, batch_size=args.batch_size,
        num_workers=workers, commit_every=args.commit_every, device=args.device, precision=args.precision,
        progress=not args.no_progress and not args.json, overwrite=args.overwrite,
    )
    if args.merge:
        if args.paths:
            raise ConfigError("--merge takes no PATH: it merges the shards already under INDEX_DIR/shards")
        summary = merge_shards(args.out, options=options)
    else:
        if not args.paths:
            raise ConfigError("give at least one video file or folder to index (or --merge)")
        summary = build_index(args.paths, args.out, args.checkpoint, options)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    return summary.exit_code


def _print_summary(s) -> None:
    if s.shard:
        print(f"{s.shard}: encoded {s.encoded} video(s) into its shard in {s.seconds:.1f} s "
              f"({s.videos_per_s:.1f} videos/s); rank 0 merges the shards")
    elif s.up_to_date:
        print(f"{s.index_dir}: up to date ({s.count} videos; {s.unchanged} unchanged files)")
    else:
        parts = [f"{s.encoded} encoded", f"{s.unchanged} unchanged"]
        if s.touched:
            parts.append(f"{s.touched} touched (same content)")
        if s.pruned:
            parts.append(f"{s.pruned} pruned")
        if s.merged_shards:
            parts.append(f"{s.merged_shards} shard(s) merged")
        print(f"{s.index_dir}: {s.count} videos ({', '.join(parts)}) in {s.seconds:.1f} s "
              f"({s.videos_per_s:.1f} videos/s), search: {s.ann}, generation {s.generation}")
    if s.vanished:
        print(f"note: {s.vanished} indexed file(s) no longer exist; run with --prune to drop them")
    if s.skipped:
        print(f"skipped {len(s.skipped)} file(s) (also listed in {s.index_dir}/errors.jsonl):")
        for e in s.skipped:
            print(f"  {e['path']}: {e['error']}")
