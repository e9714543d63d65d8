"""``hybridtower index PATH... --checkpoint CKPT --out INDEX_DIR``: build or update a search index."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ...core.display import printable, printable_path

HELP = "index your own videos for text search (incremental, resumable, torchrun-shardable)"
DESCRIPTION = """\
Walk the video files and folders given as PATH, encode one vector per video with the model of
--checkpoint (X-Pool models: the per-frame features their re-ranking needs) and store them in
INDEX_DIR. A video longer than --window seconds (default 30) is stored as one vector per window
(every --stride seconds, default 15), so search can say where in the video the match is; shorter
videos get one vector, exactly as with --window 0. PIG-M checkpoints store their M vectors per video
(or window). A second run over the same folders encodes only new or changed files (size + mtime, then a
SHA-256 of the content); --prune drops entries whose file is gone. A run that is interrupted
(Ctrl-C, kill -9, power loss) leaves the last committed index intact; run the same command again to
continue. Unreadable files are skipped and listed in the summary and in INDEX_DIR/errors.jsonl.

Every index file is checksummed in the manifest. A run first verifies the index it updates: videos
whose stored vectors are damaged are re-encoded and a damaged FAISS file is rebuilt; damage the videos
cannot repair (the manifest, the entries table) stops the run (exit 2; rebuild with --overwrite).
`hybridtower index --verify INDEX_DIR` checks every file and names what is damaged.

Folders are searched recursively for the extensions in --extensions (hidden files and folders are
skipped); a file named explicitly is indexed whatever its extension.

Exit status: 0 all files indexed; 3 the index was updated but some files were skipped;
4 no video file was found under the PATHs (warning on stderr); 2 usage, model or index errors
(a damaged index included; nothing written); 130 interrupted (what was encoded is committed).
--verify: 0 intact, 2 damaged (each damaged file named, with the ids of damaged rows)."""
EPILOG = """\
examples:
  hybridtower index my_videos/ --checkpoint runs/pig --out my_index
  hybridtower index my_videos/ more/clip.mov --out my_index --prune      # update: new/changed files only
  hybridtower index my_videos/ --checkpoint runs/pig --out my_index --ann hnsw
  hybridtower index lectures/ --checkpoint runs/pig --out idx --window 60 --stride 30   # longer moments
  hybridtower index clips/ --checkpoint runs/pig --out idx --window 0     # one vector per file
  hybridtower index my_videos/ --model clip:ViT-B-32 --pretrained openai --out idx   # plain CLIP, no training
  hybridtower index my_videos/ --model clip:ViT-B-32 --pretrained ViT-B-32.pt --out idx  # same, from a local file
  torchrun --nproc-per-node 4 -m hybridtower.cli.main index videos/ --checkpoint runs/pig --out idx --device cuda
  hybridtower index --merge --out idx            # merge the shards of a torchrun run whose rank 0 died
  hybridtower index --verify my_index            # check every file of the index (exit 2 when damaged)
