"""The framework comparison on the synthetic benchmark, end to end on a CPU (``hybridtower reproduce``).

Steps, each reused when it was finished before in the same output folder with the same configuration:

1. data: ``hybridtower synth`` of the chosen kind (``shapes`` or ``scenes``) into ``OUT/synth``;
2. the tiny CLIP every framework starts from: ``pretrain-clip`` on the image-caption pairs, ``OUT/clip``;
3. equal tuning (:mod:`.tuning`): every framework trains once per grid point (lr x new-module LR
   multiplier) with seed 0 and is scored on the VALIDATION split; each framework's best point is chosen
   there, never on test;
4. every framework at its chosen point, for every seed, scored on the TEST split (the seed-0 run is the
   grid's run at that point: same config, same seed); per-caption ranks are kept for the bootstrap;
5. optional PIG variants (ablations for the investigation) at PIG's chosen point;
6. the report (:mod:`.report`): mean ± SD, the premise check, paired differences with 95% intervals,
   written to ``OUT/comparison.{md,json}`` (``ablations.*`` with variants, ``comparison-partial.*`` for a
   subset of frameworks).

Run folders: ``OUT/runs/<name>-<grid point>-seed<k>/`` are ordinary training runs (``hybridtower evaluate
--checkpoint`` re-scores them) plus ``cell.json`` (the training config and summary) and
``eval-<split>.json`` (metrics and the per-caption t2v ranks). A cell is retrained when its config
changed; after changing the CODE, use a new output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import report as rep
from . import tuning

# The one recipe every framework gets; lr and new_module_lr_mult come from the tuning grid.
RECIPE = {
    "train_split": "train-9k",
    "val_split": "none",  # no selection inside a run: the final weights are evaluated; tuning scores val afterwards
    "stage1_steps": 0,  # single stage, as the official release; stage 1 is studied as a variant
    "stage2_steps": 200,
    "batch_size": 32,
    "grad_accum": 1,
    "lr": 3e-4,
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
    "pigm4": "Hybrid-Tower PIG-M (M = 4)",
}
PRESETS = {"meanp": "meanp-tiny", "clipvip": "clipvip-tiny", "xpool": "xpool-tiny", "pig": "pig-tiny",
           "pigm4": "pig-m4-tiny"}
# PIG ablations for the investigation (rows of their own, at PIG's chosen grid point)
VARIANTS = {
    "pig-its-k0": ("PIG without ITS patch tokens (k = 0)", {"model_overrides": ["its.k=0"]}),
    "pig-its-k32": ("PIG with k = 32 ITS patch tokens", {"model_overrides": ["its.k=32"]}),
    "pig-its-all": ("PIG with every patch token (k = -1)", {"model_overrides": ["its.k=-1"]}),
    "pig-no-recon": ("PIG without the reconstruction loss (lambda = 0)", {"lambda_recon": 0.0}),
    "pig-recon5": ("PIG with lambda = 5", {"lambda_recon": 5.0}),
    "pig-stage1-video": ("PIG + stage 1 on the training videos (generator only, +60 steps)", {"stage1_steps": 60}),
    "pig-stage1-images": ("PIG + stage 1 on the image pairs (generator only, +60 steps)",
                          {"stage1_steps": 60, "stage1_data": "images:{synth}/images.jsonl"}),
    "pig-steps2x": ("PIG with twice the steps", {"steps_mult": 2}),
    "pig-nofusion": ("PIG without fusion (t_p itself is the video vector)", {"model_overrides": ["fusion.enabled=false"]}),
    "pig-fusion-frames": ("PIG, fusion keys = frame CLS tokens only", {"model_overrides": ["fusion.keys=frames"]}),
    "pig-fusion-global": ("PIG, fusion keys = video CLS + proxies only", {"model_overrides": ["fusion.keys=global"]}),
}
BUDGETS = {
    # scenes-bold: 2-3 bold scenes per clip (each readable from one frame; .data.synthetic.bold), a caption per
    # scene; 4 rendered frames per scene, 8 sampled. Chosen by the pilots of docs/comparison.md; lr 1e-4 was
    # added to the grid after every framework chose the lowest of {3e-4, 1e-3}
    "scenes-bold": {"videos": 1000, "images": 3000, "pretrain_steps": 300, "pretrain_batch": 128, "steps": 100,
                    "batch_size": 32, "frames": 8, "seeds": [0, 1, 2, 3, 4], "lrs": [1e-4, 3e-4, 1e-3],
                    "mults": [1.0, 10.0],
                    "arch": "hybridtower-tiny", "val_split": "val", "test_split": "test-3k",
                    "synth": {"kind": "scenes", "scene_style": "bold", "scenes_min": 2, "scenes_max": 3,
                              "frames_per_scene": 4}},
    # scenes: 2-4 scenes per clip, a caption per scene; 8 frames (2-4 per scene). Sized for a shared 2-core
    # machine: 300 pretraining steps, 60 steps per run (docs/comparison.md, "Budget")
    "scenes": {"videos": 1000, "images": 3000, "pretrain_steps": 300, "pretrain_batch": 128, "steps": 60,
               "batch_size": 32, "frames": 8, "seeds": [0, 1, 2, 3, 4], "lrs": [3e-4, 1e-3], "mults": [1.0, 10.0],
               "arch": "hybridtower-tiny", "val_split": "val", "test_split": "test-3k"},
    "shapes": {"videos": 1000, "images": 3000, "pretrain_steps": 600, "pretrain_batch": 128, "steps": 200,
               "batch_size": 32, "frames": 8, "seeds": [0, 1, 2, 3, 4], "lrs": [1e-4, 3e-4], "mults": [1.0, 10.0],
               "arch": "hybridtower-tiny", "val_split": "val", "test_split": "test-3k"},
}
# --scale gpu (issue 9, section 6): the same comparison with a bigger CLIP and more steps, sized for ONE
# prepared run of about 6 minutes on one H100/H200 (an estimate from FLOPs and the CPU timings, not measured
# here: docs/comparison.md, "GPU-sized version"). Overrides of the kind's budget, plus how runs execute.
SCALES = {
    "cpu": {"budget": {}, "precision": "fp32", "num_workers": None, "frameworks": None},
    "gpu": {
        # open_clip's ViT-S-32-alt: 224 px, patch 32 (49 patches/frame), 12 layers x 384 (vision), 10 x 256
        # (text), 52M parameters with PIG's modules, vs hybridtower-tiny's 16 patches, 3 layers x 128
        "budget": {"arch": "ViT-S-32-alt", "images": 6000, "pretrain_steps": 800, "pretrain_batch": 256,
                   "steps": 300, "lrs": [3e-4], "mults": [1.0]},
        "precision": "bf16",  # autocast on CUDA (the CPU always runs fp32); logits and losses stay fp32
        "num_workers": 6,
        "frameworks": ["meanp", "clipvip", "xpool", "pig"],  # 20 runs; add pigm4 with --frameworks if time allows
    },
}
QUICK = {"videos": 30, "images": 80, "pretrain_steps": 4, "pretrain_batch": 16, "steps": 3, "batch_size": 8,
         "frames": 4, "seeds": [0, 1], "lrs": [3e-4], "mults": [1.0, 10.0], "arch": "hybridtower-tiny",
         "val_split": "val", "test_split": "test-3k"}


@dataclass
class ComparisonOptions:
    out_dir: str
    kind: str = "scenes"
    quick: bool = False
    frameworks: list[str] | None = None  # None = every framework whose preset exists
    variants: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)  # overrides of the kind's budget (seeds, steps, ...)
    tune: bool = True  # False: every framework at the first grid point (no validation runs)
    scale: str = "cpu"  # "gpu": SCALES["gpu"] (a bigger CLIP, more steps; runs on CUDA when present)
    num_workers: int | None = None
    threads: int | None = None  # torch CPU threads (None = torch's default); results are deterministic per count
    progress: bool = True
    command: str = ""


def available_frameworks() -> list[str]:
    """The frameworks whose model preset this installation has (PIG-M arrives with its preset)."""
    from .. import hub
    from ..core.errors import ConfigError

    out = []
    for name, preset in PRESETS.items():
        try:
            hub.resolve_config(preset)
        except (ConfigError, ValueError):
            continue
        out.append(name)
    return out


def labels() -> dict[str, str]:
    return {**FRAMEWORKS, **{k: v[0] for k, v in VARIANTS.items()}}


def resolve_budget(opts: ComparisonOptions) -> dict:
    from ..core.errors import ConfigError

    if opts.kind not in BUDGETS:
        raise ConfigError(f"unknown synthetic kind {opts.kind!r}; choose one of {sorted(BUDGETS)}")
    if opts.scale not in SCALES:
        raise ConfigError(f"unknown scale {opts.scale!r}; choose one of {sorted(SCALES)}")
    budget = dict(QUICK if opts.quick else BUDGETS[opts.kind])
    if not opts.quick:
        budget.update(SCALES[opts.scale]["budget"])
    if opts.quick and "synth" in BUDGETS[opts.kind]:
        budget["synth"] = dict(BUDGETS[opts.kind]["synth"])  # the kind's data design, at the quick size
    unknown = set(opts.budget) - set(budget)
    if unknown:
        raise ConfigError(f"unknown budget key(s) {sorted(unknown)}")
    budget.update({k: v for k, v in opts.budget.items() if v is not None})
    return budget


class Comparison:
    """One output folder's comparison; see the module docstring for the steps."""

    def __init__(self, opts: ComparisonOptions, log=print):
        from ..core.errors import ConfigError

        self.opts = opts
        self.log = log
        self.budget = resolve_budget(opts)
        self.out = Path(opts.out_dir)
        self.synth = self.out / "synth"
        self.clip_dir = self.out / "clip"
        self.runs = self.out / "runs"
        self.scale = SCALES[opts.scale]
        have = available_frameworks()
        wanted = opts.frameworks or self.scale["frameworks"] or have
        missing = [f for f in wanted if f not in have]
        if missing:
            raise ConfigError(f"framework(s) {missing} have no model preset here ({[PRESETS[m] for m in missing]}); "
                              f"available: {have}")
        self.frameworks = list(wanted)
        bad = [v for v in opts.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"unknown variant(s) {bad}; known: {sorted(VARIANTS)}")
        self.recipe = dict(RECIPE, stage2_steps=self.budget["steps"], batch_size=self.budget["batch_size"],
                           num_frames=self.budget["frames"])
        self.recipe["precision"] = self.scale["precision"]
        workers = opts.num_workers if opts.num_workers is not None else self.scale["num_workers"]
        if workers is not None:
            self.recipe["num_workers"] = workers
        self.all_ranks: dict[str, list] = {}  # run name -> per-seed per-caption test t2v ranks

    # ----- 1. data, 2. CLIP -----
    @property
    def synth_kind(self) -> str:
        """The ``hybridtower synth`` kind behind this comparison kind (``scenes-bold`` is ``scenes``, style bold)."""
        return self.budget.get("synth", {}).get("kind", self.opts.kind)

    def data(self) -> None:
        from ..data.synthetic import SynthConfig, generate

        extra = {k: v for k, v in self.budget.get("synth", {}).items() if k != "kind"}
        cfg = SynthConfig(kind=self.synth_kind, videos=self.budget["videos"], images=self.budget["images"], seed=0,
                          **extra)
        meta = self.synth / "synth_meta.json"
        wanted = {k: v for k, v in asdict(cfg).items() if k != "workers"}
        if meta.is_file():
            have = json.loads(meta.read_text()).get("config", {})
            if {k: have.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
                return
        self.log(f"generating the synthetic benchmark ({cfg.kind} kind, {cfg.videos} clips, {cfg.images} images)")
        generate(self.synth, cfg, overwrite=True, progress=self.opts.progress)

    def clip(self) -> dict:
        from ..train.pretrain_clip import PretrainConfig, pretrain_clip

        summary = self.clip_dir / "summary.json"
        if summary.is_file():
            info = json.loads(summary.read_text())
            if info.get("steps") == self.budget["pretrain_steps"] and info.get("arch") == self.budget["arch"]:
                return info
        self.log(f"pretraining the CLIP ({self.budget['arch']}, {self.budget['pretrain_steps']} steps)")
        pretrain_clip(PretrainConfig(data=f"images:{self.synth}/images.jsonl", arch=self.budget["arch"],
                                     steps=self.budget["pretrain_steps"], batch_size=self.budget["pretrain_batch"],
                                     num_workers=0, seed=0, precision=self.scale["precision"]),
                      self.clip_dir, progress=self.opts.progress)
        return json.loads(summary.read_text())

    # ----- one cell: train with a config and seed, evaluate on a split -----
    def cell_values(self, preset: str, point: dict, extra: dict | None = None) -> dict:
        values = {**self.recipe, "model": preset, **point}
        if self.budget["arch"] != "hybridtower-tiny":
            values["model_overrides"] = [f"backbone.arch={self.budget['arch']}"]
        for key, value in (extra or {}).items():
            if key == "steps_mult":
                values["stage2_steps"] = int(values["stage2_steps"] * value)
            elif key == "model_overrides":
                values["model_overrides"] = list(values.get("model_overrides", [])) + list(value)
            elif key == "stage1_data":
                values[key] = value.format(synth=self.synth)
            else:
                values[key] = value
        return values

    def train_cell(self, name: str, values: dict, seed: int) -> Path:
        run_dir = self.runs / f"{name}-{tuning.point_tag(values)}-seed{seed}"
        full = {**values, "seed": seed, "data": f"msrvtt:{self.synth}", "pretrained": str(self.clip_dir)}
        marker = run_dir / "cell.json"

        def done() -> bool:
            return marker.is_file() and json.loads(marker.read_text()).get("config") == json.loads(json.dumps(full))

        if done():
            return run_dir
        with CellLock(run_dir.with_name(run_dir.name + ".lock"), self.log):  # another invocation may train it
            if done():
                return run_dir
            return self._train_locked(name, run_dir, full, values, seed, marker)

    def _train_locked(self, name: str, run_dir: Path, full: dict, values: dict, seed: int, marker: Path) -> Path:
        from ..train import TrainConfig, train

        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted or changed cell: start it again from scratch
        cfg = TrainConfig(**full)
        self.log(f"training {name} ({tuning.point_tag(values)}, seed {seed}): {cfg.stage2_steps} steps")
        summary = train(cfg, run_dir, progress=self.opts.progress)
        (run_dir / "train_state.pt").unlink(missing_ok=True)  # finished: the resume state is not needed
        from ..core.io import atomic_write_json

        atomic_write_json(marker, {"config": full, "summary": summary})
        return run_dir

    def eval_cell(self, run_dir: Path, split: str, ranks: bool = False) -> dict:
        path = run_dir / f"eval-{split}.json"
        if path.is_file():
            return json.loads(path.read_text())
        with CellLock(path.with_suffix(".lock"), self.log):
            if path.is_file():  # another invocation scored it meanwhile
                return json.loads(path.read_text())
            return self._eval_locked(run_dir, split, ranks, path)

    def _eval_locked(self, run_dir: Path, split: str, ranks: bool, path: Path) -> dict:
        from .. import hub
        from ..core.io import atomic_write_json
        from ..data import load_split
        from ..eval import evaluate

        import torch

        model = hub.load_model(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
        t0 = time.time()
        metrics = evaluate(model, load_split(f"msrvtt:{self.synth}", split), batch_size=32, num_workers=0,
                           progress=self.opts.progress, return_ranks=True)
        cell = json.loads((run_dir / "cell.json").read_text())
        result = {
            "split": split, "framework": model.framework, "t2v": metrics["t2v"], "v2t": metrics["v2t"],
            "num_videos": metrics["num_videos"], "num_captions": metrics["num_captions"],
            "eval_seconds": round(time.time() - t0, 2), "train_seconds": cell["summary"].get("seconds"),
            "steps": cell["summary"].get("steps"), "indexable": bool(model.query_independent),
            "online_ms_per_query_1k_videos": round(online_cost_ms(model), 3) if ranks else None,
            "t2v_ranks": [int(x) for x in metrics["ranks"]["t2v"]] if ranks else None,
        }
        atomic_write_json(path, result)
        return result

    # ----- 3. tuning -----
    def tune(self) -> dict:
        points = tuning.grid_points(self.budget["lrs"], self.budget["mults"])
        if not self.opts.tune:
            return {fw: {"grid": [], "chosen": points[0]} for fw in self.frameworks}
        out = {}
        for fw in self.frameworks:
            scored = []
            for point in points:
                run_dir = self.train_cell(fw, self.cell_values(PRESETS[fw], point), 0)
                val = self.eval_cell(run_dir, self.budget["val_split"])
                scored.append((point, val))
            chosen = tuning.choose(scored)
            out[fw] = {"grid": [{"point": p, "score": tuning.select_score(v), "t2v": v["t2v"]} for p, v in scored],
                       "chosen": chosen}
            self.log(f"{fw}: chose {tuning.point_tag(chosen)} on validation "
                     f"({', '.join(f'{tuning.point_tag(p)} {tuning.select_score(v):.1f}' for p, v in scored)})")
        return out

    # ----- 4.-5. test runs -----
    def test_runs(self, chosen: dict) -> tuple[list[dict], dict]:
        results, ranks0 = [], {}
        cells = [(fw, self.cell_values(PRESETS[fw], chosen[fw]["chosen"])) for fw in self.frameworks]
        pig_point = chosen.get("pig", {}).get("chosen") if self.opts.variants else None
        for v in self.opts.variants:
            if pig_point is None:
                raise ValueError("variants need PIG in the comparison (its chosen grid point)")
            cells.append((v, self.cell_values(PRESETS["pig"], pig_point, VARIANTS[v][1])))
        for seed in self.budget["seeds"]:
            for name, values in cells:
                run_dir = self.train_cell(name, values, seed)
                res = self.eval_cell(run_dir, self.budget["test_split"], ranks=True)
                ranks = res.pop("t2v_ranks")
                if seed == self.budget["seeds"][0]:
                    ranks0[name] = ranks
                self.all_ranks.setdefault(name, []).append(ranks)
                results.append({"name": name, "seed": seed, **res})
                self.log(f"{name} seed {seed}: test t2v R@1 {res['t2v']['R@1']:.1f}, R@5 {res['t2v']['R@5']:.1f}, "
                         f"MdR {res['t2v']['MdR']:.0f}")
        return results, ranks0

    def scene_counts(self) -> list[int] | None:
        """For the scenes kind: the number of scenes in each test caption's clip (test split order)."""
        from ..data import load_split

        if self.synth_kind != "scenes":
            return None
        meta = json.loads((self.synth / "synth_meta.json").read_text())
        scenes = {v["video_id"]: len(v["clip"]["scenes"]) for v in meta["videos"]}
        return [scenes[c.video_id] for c in load_split(f"msrvtt:{self.synth}", self.budget["test_split"]).captions]

    def run(self) -> dict:
        import torch

        t0 = time.time()
        if self.opts.threads:
            torch.set_num_threads(self.opts.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data()
        clip_info = self.clip()
        chosen = self.tune()
        results, ranks0 = self.test_runs(chosen)
        counts = self.scene_counts()
        names = labels()
        rows = rep.aggregate(results, names)
        pairs = list(rep.PAIRS) + [(v, "pig") for v in self.opts.variants]
        first = results[0]
        report = {
            "command": self.opts.command, "kind": self.opts.kind, "scale": self.opts.scale, "budget": self.budget,
            "recipe": self.recipe,
            "clip": clip_info, "select_metric": tuning.SELECT_METRIC, "tuning": chosen if self.opts.tune else {},
            "fixed_point": None if self.opts.tune else tuning.grid_points(self.budget["lrs"], self.budget["mults"])[0],
            "header": {"num_videos": first["num_videos"], "num_captions": first["num_captions"],
                       "test_split": self.budget["test_split"], "seeds": self.budget["seeds"],
                       "title": f"Synthetic benchmark, {self.opts.kind} kind"},
            "rows": rows, "premise": rep.premise_check(results),
            "paired": rep.paired_table(results, pairs, ranks0),
            "half_gap": [g for g in (rep.half_gap(results, metric=m) for m in ("R@5", "MdR")) if g],
            "breakdown": rep.breakdown(self.all_ranks, counts) if counts else None,
            "runs": results, "seconds": round(time.time() - t0, 1), "torch_threads": torch.get_num_threads(),
        }
        stem = "ablations" if self.opts.variants else \
            "comparison" if set(self.frameworks) >= set(PRESETS) - {"pigm4"} else "comparison-partial"
        from ..core.io import atomic_write_json, atomic_write_text

        atomic_write_json(self.out / f"{stem}.json", report)
        md = rep.markdown_report(report, names)
        atomic_write_text(self.out / f"{stem}.md", md)
        report["markdown"] = md
        return report


class CellLock:
    """A lock file per cell, so that two ``reproduce`` invocations on the same folder (e.g. the main comparison
    and a ``--variants`` run sharing PIG's cells, one per CPU core) never train the same cell at once: the
    second waits for the first and then reuses its result. A lock left by a dead process is taken over."""

    def __init__(self, path: Path, log=print, poll_s: float = 5.0):
        self.path, self.log, self.poll_s = Path(path), log, poll_s

    def _holder_alive(self) -> bool:
        import os

        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return True  # being written right now: treat as held
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __enter__(self):
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        waited = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._holder_alive():
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if not waited:
                    self.log(f"waiting for another process to finish {self.path.stem}")
                    waited = True
                time.sleep(self.poll_s)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def online_cost_ms(model, num_videos: int = 1000, repeats: int = 20) -> float:
    """Milliseconds to score ONE encoded query against ``num_videos`` stored video representations."""
    import torch

    d = model.embed_dim
    per_video = int(getattr(model, "vectors_per_video", 1) or 1)  # PIG-M stores M vectors per video
    if not model.query_independent:
        shape = (num_videos, model.cfg.video.num_frames, d)
    else:
        shape = (num_videos, per_video, d) if per_video > 1 else (num_videos, d)
    g = torch.Generator().manual_seed(0)
    dev = model.logit_scale.device  # the model's device (X-Pool's fusion weights live there)
    stored = torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1).to(dev)
    query = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=-1).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model.eval()
    with torch.no_grad():
        model.score(query, stored)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.score(query, stored)
        sync()
    return (time.perf_counter() - t0) / repeats * 1000


def run_comparison(opts: ComparisonOptions, log=print) -> dict:
    return Comparison(opts, log).run()
