"""The training loop for every framework: stage 1 (PIG generator warm-up) and stage 2 (everything).

Run folder (``--output-dir RUN``)::

    config.yaml           the resolved TrainConfig (loadable again with --config)
    model_config.json     the resolved model config
    model.safetensors     THE model to evaluate: best-on-validation when the data has a validation split,
                          otherwise the final weights (``hub.load_model(RUN)`` opens it)
    last.safetensors      the final (or latest) weights, always
    train_state.pt        model + optimizer + scheduler + scaler + step/epoch + every rank's RNG states
                          (``--resume`` continues from it exactly)
    metrics.jsonl         one JSON object per logged step / validation / stage change
    summary.json          what was trained, for how long, and which checkpoint model.safetensors is

Loss (method.md section 2.1), computed on features all-gathered over ranks with gradients:
stage 2 = ``symmetric_infonce(model.score(t, v))`` over the GLOBAL batch ``+ lambda_recon *
reconstruction(t_p, t)`` for PIG (PIG-M: ``score`` is the max over each video's M vectors, the
reconstruction uses the best-matching pseudo-query, ``recon_multi_query``); stage 1 = reconstruction only, with only ``generator.*`` trainable.

Gradient accumulation is exact: a no-grad pass computes every micro-batch's features, then each
micro-batch is recomputed with gradients (same RNG state, so the same dropout masks) and scored against
the cached features of the others, so the summed gradient equals the full-batch gradient (open_clip's
``accum_freq`` scheme). It costs one extra forward pass per micro-batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.config import to_dict
from ..core.errors import ConfigError, HybridTowerError
from ..core.io import atomic_path, atomic_write_json, atomic_write_text
from .config import TRAIN_SPLIT_PREFERENCE, VAL_SPLIT_PREFERENCE, TrainConfig, pick_split
from .distributed import (
    DistEnv,
    all_gather_with_grad,
    all_reduce_gradients,
    barrier,
    broadcast_object,
    broadcast_parameters,
    init_distributed,
    min_over_ranks,
)
from .optim import build_optimizer, build_scheduler
from .sampler import GlobalBatchSampler, check_batch_layout

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LAST_FILE = "last.safetensors"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"


class TrainError(HybridTowerError):
    """A training run cannot start or continue (the message says why and what to do)."""


@dataclass
class Stage:
    name: str  # "stage1" or "stage2"
    total_steps: int
    steps_per_epoch: int
    dataset: object
    trainable: object  # "all" or ["generator"]
    lr: float


@dataclass
class Progress:
    stage: int = 0  # index into the stage list
    stage_step: int = 0  # optimizer steps done in the current stage
    epoch: int = 0  # epoch within the current stage
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None
    best_step: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_pretrained(pretrained: str | None) -> str | None:
    """A pretrain-clip output folder stands for the weights file inside it."""
    if pretrained and Path(pretrained).is_dir():
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "checkpoint.pt"):
            if (Path(pretrained) / name).is_file():
                return str(Path(pretrained) / name)
        raise ConfigError(f"--pretrained {pretrained}: folder without open_clip_model.safetensors or checkpoint.pt")
    return pretrained


def build_model(cfg: TrainConfig):
    from .. import hub

    overrides = list(cfg.model_overrides)
    if cfg.num_frames:
        overrides.append(f"video.num_frames={cfg.num_frames}")
    pretrained = resolve_pretrained(cfg.pretrained)
    model = hub.create_model(cfg.model, pretrained=pretrained, overrides=overrides)
    if cfg.logit_scale_from_clip:
        value = clip_logit_scale(pretrained)
        with torch.no_grad():
            model.logit_scale.fill_(min(value, model.cfg.logit_scale_max))
    return model


def clip_logit_scale(path: str | None) -> float:
    """The learned log temperature stored in a CLIP checkpoint file (open_clip / pretrain-clip format).

    OpenAI's CLIP ends at ln 100 = 4.6052, the model config's default; a CLIP pretrained here (or any
    other) has its own, and starting a fine-tuning far from it costs the first steps.
    """
    if not path or not Path(path).is_file():
        raise ConfigError(f"logit_scale_from_clip needs a local CLIP checkpoint file as --pretrained, got {path!r}")
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, torch.jit.ScriptModule):
            state = state.state_dict()
        state = state.get("state_dict", state)
    key = next((k for k in state if k.split("module.")[-1] == "logit_scale"), None)
    if key is None:
        raise ConfigError(f"{path} holds no logit_scale")
    return float(state[key])


def _validate(model, split, cfg: TrainConfig, progress: bool = False) -> dict:
    """Retrieval metrics of ``model`` on ``split`` through the evaluation package."""
    from ..eval import evaluate  # imported here: evaluation is a sibling package, not a dependency of import

    return evaluate(model, split, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                    precision=cfg.precision, progress=progress)


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    return str(obj)


def metric_value(metrics: dict, path: str) -> float:
    node = metrics
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"select_metric {path!r} not in the validation metrics {sorted(metrics)}")
        node = node[part]
    return float(node)


class Trainer:
    """``Trainer(cfg, "runs/x").run()``; under torchrun every rank runs the same code."""

    def __init__(self, cfg: TrainConfig, output_dir: str | Path, *, resume: bool = False, device: str = "auto",
                 progress: bool = True, env: DistEnv | None = None):
        self.cfg = cfg.validate()
        self.out = Path(output_dir)
        self.resume = resume
        self.progress = progress
        self.env = env or init_distributed(device)
        self.device = self.env.device

    # ------------------------------------------------------------------ setup
    def _log(self, msg: str) -> None:
        if self.env.is_main:
            log.info(msg)
            if not self.progress:
                return
            from tqdm.auto import tqdm

            tqdm.write(msg)

    def _output_dir_problem(self) -> str | None:
        state_path = self.out / STATE_FILE
        if self.resume:
            if not state_path.is_file():
                return f"--resume: {state_path} does not exist (nothing to continue)"
            return None
        if state_path.exists() or (self.out / MODEL_FILE).exists():
            return f"{self.out} already holds a training run; pass --resume to continue it or choose another --output-dir"
        return None

    def _load_splits(self):
        from ..data import list_splits, load_split

        cfg = self.cfg
        if not cfg.data:
            raise ConfigError("no training data: pass --data FORMAT:ROOT (or set data: in the config file)")
        available = list_splits(cfg.data)
        train_name = pick_split(available, cfg.train_split, TRAIN_SPLIT_PREFERENCE, "train", cfg.data)
        if train_name is None:
            raise ConfigError(f"{cfg.data}: no training split found among {available}; set train_split")
        val_name = pick_split(available, cfg.val_split, VAL_SPLIT_PREFERENCE, "validation", cfg.data)
        if val_name is not None and "test" in val_name:
            self._log(f"warning: validation split {val_name!r} looks like a test split (you asked for it)")
        train = load_split(cfg.data, train_name, video_root=cfg.video_root)
        if train.missing:
            self._log(f"warning: {len(train.missing)} training videos have no file and are skipped")
        train = train.available()
        val = load_split(cfg.data, val_name, video_root=cfg.video_root).available() if val_name else None
        return train, val

    def _stages(self, model, train_split) -> list[Stage]:
        from ..data.datasets import ImageCaptions, TrainPairs
        from ..encode import preprocess_for

        cfg = self.cfg
        pre = preprocess_for(model)
        stages: list[Stage] = []
        frames = model.cfg.video.num_frames
        want_stage1 = cfg.stage1_epochs > 0 or cfg.stage1_steps > 0
        if want_stage1 and model.framework != "pig":
            self._log(f"{model.framework} has no pseudo-query generator: stage 1 skipped")
        elif want_stage1:
            if cfg.stage1_data:
                from ..data import load_split

                split1 = load_split(cfg.stage1_data, cfg.stage1_split, video_root=None).available()
                if split1.format == "images":
                    ds1 = ImageCaptions(split1, pre, seed=cfg.seed)  # images as 1-frame videos
                else:
                    ds1 = self._cached(TrainPairs(split1, frames, pre, sample_mode=cfg.train_sample_mode, seed=cfg.seed))
            else:
                ds1 = self._cached(TrainPairs(train_split, frames, pre, sample_mode=cfg.train_sample_mode, seed=cfg.seed))
            stages.append(self._stage("stage1", ds1, cfg.stage1_epochs, cfg.stage1_steps, ["generator"],
                                      cfg.stage1_lr or cfg.lr))
        if cfg.stage2_epochs > 0 or cfg.stage2_steps > 0:
            ds2 = self._cached(TrainPairs(train_split, frames, pre, sample_mode=cfg.train_sample_mode, seed=cfg.seed))
            if ds2.skipped:
                self._log(f"warning: {len(ds2.skipped)} training videos without captions are skipped")
            stages.append(self._stage("stage2", ds2, cfg.stage2_epochs, cfg.stage2_steps, "all", cfg.lr))
        if not stages:
            raise ConfigError(f"nothing to train for {model.framework}: stage 2 has 0 epochs and 0 steps")
        return stages

    def _cached(self, dataset):
        if not self.cfg.cache_frames:
            return dataset
        from .frame_cache import CachedTrainPairs

        return CachedTrainPairs(dataset, num_workers=self.cfg.num_workers, progress=self.progress and self.env.is_main)

    def _stage(self, name, dataset, epochs, steps, trainable, lr) -> Stage:
        n = len(dataset)
        if self.cfg.batch_size > n:
            raise ConfigError(f"{name}: batch_size {self.cfg.batch_size} exceeds the {n} training items")
        per_epoch = n // self.cfg.batch_size
        total = steps if steps > 0 else epochs * per_epoch
        return Stage(name, total, per_epoch, dataset, trainable, lr)

    # ------------------------------------------------------------------ one step
    def _forward(self, model, frames, tokens, stage_name: str):
        from ..encode import autocast_context

        with autocast_context(self.device, self.cfg.precision):
            if stage_name == "stage1":
                out = model(frames, tokens, fuse=False)
            else:
                out = model(frames, tokens)
        return out

    def _loss(self, model, text, video, pq, stage_name: str) -> tuple[torch.Tensor, dict]:
        from ..encode import autocast_context
        from ..models.losses import reconstruction_loss, symmetric_infonce

        stop, multi = self.cfg.recon_stop_grad, self.cfg.recon_multi_query
        if stage_name == "stage1":
            recon = reconstruction_loss(pq, text, stop_grad=stop, multi=multi)
            return recon, {"recon": recon.detach()}
        with autocast_context(self.device, self.cfg.precision):
            sim = model.score(text, video)  # fp32 whatever the autocast (RetrievalModel.score)
        con = symmetric_infonce(sim, model.logit_scale)
        parts = {"contrastive": con.detach()}
        total = con
        if pq is not None and self.cfg.lambda_recon:
            recon = reconstruction_loss(pq, text, stop_grad=stop, multi=multi)
            total = total + self.cfg.lambda_recon * recon
            parts["recon"] = recon.detach()
        return total, parts

    @staticmethod
    def _loss_side_parameters(model) -> list:
        params = [model.logit_scale]
        if not model.query_independent and hasattr(model, "fusion"):
            params += list(model.fusion.parameters())  # X-Pool pools frames under each text in score()
        return params

    @staticmethod
    def _fields(out):
        return [out.text, out.video, out.pseudo_query]

    def train_step(self, model, frames: torch.Tensor, tokens: torch.Tensor, stage_name: str, scaler) -> dict:
        """Forward + backward of one global batch (this rank's share); gradients left in ``.grad``."""
        accum = self.cfg.grad_accum
        if accum == 1 or frames.shape[0] < accum:
            out = self._forward(model, frames, tokens, stage_name)
            gathered = [all_gather_with_grad(x) if x is not None else None for x in self._fields(out)]
            loss, parts = self._loss(model, *gathered, stage_name)
            (scaler.scale(loss) if scaler else loss).backward()
            return {"loss": loss.detach(), **parts}
        chunks_f = frames.chunk(accum)
        chunks_t = tokens.chunk(accum)
        cuda = self.device.type == "cuda"
        rng, cached = [], []
        with torch.no_grad():
            for f, t in zip(chunks_f, chunks_t):
                rng.append((torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None))
                cached.append([x.detach() if x is not None else None for x in self._fields(self._forward(model, f, t, stage_name))])
        end_rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None)
        # parameters used only by the loss (the temperature; X-Pool's fusion inside ``score``) see the
        # whole batch in every pass: they take their gradient from the first pass only
        loss_side = [p for p in self._loss_side_parameters(model) if p.requires_grad]
        result = None
        for i, (f, t) in enumerate(zip(chunks_f, chunks_t)):
            torch.set_rng_state(rng[i][0])
            if cuda:
                torch.cuda.set_rng_state(rng[i][1], self.device)
            for p in loss_side:
                p.requires_grad_(i == 0)
            fresh = self._fields(self._forward(model, f, t, stage_name))
            full = []
            for k in range(3):
                if fresh[k] is None:
                    full.append(None)
                    continue
                pieces = [c[k] for c in cached]
                pieces[i] = fresh[k]
                full.append(all_gather_with_grad(torch.cat(pieces)))
            loss, parts = self._loss(model, *full, stage_name)
            (scaler.scale(loss) if scaler else loss).backward()
            if result is None:
                result = {"loss": loss.detach(), **parts}
        for p in loss_side:
            p.requires_grad_(True)
        torch.set_rng_state(end_rng[0])
        if cuda:
            torch.cuda.set_rng_state(end_rng[1], self.device)
        return result

    def optimizer_step(self, model, optimizer, scheduler, scaler) -> float:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        all_reduce_gradients(params)
        if scaler:
            scaler.unscale_(optimizer)
        norm = float("nan")
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        model.clamp_logit_scale()
        return norm

    # ------------------------------------------------------------------ checkpoints
    def _save_state(self, model, optimizer, scheduler, scaler, prog: Progress) -> None:
        from ..core.seeding import rng_state

        rng_all = self._gather_objects(rng_state())
        if not self.env.is_main:
            return
        from .. import hub

        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "progress": prog.as_dict(),
            "rng": rng_all,
            "world_size": self.env.world_size,
            "config": to_dict(self.cfg),
        }
        with atomic_path(self.out / STATE_FILE) as tmp:
            torch.save(state, tmp)
        hub.save_model(model, self.out / LAST_FILE, metadata={"hybridtower.train_step": prog.global_step})

    def _gather_objects(self, obj) -> list:
        if not self.env.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.env.world_size
        dist.all_gather_object(out, obj)
        return out

    def _metrics(self, record: dict) -> None:
        if not self.env.is_main:
            return
        with open(self.out / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=_json_default) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, record.get("step", 0))

    def _truncate_metrics(self, step: int) -> None:
        """On resume, drop log lines written after the checkpoint (they will be written again)."""
        path = self.out / METRICS_FILE
        if not self.env.is_main or not path.is_file():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(path, "".join(s + "\n" for s in keep))

    # ------------------------------------------------------------------ validation
    def _maybe_validate(self, model, val_split, prog: Progress, final: bool) -> None:
        if val_split is None:
            return
        value = None
        if self.env.is_main:
            model.eval()
            try:
                metrics = _validate(model, val_split, self.cfg, progress=self.progress)
            finally:
                model.train()
            value = metric_value(metrics, self.cfg.select_metric)
            self._metrics({"event": "val", "step": prog.global_step, "split": val_split.name,
                           "select_metric": self.cfg.select_metric, "value": value, "metrics": metrics})
            improved = prog.best_value is None or value > prog.best_value
            if improved:
                from .. import hub

                prog.best_value, prog.best_step = value, prog.global_step
                hub.save_model(model, self.out / MODEL_FILE, metadata={
                    "hybridtower.train_step": prog.global_step,
                    "hybridtower.selection": f"best {self.cfg.select_metric} on {val_split.name}",
                })
            self._log(f"val {val_split.name} step {prog.global_step}: {self.cfg.select_metric} = {value:.2f}"
                      + (" (best)" if improved else f" (best {prog.best_value:.2f} at step {prog.best_step})"))
        best = broadcast_object((prog.best_value, prog.best_step))
        prog.best_value, prog.best_step = best
        barrier()

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        from torch.utils.data import DataLoader

        from ..core.seeding import seed_everything, set_rng_state
        from ..data.datasets import collate_skip_errors

        cfg, env = self.cfg, self.env
        if not cfg.data:
            raise ConfigError("no training data: pass --data FORMAT:ROOT (or set data: in the config file)")
        problem = broadcast_object(self._output_dir_problem() if env.is_main else None)
        if problem:
            raise TrainError(problem)
        saved = torch.load(self.out / STATE_FILE, map_location="cpu", weights_only=False) if self.resume else None
        if saved is not None:
            if saved["config"] != to_dict(cfg):
                diff = sorted(k for k in saved["config"] if saved["config"][k] != to_dict(cfg).get(k))
                raise TrainError(f"--resume: the config differs from the saved run in {diff}; "
                                 f"resume with the saved config ({self.out / CONFIG_FILE})")
            if saved["world_size"] != env.world_size:
                raise TrainError(f"--resume: the run used {saved['world_size']} processes, now {env.world_size}; "
                                 "resume with the same number for an exact continuation")
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        model = build_model(cfg).to(self.device)
        broadcast_parameters(model)
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if env.is_main:
            import yaml

            atomic_write_text(self.out / CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False))
            atomic_write_json(self.out / "model_config.json", to_dict(model.cfg))
        train_split, val_split = self._load_splits()
        stages = self._stages(model, train_split)
        check_batch_layout(cfg.batch_size, env.world_size, cfg.grad_accum)
        self._tb = None
        if cfg.tensorboard and env.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                self._log("tensorboard is not installed: logging to metrics.jsonl only")
        prog = Progress()
        if saved is not None:
            prog = Progress(**saved["progress"])
            model.load_state_dict(saved["model"])
            self._truncate_metrics(prog.global_step)
            self._log(f"resuming {self.out} at {stages[min(prog.stage, len(stages) - 1)].name} "
                      f"step {prog.stage_step} (global step {prog.global_step})")
        else:
            self._log(f"training {cfg.model} on {cfg.data}: {len(train_split.videos)} videos; "
                      + ", ".join(f"{s.name} {s.total_steps} steps" for s in stages)
                      + (f"; validation on {val_split.name}" if val_split else "; no validation split: "
                         "model.safetensors = the final weights"))
        torch.manual_seed(cfg.seed + 1000 * env.rank)  # dropout streams differ per rank
        scaler_on = cfg.precision == "fp16" and self.device.type == "cuda"
        model.train()
        t_start = time.time()
        while prog.stage < len(stages):
            stage = stages[prog.stage]
            model.set_trainable(stage.trainable)
            optimizer = build_optimizer(model, stage.lr, cfg.weight_decay, cfg.betas, cfg.eps, cfg.new_module_lr_mult)
            scheduler = build_scheduler(optimizer, stage.total_steps, cfg.warmup_ratio, cfg.schedule)
            scaler = torch.amp.GradScaler("cuda") if scaler_on else None
            if saved is not None and prog.stage_step > 0:
                optimizer.load_state_dict(saved["optimizer"])
                scheduler.load_state_dict(saved["scheduler"])
                if scaler and saved["scaler"]:
                    scaler.load_state_dict(saved["scaler"])
            if saved is not None:
                set_rng_state(saved["rng"][env.rank])
                saved = None
            if prog.stage_step == 0:
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                self._metrics({"event": "stage", "step": prog.global_step, "stage": stage.name,
                               "steps": stage.total_steps, "trainable_parameters": trainable})
                self._log(f"{stage.name}: {stage.total_steps} steps, {trainable / 1e6:.2f} M trainable parameters")
            self._run_stage(model, stage, optimizer, scheduler, scaler, prog, val_split, DataLoader, collate_skip_errors)
            prog.stage += 1
            prog.stage_step = prog.epoch = prog.step_in_epoch = 0
            self._save_state(model, optimizer, scheduler, scaler, prog)
            barrier()
        summary = self._finish(model, val_split, prog, stages, time.time() - t_start)
        if self._tb is not None:
            self._tb.close()
        return summary

    def _run_stage(self, model, stage, optimizer, scheduler, scaler, prog, val_split, DataLoader, collate) -> None:
        from tqdm.auto import tqdm

        cfg, env = self.cfg, self.env
        bar = tqdm(total=stage.total_steps, initial=prog.stage_step, desc=stage.name, unit="step",
                   disable=not (self.progress and env.is_main), dynamic_ncols=True)
        is_last_stage = stage.name == "stage2"
        window_t, window_n = time.time(), 0
        while prog.stage_step < stage.total_steps:
            stage.dataset.set_epoch(prog.epoch + (0 if stage.name == "stage2" else 10_000))
            sampler = GlobalBatchSampler(len(stage.dataset), cfg.batch_size, env.rank, env.world_size,
                                         seed=cfg.seed + (0 if stage.name == "stage2" else 1),
                                         epoch=prog.epoch, start_step=prog.step_in_epoch)
            # a private generator: creating a loader must not draw from the global RNG (exact resume)
            workers = 0 if getattr(stage.dataset, "in_memory", False) else cfg.num_workers
            loader = DataLoader(stage.dataset, batch_sampler=sampler, num_workers=workers,
                                collate_fn=collate, pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(cfg.seed))
            for batch in loader:
                if batch["errors"]:
                    self._log(f"warning: skipped {len(batch['errors'])} undecodable video(s): "
                              + "; ".join(e["error"] for e in batch["errors"][:3]))
                n_ok = 0 if batch["frames"] is None else batch["frames"].shape[0]
                keep = min_over_ranks(n_ok, self.device)  # every rank must keep the same count (gather)
                if keep == 0:
                    raise TrainError(f"every video of a batch failed to decode (on some rank): {batch['errors'][:3]}")
                frames = batch["frames"][:keep].to(self.device, non_blocking=True)
                texts = batch["texts"][:keep]
                tokens = model.tokenize(texts).to(self.device)
                lr_used = optimizer.param_groups[0]["lr"]
                parts = self.train_step(model, frames, tokens, stage.name, scaler)
                norm = self.optimizer_step(model, optimizer, scheduler, scaler)
                prog.stage_step += 1
                prog.step_in_epoch += 1
                prog.global_step += 1
                window_n += frames.shape[0] * env.world_size
                values = {k: float(v) for k, v in parts.items()}
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainError(f"{stage.name} step {prog.stage_step}: loss is not finite {values}; "
                                     "lower the LR or use bf16 instead of fp16")
                now = time.time()
                vps = window_n / max(now - window_t, 1e-9)
                bar.set_postfix(loss=f"{values['loss']:.4f}", vid_s=f"{vps:.1f}")
                bar.update(1)
                if prog.stage_step % max(1, cfg.log_every) == 0 or prog.stage_step in (1, stage.total_steps):
                    self._metrics({"event": "train", "step": prog.global_step, "stage": stage.name,
                                   "stage_step": prog.stage_step, "epoch": prog.epoch, **values,
                                   "lr": lr_used, "grad_norm": norm,
                                   "logit_scale": model.logit_scale.detach().exp().item(), "videos_per_s": vps})
                    window_t, window_n = now, 0
                if cfg.save_every and prog.global_step % cfg.save_every == 0:
                    self._save_state(model, optimizer, scheduler, scaler, prog)
                if prog.stage_step >= stage.total_steps:
                    break
            if prog.step_in_epoch >= stage.steps_per_epoch:
                prog.epoch += 1
                prog.step_in_epoch = 0
                done = prog.stage_step >= stage.total_steps
                if is_last_stage and not done and cfg.eval_every and prog.epoch % cfg.eval_every == 0:
                    self._maybe_validate(model, val_split, prog, final=False)
                if not done:
                    self._save_state(model, optimizer, scheduler, scaler, prog)
        bar.close()
        if is_last_stage:
            self._maybe_validate(model, val_split, prog, final=True)

    def _finish(self, model, val_split, prog: Progress, stages, seconds: float) -> dict:
        from .. import hub

        summary = {
            "output_dir": str(self.out),
            "model": self.cfg.model,
            "framework": model.framework,
            "data": self.cfg.data,
            "steps": {s.name: s.total_steps for s in stages},
            "global_batch": self.cfg.batch_size,
            "world_size": self.env.world_size,
            "seconds": round(seconds, 2),
        }
        if val_split is not None and prog.best_step is not None:
            summary["model_file"] = f"best {self.cfg.select_metric} on {val_split.name} at step {prog.best_step}"
            summary["best_value"] = prog.best_value
        else:
            summary["model_file"] = "final weights (no validation split)"
            if self.env.is_main:
                hub.save_model(model, self.out / MODEL_FILE, metadata={
                    "hybridtower.train_step": prog.global_step, "hybridtower.selection": "final"})
        if self.env.is_main:
            atomic_write_json(self.out / "summary.json", summary)
            self._metrics({"event": "done", "step": prog.global_step, **{k: v for k, v in summary.items() if k != "steps"}})
        barrier()
        return summary


def train(cfg: TrainConfig, output_dir: str | Path, *, resume: bool = False, device: str = "auto",
          progress: bool = True) -> dict:
    """Run a training (both stages as configured) into ``output_dir``; returns the summary dict."""
    return Trainer(cfg, output_dir, resume=resume, device=device, progress=progress).run()