"""


def register(sub) -> None:
    from ...index.ann import ANN_KINDS

    p = sub.add_parser("index", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH", help="video files and/or folders to index")
    p.add_argument("--out", "-o", metavar="INDEX_DIR", help="index folder (created if needed; required unless --verify)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="our checkpoint (.safetensors file or run folder); required for a new index, "
                        "defaults to the one the index was built with")
    p.add_argument("--model", metavar="SPEC",
                   help="build the model here instead of --checkpoint: clip:ARCH (any open_clip architecture, "
                        "mean-pooled, no training) or a preset name; saved inside INDEX_DIR as model.safetensors "
                        "and used by search/serve later, offline")
    p.add_argument("--pretrained", metavar="WEIGHTS",
                   help="with --model: the CLIP weights (an open_clip tag such as openai, a local file, "
                        "hf-hub:ORG/NAME)")
    p.add_argument("--prune", action="store_true", help="drop entries whose file no longer exists")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the index at INDEX_DIR first (e.g. to re-index with another model)")
    p.add_argument("--ann", choices=list(ANN_KINDS), default=None,
                   help="vector search structure: flat = exact inner product (default for a new index), "
                        "the others approximate, for large collections (see docs/index.md for recall)")
    p.add_argument("--nlist", type=int, help="ivf: number of cells (default clamp(4*sqrt(N), 1, N/39))")
    p.add_argument("--nprobe", type=int, help="ivf: cells visited per query (default 16)")
    p.add_argument("--hnsw-m", type=int, dest="M", help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidate list size at query time (default 128)")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help="moment windows: videos longer than this get one vector per window (default 30 for a new "
                        "index, else the index's own setting; 0 = one vector per file)")
    p.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="seconds between window starts (default half the window; at most the window)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoder batch (default 16)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding worker processes (default: min(4, CPU cores))")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads of the encoder (this process). Default: chosen while the run goes by "
                        "measuring the time per video: on the CPU, the cores the --workers leave or every core, "
                        "whichever is faster now (re-checked every 16th batch); with --workers 0 or on a GPU, torch's own "
                        "setting. "
                        "A run setting: an index built with any value is reused with any other")
    p.add_argument("--commit-every", type=int, default=256,
                   help="commit after this many encoded videos; an interrupted run loses at most these (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast on CUDA")
    p.add_argument("--extensions", default=None,
                   help="comma-separated extensions to pick up in folders "
                        "(default mp4,webm,avi,mkv,mov,m4v,mpg,mpeg)")
    p.add_argument("--merge", action="store_true",
                   help="only merge the shards under INDEX_DIR/shards (left by a torchrun run) into the index")
    p.add_argument("--verify", metavar="INDEX_DIR",
                   help="only check every file of INDEX_DIR (checksums, shapes, values) and report what is damaged")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...core.errors import ConfigError
    from ...index import INDEX_EXTENSIONS, IndexOptions, build_index, merge_shards

    if args.verify:
        if args.paths or args.out or args.merge:
            raise ConfigError("--verify takes only the index folder: hybridtower index --verify INDEX_DIR")
        return _verify(args.verify, args.json)
    if not args.out:
        raise ConfigError("give the index folder with --out INDEX_DIR")
    exts = tuple(e for e in args.extensions.split(",")) if args.extensions else INDEX_EXTENSIONS
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    ann_params = {k: v for k, v in dict(nlist=args.nlist, nprobe=args.nprobe, M=args.M, ef_search=args.ef_search).items()
                  if v is not None}
    options = IndexOptions(
        extensions=exts, prune=args.prune, ann=args.ann, ann_params=ann_params, batch_size=args.batch_size,
        num_workers=workers, commit_every=args.commit_every, device=args.device, precision=args.precision,
        progress=not args.no_progress and not args.json, overwrite=args.overwrite,
        window=args.window, stride=args.stride, encoder_threads=args.threads,
    )
    checkpoint = args.checkpoint
    if args.model or args.pretrained:
        if not args.model:
            raise ConfigError("--pretrained goes with --model SPEC (e.g. --model clip:ViT-B-32 --pretrained openai)")
        if args.checkpoint or args.merge:
            raise ConfigError("--model builds the index's model itself: do not combine it with --checkpoint or --merge")
        if not args.paths:
            raise ConfigError("give at least one video file or folder to index")
        from ...index.builder import save_model_into_index

        checkpoint = str(save_model_into_index(args.out, args.model, args.pretrained, overwrite=args.overwrite))
    if args.merge:
        if args.paths:
            raise ConfigError("--merge takes no PATH: it merges the shards already under INDEX_DIR/shards")
        summary = merge_shards(args.out, options=options)
    else:
        if not args.paths:
            raise ConfigError("give at least one video file or folder to index (or --merge, or --verify INDEX_DIR)")
        summary = build_index(args.paths, args.out, checkpoint, options)
    _print_notes(summary, args.paths, exts)
    if args.json:
        out = summary.to_dict()
        out["index_dir"] = printable_path(out["index_dir"])
        out["skipped"] = [{"path": printable_path(e["path"]), "error": printable(e["error"])} for e in out["skipped"]]
        out["shortened"] = [{"path": printable_path(e["path"]), "note": printable(e["note"])} for e in out["shortened"]]
        print(json.dumps(out, indent=2))
    else:
        _print_summary(summary)
    return summary.exit_code


def _verify(index_dir: str, as_json: bool) -> int:
    from ...index.verify import format_report, verify_index

    report = verify_index(index_dir)  # an unusable manifest raises IndexFormatError: exit 2
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in format_report(report, index_dir):
            print(line)
    return 0 if report.ok else 2


def _print_notes(s, paths, exts) -> None:
    """Warnings and notes: stderr, one display-safe line each."""
    err = sys.stderr
    if s.scanned and s.found == 0:
        print(f"warning: no video file found under {', '.join(printable_path(p) for p in paths)} "
              f"(extensions: {' '.join(e.lstrip('.') for e in exts)}); exit status 4", file=err)
    if s.damage:
        print(f"the index was damaged; repaired: {s.repaired} video(s) re-encoded, FAISS file rebuilt if needed", file=err)
        for d in s.damage:
            print(f"  {printable(d)}", file=err)
    if s.vanished:
        print(f"note: {s.vanished} indexed file(s) no longer exist; run with --prune to drop them", file=err)
    for e in getattr(s, "shortened", ()):
        print(f"note: {printable_path(e['path'])}: {printable(e['note'])}", file=err)


def _print_summary(s) -> None:
    name = printable_path(s.index_dir)
    if s.shard:
        print(f"{s.shard}: encoded {s.encoded} video(s) into its shard in {s.seconds:.1f} s "
              f"({s.videos_per_s:.1f} videos/s); rank 0 merges the shards")
    elif s.up_to_date:
        print(f"{name}: up to date ({s.count} videos; {s.unchanged} unchanged files)")
    else:
        parts = [f"{s.encoded} encoded", f"{s.unchanged} unchanged"]
        if s.windows:
            parts.append(f"{s.windows} windows of long videos")
        if s.touched:
            parts.append(f"{s.touched} touched (same content)")
        if s.repaired:
            parts.append(f"{s.repaired} repaired")
        if s.pruned:
            parts.append(f"{s.pruned} pruned")
        if s.merged_shards:
            parts.append(f"{s.merged_shards} shard(s) merged")
        print(f"{name}: {s.count} videos ({', '.join(parts)}) in {s.seconds:.1f} s "
              f"({s.videos_per_s:.1f} videos/s), search: {s.ann}, generation {s.generation}")
    if s.skipped:
        print(f"skipped {len(s.skipped)} file(s) (also listed in {name}/errors.jsonl):")
        for e in s.skipped:
            print(f"  {printable_path(e['path'])}: {printable(e['error'])}")
