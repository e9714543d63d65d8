"""``hybridtower demo``: offline end to end - synthetic videos, a tiny trained PIG, an index, queries, the page.

Steps (each reuses the previous run's output in ``--out`` when it is there, so a second run is quick):

1. ``hybridtower synth OUT/data`` - a small synthetic collection (real video files + captions + images),
   plus one long synthetic video ``OUT/long/long-demo.mp4`` (``write_long_video``) whose described event
   sits in one time range;
2. a checkpoint (:func:`demo_checkpoint`): ``--checkpoint`` if given, else the one shipped in the package
   (``hybridtower/assets/demo-pig-tiny.safetensors``, with the commands and seed that made it in
   ``demo-pig-tiny.json``), else trained on the spot with this project's own commands
   (``pretrain-clip`` on the images, then ``train --model pig-tiny``), printed before they run;
3. ``hybridtower index OUT/data/videos OUT/long --checkpoint CKPT --out OUT/index`` (the long video is
   indexed as moment windows);
4. a few example queries (held-out test captions) with their top results, and text-to-video R@1/R@5
   of every test caption against the whole collection; then the long video's caption, whose result
   names the moment (start-end) where it matched;
5. ``hybridtower serve OUT/index`` on 127.0.0.1 (or, with ``--no-serve``, the command to start it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

HELP = "offline end-to-end demo: synthetic videos, a tiny trained PIG model, an index, queries, the web page"
EPILOG = """\
examples:
  hybridtower demo                                  # everything, then http://127.0.0.1:8000/
  hybridtower demo --no-serve                       # stop after the example queries
  hybridtower demo --out demo-run --port 8080
  hybridtower demo --checkpoint runs/pig            # use your own PIG / Two-Tower checkpoint
  hybridtower demo --retrain --train-steps 300      # train the tiny model here instead of the shipped one

Needs no network. With the shipped checkpoint it takes about a minute on 2 CPU cores; training on
the spot takes several minutes (see docs/service.md).
"""

ASSET_NAME = "demo-pig-tiny"
LONG_NAME = "long-demo.mp4"
LONG_VIDEO = {"duration_s": 150.0, "event_start_s": 90.0, "event_end_s": 115.0, "seed": 0}  # seconds


@dataclass
class DemoRecipe:
    """How the demo's tiny PIG is trained when no checkpoint is given or shipped (all seeded)."""

    videos: int = 200  # synthetic clips (70% train / 10% val / 20% test)
    images: int = 2000  # image-caption pairs for pretraining the tiny CLIP
    seed: int = 0
    pretrain_steps: int = 400  # the comparison's recipe (hybridtower reproduce synthetic), a little shorter
    pretrain_batch: int = 128
    pretrain_lr: float = 5e-4
    train_steps: int = 200
    train_batch: int = 32
    train_lr: float = 3e-4


