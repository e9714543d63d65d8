"""``hybridtower reproduce synthetic``: the four frameworks on the synthetic benchmark, equal budget, 3 seeds.

One command, end to end on a CPU: generate the synthetic benchmark, pretrain a tiny CLIP on its
image-caption pairs (``pretrain-clip``), fine-tune Two-Tower meanP, Two-Tower CLIP-ViP, Single-Tower
X-Pool and PIG from that CLIP with the SAME recipe (data, steps, batch, LR, seed), evaluate each on the
same test split, and write ``comparison.md`` + ``comparison.json`` (mean +- sample standard deviation over
seeds). Finished pieces are reused when the command is run again on the same folder, so an interrupted
comparison continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "reproduce the framework comparison on the synthetic benchmark (CPU, one command)"
EPILOG = """\
examples:
  hybridtower reproduce synthetic --out-dir runs/repro                 # the README table (< 30 min, 2 cores)
  hybridtower reproduce synthetic --out-dir runs/quick --quick         # a smoke run (a few minutes)
  hybridtower reproduce synthetic --out-dir runs/repro --variants pig-stage1-images,pig-its-k0
  hybridtower reproduce synthetic --out-dir runs/repro --seeds 0 --frameworks pig meanp

The recipe (one for every framework) is RECIPE in this module and configs/synthetic-*-tiny.yaml.
Variants (PIG ablations, for the write-up; each is reported on its own row): see --list-variants.
Writes OUT_DIR/comparison.{md,json} (all four frameworks), ablations.{md,json} (with --variants) or
comparison-partial.{md,json} (a --frameworks subset). Finished cells are reused across invocations.
"""

# The single recipe every framework gets (configs/synthetic-{fw}-tiny.yaml hold the same values).
RECIPE = {
    "train_split": "train-9k",
    "val_split": "none",  # fixed budget: the final weights are evaluated (no selection, no test peeking)
    "stage1_steps": 0,  # single stage, as the official release; stage 1 is studied as a variant
    "stage2_steps": 200,
    "batch_size": 32,
    "grad_accum": 1,
    "lr": 3e-4,  # chosen on the meanP BASELINE's validation R@1 (3e-5 / 1e-4 / 3e-4 / 1e-3), never on test
    "new_module_lr_mult": 1.0,
    "weight_decay": 0.2,
    "betas": [0.9, 0.98],
    "eps": 1e-6,
    "warmup_ratio": 0.1,
    "schedule": "cosine",
    "grad_clip": 1.0,
    "lambda_recon": 1.0,
    "precision": "fp32",
    "logit_scale_from_clip": True,  # start from the tiny CLIP's temperature, as the release from OpenAI's (ln 100)
    "num_workers": 2,  # decodes the training clips once (cache_frames), then training reads RAM
    "cache_frames": True,
    "eval_every": 0,
    "log_every": 10,
}
FRAMEWORKS = {
    "meanp": "Two-Tower meanP (CLIP4Clip)",
    "clipvip": "Two-Tower CLIP-ViP",
    "xpool": "Single-Tower X-Pool",
    "pig": "Hybrid-Tower PIG",
}
# PIG ablations for the investigation (rows of their own; never change the main recipe)
VARIANTS = {
    "pig-stage1-images": ("PIG + stage 1 on the image pairs (generator only, +60 steps)",
                          {"stage1_steps": 60, "stage1_data": "images:{synth}/images.jsonl"}),
    "pig-stage1-video": ("PIG + stage 1 on the training videos (generator only, +60 steps)", {"stage1_steps": 60}),
    "pig-its-k0": ("PIG without ITS patch tokens (k = 0)", {"model_overrides": ["its.k=0"]}),
    "pig-its-all": ("PIG with every patch token (k = -1)", {"model_overrides": ["its.k=-1"]}),
    "pig-no-recon": ("PIG without the reconstruction loss (lambda = 0)", {"lambda_recon": 0.0}),
    "pig-new-lr10": ("PIG with 10x LR on new modules (generator mapper, fusion, proxies)", {"new_module_lr_mult": 10.0}),
    "pig-recon5": ("PIG with lambda = 5", {"lambda_recon": 5.0}),
}
FULL = {"videos": 1000, "images": 3000, "pretrain_steps": 600, "pretrain_batch": 128, "steps": 200,
        "seeds": [0, 1, 2], "test_split": "test-3k"}
QUICK = {"videos": 120, "images": 400, "pretrain_steps": 20, "pretrain_batch": 64, "steps": 12,
         "seeds": [0], "test_split": "test-3k"}
METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def register(sub) -> None:
    p = sub.add_parser("reproduce", help=HELP, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=["synthetic"], help="what to reproduce (synthetic: the framework comparison)")
    p.add_argument("--out-dir", required=True, help="folder for the data, checkpoints and the report")
    p.add_argument("--quick", action="store_true", help="a tiny budget (1 seed, 120 clips, a few steps) to smoke-test")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    p.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), help="subset of frameworks (default all four)")
    p.add_argument("--steps", type=int, help=f"stage-2 steps per run (default {FULL['steps']})")
    p.add_argument("--pretrain-steps", type=int, help=f"pretrain-clip steps (default {FULL['pretrain_steps']})")
    p.add_argument("--videos", type=int, help=f"synthetic clips (default {FULL['videos']})")
    p.add_argument("--variants", default="", help="comma-separated PIG ablations to add (see --list-variants)")
    p.add_argument("--list-variants", action="store_true", help="print the variants and exit")
    p.add_argument("--num-workers", type=int, help=f"decoding workers for training (default {RECIPE['num_workers']})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, std


def online_cost_ms(model, num_videos: int = 1000, repeats: int = 20) -> float:
    """Milliseconds to score ONE encoded query against ``num_videos`` stored video representations."""
    import torch

    d = model.embed_dim
    shape = (num_videos, d) if model.query_independent else (num_videos, model.cfg.video.num_frames, d)
    g = torch.Generator().manual_seed(0)
    stored = torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)
    query = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=-1)
    model.eval()
    with torch.no_grad():
        model.score(query, stored)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.score(query, stored)
    return (time.perf_counter() - t0) / repeats * 1000


def _train_and_eval(name, cfg_values, synth_root, clip_dir, runs, test_split, seed, progress, log):
    from ... import hub
    from ...data import load_split
    from ...eval import evaluate
    from ...train import TrainConfig, train

    run_dir = runs / f"{name}-seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.is_file():
        log(f"{name} seed {seed}: done before, reusing {result_path}")
        return json.loads(result_path.read_text())
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # an interrupted run of this cell: start it again from scratch
    values = {**cfg_values, "seed": seed, "data": f"msrvtt:{synth_root}", "pretrained": str(clip_dir)}
    if isinstance(values.get("stage1_data"), str):
        values["stage1_data"] = values["stage1_data"].format(synth=synth_root)
    cfg = TrainConfig(**values)
    log(f"training {name} (seed {seed}): {cfg.stage2_steps} steps, batch {cfg.batch_size}")
    summary = train(cfg, run_dir, progress=progress)
    model = hub.load_model(run_dir)
    t0 = time.time()
    metrics = evaluate(model, load_split(f"msrvtt:{synth_root}", test_split), batch_size=32, num_workers=0,
                       progress=progress)
    result = {
        "name": name, "seed": seed, "framework": model.framework, "test_split": test_split,
        "t2v": metrics["t2v"], "v2t": metrics["v2t"], "num_videos": metrics["num_videos"],
        "num_captions": metrics["num_captions"], "train_seconds": summary["seconds"],
        "eval_seconds": round(time.time() - t0, 2), "steps": summary["steps"],
        "indexable": bool(model.query_independent), "online_ms_per_query_1k_videos": round(online_cost_ms(model), 3),
        "config": {k: v for k, v in values.items() if k not in ("data", "pretrained")},
    }
    from ...core.io import atomic_write_json

    atomic_write_json(result_path, result)
    log(f"{name} seed {seed}: t2v R@1 {result['t2v']['R@1']:.1f}, v2t R@1 {result['v2t']['R@1']:.1f}")
    return result


def aggregate(results: list[dict], labels: dict[str, str]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        row = {"name": name, "label": labels.get(name, name), "seeds": [r["seed"] for r in rs],
               "indexable": rs[0]["indexable"], "steps": rs[0]["steps"]}
        for side in ("t2v", "v2t"):
            row[side] = {m: dict(zip(("mean", "std"), _mean_std([r[side][m] for r in rs]))) for m in METRICS}
            row[side]["per_seed_R@1"] = [r[side]["R@1"] for r in rs]
        row["online_ms_per_query_1k_videos"] = _mean_std([r["online_ms_per_query_1k_videos"] for r in rs])[0]
        row["train_seconds"] = _mean_std([r["train_seconds"] for r in rs])[0]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], header: dict) -> str:
    def ms(d, digits=1):
        return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"

    lines = [
        f"Synthetic benchmark: {header['num_videos']} test videos, {header['num_captions']} test captions "
        f"({header['test_split']}); {len(header['seeds'])} seed(s) {header['seeds']}; mean ± sample std over seeds.",
        "",
        "| Framework | t2v R@1 | t2v R@5 | t2v R@10 | t2v MdR | v2t R@1 | v2t R@5 | online cost / query (1k videos) | indexable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, v = r["t2v"], r["v2t"]
        lines.append(
            f"| {r['label']} | {ms(t['R@1'])} | {ms(t['R@5'])} | {ms(t['R@10'])} | {ms(t['MdR'])} | "
            f"{ms(v['R@1'])} | {ms(v['R@5'])} | {r['online_ms_per_query_1k_videos']:.2f} ms | "
            f"{'yes' if r['indexable'] else 'no (re-rank)'} |"
        )
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from tqdm.auto import tqdm

    from ...core.errors import ConfigError
    from ...core.io import atomic_write_json, atomic_write_text
    from ...data.synthetic import SynthConfig, generate
    from ...train.pretrain_clip import PretrainConfig, pretrain_clip

    if args.list_variants:
        for name, (label, _) in VARIANTS.items():
            print(f"{name:<20} {label}")
        return 0
    budget = dict(QUICK if args.quick else FULL)
    for key, value in (("seeds", args.seeds), ("steps", args.steps), ("pretrain_steps", args.pretrain_steps),
                       ("videos", args.videos)):
        if value is not None:
            budget[key] = value
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    frameworks = args.frameworks or list(FRAMEWORKS)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    t_start = time.time()

    def log(msg):
        tqdm.write(f"[{time.time() - t_start:6.0f}s] {msg}")

    # 1. data (reused when the same configuration was generated before)
    synth = out / "synth"
    synth_cfg = SynthConfig(videos=budget["videos"], images=budget["images"], seed=0)
    meta = synth / "synth_meta.json"
    same = meta.is_file() and json.loads(meta.read_text()).get("config", {}).get("videos") == synth_cfg.videos \
        and json.loads(meta.read_text()).get("config", {}).get("images") == synth_cfg.images
    if not same:
        log(f"generating the synthetic benchmark ({synth_cfg.videos} clips, {synth_cfg.images} images)")
        generate(synth, synth_cfg, overwrite=True, progress=progress)
    # 2. the tiny CLIP every framework starts from
    clip_dir = out / "clip"
    clip_summary = clip_dir / "summary.json"
    if not (clip_summary.is_file() and json.loads(clip_summary.read_text()).get("steps") == budget["pretrain_steps"]):
        log(f"pretraining the tiny CLIP ({budget['pretrain_steps']} steps)")
        pretrain_clip(PretrainConfig(data=f"images:{synth}/images.jsonl", steps=budget["pretrain_steps"],
                                     batch_size=budget["pretrain_batch"], num_workers=0, seed=0),
                      clip_dir, progress=progress)
    clip_info = json.loads(clip_summary.read_text())
    # 3. train + evaluate every (framework or variant) x seed
    recipe = dict(RECIPE, stage2_steps=budget["steps"])
    if args.num_workers is not None:
        recipe["num_workers"] = args.num_workers
    cells = [(fw, {**recipe, "model": f"{fw}-tiny"}) for fw in frameworks]
    for v in variants:
        extra = dict(VARIANTS[v][1])
        cells.append((v, {**recipe, "model": "pig-tiny", **extra}))
    runs = out / "runs"
    results = []
    for seed in budget["seeds"]:
        for name, values in cells:
            results.append(_train_and_eval(name, values, synth, clip_dir, runs, budget["test_split"], seed,
                                           progress, log))
    labels = {**FRAMEWORKS, **{k: v[0] for k, v in VARIANTS.items()}}
    rows = aggregate(results, labels)
    header = {"num_videos": results[0]["num_videos"], "num_captions": results[0]["num_captions"],
              "test_split": budget["test_split"], "seeds": budget["seeds"]}
    table = markdown_table(rows, header)
    command = "hybridtower reproduce synthetic --out-dir " + str(args.out_dir) + (" --quick" if args.quick else "")
    if args.frameworks:
        command += " --frameworks " + " ".join(frameworks)
    if args.seeds:
        command += " --seeds " + " ".join(str(x) for x in budget["seeds"])
    for flag, key in (("--steps", "steps"), ("--pretrain-steps", "pretrain_steps"), ("--videos", "videos")):
        if getattr(args, key) is not None:
            command += f" {flag} {budget[key]}"
    if variants:
        command += " --variants " + ",".join(variants)
    report = {
        "command": command, "budget": budget, "recipe": recipe, "clip": clip_info, "rows": rows, "runs": results,
        "seconds": round(time.time() - t_start, 1),
    }
    # the default run writes comparison.*; ablation / subset runs write their own files beside it
    stem = "ablations" if variants else "comparison" if set(frameworks) == set(FRAMEWORKS) else "comparison-partial"
    atomic_write_json(out / f"{stem}.json", report)
    md = (f"# Framework comparison on the synthetic benchmark\n\nCommand: `{command}` "
          f"({report['seconds'] / 60:.1f} min)\n\n" + table +
          f"\nRecipe (all frameworks): {recipe['stage2_steps']} steps x batch {recipe['batch_size']}, AdamW lr "
          f"{recipe['lr']}, wd {recipe['weight_decay']}, warm-up {recipe['warmup_ratio']:.0%} + cosine, clip "
          f"{recipe['grad_clip']}; start: tiny CLIP pretrained {clip_info['steps']} steps on the image pairs; "
          "final weights evaluated.\n")
    atomic_write_text(out / f"{stem}.md", md)
    print(md)
    return 0