def register(sub) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="hybridtower-demo", help="work folder (default ./hybridtower-demo; reused)")
    p.add_argument("--checkpoint", default=None, help="use this checkpoint instead of the shipped/trained one")
    p.add_argument("--retrain", action="store_true", help="train the tiny model here even if one is shipped")
    r = DemoRecipe()
    p.add_argument("--videos", type=int, default=None,
                   help=f"synthetic clips (default {r.videos}, or the shipped model's recipe)")
    p.add_argument("--images", type=int, default=None, help=f"synthetic images for pretraining (default {r.images})")
    p.add_argument("--seed", type=int, default=None, help=f"seed of data and training (default {r.seed})")
    p.add_argument("--pretrain-steps", type=int, default=None, help=f"tiny-CLIP pretraining steps (default {r.pretrain_steps})")
    p.add_argument("--train-steps", type=int, default=None, help=f"PIG training steps (default {r.train_steps})")
    p.add_argument("--queries", type=int, default=4, help="example queries to print (default 4)")
    p.add_argument("-k", type=int, default=5, help="results per example query (default 5)")
    p.add_argument("--no-serve", action="store_true", help="do not start the web page; print how to")
    p.add_argument("--host", default="127.0.0.1", help="address of the web page (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port of the web page (default 8000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------
def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _shell(argv: list[str]) -> str:
    return "hybridtower " + " ".join(shlex.quote(a) for a in argv)


def _cmd(argv: list[str]) -> int:
    """Run one of this package's commands in-process, printing it first as a shell command."""
    from ..main import main

    _say("$ " + _shell(argv))
    rc = main(argv)
    if rc not in (0, None):
        from ...core.errors import HybridTowerError

        raise HybridTowerError(f"demo step `hybridtower {argv[0]}` failed with exit status {rc}")
    return 0


def asset_paths() -> tuple[Path, Path]:
    base = Path(__file__).resolve().parents[2] / "assets"
    return base / f"{ASSET_NAME}.safetensors", base / f"{ASSET_NAME}.json"


def shipped_recipe() -> DemoRecipe | None:
    """The recipe of the shipped checkpoint (None when the package ships none)."""
    weights, meta = asset_paths()
    if not (weights.is_file() and meta.is_file()):
        return None
    info = json.loads(meta.read_text())
    fields = {k: v for k, v in (info.get("recipe") or {}).items() if k in DemoRecipe.__dataclass_fields__}
    return DemoRecipe(**fields)


def make_collection(data: Path, recipe: DemoRecipe, progress: bool) -> None:
    if (data / "MSRVTT_data.json").is_file() and (data / "synth_meta.json").is_file():
        meta = json.loads((data / "synth_meta.json").read_text())
        cfg = meta.get("config", meta)
        if cfg.get("videos") == recipe.videos and cfg.get("seed") == recipe.seed and cfg.get("images") == recipe.images:
            _say(f"[1/5] synthetic collection: reusing {data}")
            return
    _say(f"[1/5] synthetic collection: {recipe.videos} clips, {recipe.images} images, seed {recipe.seed}")
    argv = ["synth", str(data), "--videos", str(recipe.videos), "--images", str(recipe.images),
            "--seed", str(recipe.seed), "--overwrite"]
    if not progress:
        argv.append("--no-progress")
    _cmd(argv)


def make_long_video(out: Path) -> dict:
    """``OUT/long/long-demo.mp4``: a long synthetic video with one described event. Reused when its
    recorded recipe matches."""
    from ...data.synthetic.long import write_long_video

    folder = out / "long"
    meta_path = out / "long.json"
    video = folder / LONG_NAME
    if video.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == LONG_VIDEO:
            _say(f"      long video: reusing {video}")
            return meta
    folder.mkdir(parents=True, exist_ok=True)
    info = write_long_video(video, **LONG_VIDEO)
    meta = {"recipe": LONG_VIDEO, "caption": info["caption"], "event_start": float(info["event_start"]),
            "event_end": float(info["event_end"]), "duration": float(info.get("duration", LONG_VIDEO["duration_s"]))}
    from ...core.io import atomic_write_json

    atomic_write_json(meta_path, meta)
    _say(f"      long video: {video.name}, {meta['duration']:.0f} s, \"{meta['caption']}\" at "
         f"{_clock(meta['event_start'])}-{_clock(meta['event_end'])}")
    return meta


def _clock(seconds) -> str:
    t = int(seconds)
    h, m, sec = t // 3600, (t // 60) % 60, t % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def train_checkpoint(out: Path, data: Path, recipe: DemoRecipe, progress: bool) -> Path:
    """Pretrain the tiny CLIP on the synthetic images, then train pig-tiny on the clips (this project's commands)."""
    run_dir = out / "pig-tiny"
    if (run_dir / "model.safetensors").is_file() and (run_dir / "demo_recipe.json").is_file():
        if json.loads((run_dir / "demo_recipe.json").read_text()) == asdict(recipe):
            _say(f"      reusing the model trained earlier in {run_dir}")
            return run_dir / "model.safetensors"
    nop = [] if progress else ["--no-progress"]
    clip_dir = out / "clip-tiny"
    t0 = time.monotonic()
    # small collections (tests, --videos 10): batches no larger than the data (synth: 2 captions per image,
    # 70% of the clips in train)
    pre_batch = max(2, min(recipe.pretrain_batch, 2 * recipe.images))
    train_batch = max(2, min(recipe.train_batch, int(0.7 * recipe.videos)))
    if recipe.images < 1:
        from ...core.errors import ConfigError

        raise ConfigError("training the demo model needs synthetic images for pretraining: --images must be > 0")
    steps = [
        ["synth", "data", "--videos", str(recipe.videos), "--images", str(recipe.images), "--seed", str(recipe.seed)],
        ["pretrain-clip", "--data", f"images:{data / 'images.jsonl'}", "--output-dir", str(clip_dir),
         "--steps", str(recipe.pretrain_steps), "--batch-size", str(pre_batch),
         "--lr", str(recipe.pretrain_lr), "--seed", str(recipe.seed), "--num-workers", "0", "--device", "cpu"],
        ["train", "--model", "pig-tiny", "--data", f"msrvtt:{data}", "--pretrained", str(clip_dir),
         "--steps", str(recipe.train_steps), "--batch-size", str(train_batch), "--seed", str(recipe.seed),
         "--set", f"lr={recipe.train_lr}", "--set", "num_workers=0", "--set", "eval_every=0", "--set", "cache_frames=true",
         "--set", "logit_scale_from_clip=true",
         "--output-dir", str(run_dir), "--device", "cpu"],
    ]
    for argv in steps[1:]:
        _cmd(argv + nop)
    from ... import __version__
    from ...core.io import atomic_write_json

    seconds = time.monotonic() - t0
    atomic_write_json(run_dir / "demo_recipe.json", asdict(recipe))
    # what `src/hybridtower/assets/demo-pig-tiny.json` holds when this model is shipped (docs/service.md)
    rel = [_shell(a).replace(str(out) + "/", "").replace(str(out), ".") for a in steps]
    atomic_write_json(run_dir / f"{ASSET_NAME}.json", {
        "recipe": asdict(recipe), "commands": rel, "train_seconds": round(seconds, 1),
        "package_version": __version__, "made_by": "hybridtower demo --retrain",
    })
    _say(f"      trained in {seconds:.0f} s")
    return run_dir / "model.safetensors"


def demo_checkpoint(args, out: Path, data: Path, recipe: DemoRecipe, shipped: bool) -> Path:
    """Step 2: the checkpoint to index with (given, shipped, or trained here)."""
    if args.checkpoint:
        _say(f"[2/5] model: {args.checkpoint} (given)")
        return Path(args.checkpoint)
    weights, meta = asset_paths()
    if shipped:
        info = json.loads(meta.read_text())
        _say(f"[2/5] model: the shipped tiny PIG ({weights.name}), made by:")
        for line in info.get("commands", []):
            _say(f"      $ {line}")
        return weights
    _say("[2/5] model: training a tiny PIG here (no checkpoint given or shipped)")
    return train_checkpoint(out, data, recipe, not args.no_progress)


def build_demo_index(ckpt: Path, data: Path, index_dir: Path, progress: bool, long_dir: Path):
    from ...index import IndexMismatchError, IndexOptions, build_index

    roots = [data / "videos", long_dir]
    _say(f"[3/5] index: hybridtower index {' '.join(str(r) for r in roots)} --checkpoint {ckpt} --out {index_dir}")
    options = IndexOptions(progress=progress, num_workers=0)
    try:
        summary = build_index(roots, index_dir, checkpoint=ckpt, options=options)
    except IndexMismatchError:
        _say("      the existing demo index was built with another model: rebuilding it")
        options.overwrite = True
        summary = build_index(roots, index_dir, checkpoint=ckpt, options=options)
    state = "up to date" if summary.up_to_date else f"{summary.encoded} encoded, {summary.unchanged} unchanged"
    if summary.windows:
        state += f"; {summary.windows} moment windows of long videos"
    _say(f"      {summary.count} videos ({state}) in {summary.seconds:.1f} s")
    for s in summary.skipped:
        _say(f"      skipped {s.get('path')}: {s.get('error')}")
    return summary


def example_queries(searcher, data: Path, n: int, k: int) -> dict:
    """Print ``n`` held-out captions with their top ``k``; return R@1/R@5 of all test captions."""
    from ...data import list_splits, load_split

    spec = f"msrvtt:{data}"
    available = list_splits(spec)
    name = next((s for s in ("test-1ka", "test", "test-3k") if s in available), None)
    if name is None:
        _say(f"[4/5] no test split in {data}; skipping the example queries")
        return {}
    split = load_split(spec, name)
    videos = {v.video_id: Path(v.path).name for v in split.videos}
    captions = [c for c in split.captions if c.video_id in videos]
    _say(f"[4/5] example queries (held-out test captions; the index holds all {len(searcher)} clips)")
    seen, shown = set(), 0
    for c in captions:
        if shown >= n:
            break
        if c.video_id in seen:
            continue
        seen.add(c.video_id)
        shown += 1
        res = searcher.search(c.text, k=k)
        _say(f'\n  "{c.text}"   (expected: {videos[c.video_id]}; {res.took_ms:.1f} ms)')
        for rank, h in enumerate(res.hits, 1):
            mark = "  <- expected" if Path(h.path).name == videos[c.video_id] else ""
            _say(f"    {rank}. {h.score:+.3f}  {Path(h.path).name}{mark}")
    ranks = []
    for c in captions:
        res = searcher.search(c.text, k=min(10, len(searcher)))
        names = [Path(h.path).name for h in res.hits]
        ranks.append(names.index(videos[c.video_id]) + 1 if videos[c.video_id] in names else 99)
    total = max(1, len(ranks))
    stats = {"captions": len(ranks), "R@1": 100.0 * sum(r <= 1 for r in ranks) / total,
             "R@5": 100.0 * sum(r <= 5 for r in ranks) / total, "videos": len(searcher)}
    _say(f"\n  text->video over {stats['captions']} test captions among {stats['videos']} clips: "
         f"R@1 {stats['R@1']:.1f}%  R@5 {stats['R@5']:.1f}%  (chance R@1 {100.0 / max(1, len(searcher)):.1f}%)")
    return stats


def moment_query(searcher, long: dict, k: int) -> dict:
    """Search the long video's caption; print its hit with the moment (start-end) where it matched."""
    res = searcher.search(long["caption"], k=min(1000, max(k, len(searcher))))
    ev = (long["event_start"], long["event_end"])
    _say(f'\n  moment: "{long["caption"]}"   (expected: {LONG_NAME} at {_clock(ev[0])}-{_clock(ev[1])}; '
         f"{res.took_ms:.1f} ms)")
    found = {}
    for rank, h in enumerate(res.hits, 1):
        name = Path(h.path).name
        if rank > k and name != LONG_NAME:
            continue
        start, end = h.start, h.end
        where = f"  {_clock(start)}-{_clock(end)}" if start is not None and end is not None else ""
        mark = ""
        if name == LONG_NAME:
            hit_event = start is not None and end is not None and start < ev[1] and end > ev[0]
            mark = "  <- the event's moment" if hit_event else "  <- expected video, another moment"
            found = {"rank": rank, "start": start, "end": end, "on_event": bool(hit_event)}
        _say(f"    {'...' if rank > k else ''}{rank}) {h.score:+.3f}  {name}{where}{mark}")
        if rank > k:
            break
    if start_missing(res.hits):
        _say("      (this index stores one vector per file: rebuild it with moment windows to see times)")
    return {"moment": {"caption": long["caption"], "event_start": ev[0], "event_end": ev[1], **found}}


def start_missing(hits) -> bool:
    return all(getattr(h, "start", None) is None for h in hits)


def run(args) -> int:
    from ...core.errors import ConfigError

    t0 = time.monotonic()
    out = Path(args.out).absolute()
    shipped_r = None if (args.checkpoint or args.retrain) else shipped_recipe()
    recipe = shipped_r or DemoRecipe()
    overrides = {"videos": args.videos, "images": args.images, "seed": args.seed,
                 "pretrain_steps": args.pretrain_steps, "train_steps": args.train_steps}
    for key, value in overrides.items():
        if value is not None:
            setattr(recipe, key, value)
    if recipe.videos < 10:
        raise ConfigError(f"--videos must be at least 10 (the test split needs clips), got {recipe.videos}")
    progress = not args.no_progress
    sock = None
    if not args.no_serve:  # fail now, not after the work, when the port is taken
        from ...service.server import bind_socket

        sock = bind_socket(args.host, args.port)
    try:
        return _run(args, out, recipe, shipped_r is not None, progress, sock, t0)
    finally:
        if sock is not None:
            sock.close()


def _run(args, out: Path, recipe: DemoRecipe, shipped: bool, progress: bool, sock, t0: float) -> int:
    from ...index import Searcher

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    make_collection(data, recipe, progress)
    long = make_long_video(out)
    ckpt = demo_checkpoint(args, out, data, recipe, shipped=shipped)
    build_demo_index(ckpt, data, out / "index", progress, out / "long")
    searcher = Searcher.open(out / "index", checkpoint=ckpt)
    stats = example_queries(searcher, data, args.queries, args.k)
    stats.update(moment_query(searcher, long, args.k))
    _say(f"\n[5/5] done in {time.monotonic() - t0:.0f} s; search from the shell with:")
    _say(f'      hybridtower search {shlex.quote(str(out / "index"))} '
         f'{shlex.quote(long["caption"])} -k 5')
    from ...core.io import atomic_write_json

    atomic_write_json(out / "demo_summary.json", {"checkpoint": str(ckpt), "recipe": asdict(recipe), **stats})
    serve_cmd = f"hybridtower serve {shlex.quote(str(out / 'index'))} --host {args.host} --port {args.port}"
    if sock is None:
        _say(f"      and start the web page with:\n      {serve_cmd}")
        return 0
    from ...service import create_app, default_cache_dir
    from ...service.middleware import default_hosts
    from ...service.server import serve_forever

    host, port = sock.getsockname()[:2]
    app = create_app(searcher, thumbnail_dir=default_cache_dir(out / "index"), title="hybridtower demo",
                     allowed_hosts=default_hosts(args.host), preview_dir=out / "previews")
    q = urllib.parse.urlencode({"q": long["caption"]})
    _say(f"      web page: http://{host}:{port}/?{q}   (Ctrl-C stops; same as `{serve_cmd}`)")
    serve_forever(app, sock, log_level="warning", access_log=False)
    return 0

