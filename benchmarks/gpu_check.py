"""GPU check: training step time, videos/s and peak memory of PIG and Two-Tower meanP; one evaluation pass.

Runs the package's own training step (``Trainer.train_step`` + ``optimizer_step``: the loss, the
all-gather path, AdamW, clipping, logit-scale clamp) on random-weight models and random frames (no
network, no dataset needed), then evaluates a model over a few hundred synthetic videos written by the
package's generator. Prints one JSON object (and writes it with ``--out``).

    python benchmarks/gpu_check.py --out gpu_check.json                 # H100/H200: B/32, batch 32, bf16
    python benchmarks/gpu_check.py --device cpu --model-size tiny       # a fast CPU rehearsal
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(preset: str, device, batch: int, steps: int, warmup: int, precision: str, grad_ckpt: bool) -> dict:
    import torch

    from hybridtower import hub
    from hybridtower.train import TrainConfig
    from hybridtower.train.distributed import DistEnv
    from hybridtower.train.optim import build_optimizer, build_scheduler
    from hybridtower.train.trainer import Trainer

    torch.manual_seed(0)
    model = hub.create_model(preset).to(device).train()
    if grad_ckpt:
        model.set_grad_checkpointing(True)
    cfg = TrainConfig(model=preset, data="unused:x", batch_size=batch, precision=precision)
    trainer = Trainer(cfg, "/nonexistent", env=DistEnv(device=device), progress=False)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    sched = build_scheduler(opt, steps + warmup, cfg.warmup_ratio)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
    size = model.preprocess_config()["image_size"]
    frames = torch.randn(batch, model.cfg.video.num_frames, 3, size, size, device=device)
    captions = [f"a red ball number {i} bounces over a blue box, then a green cube slides left" for i in range(batch)]
    tokens = model.tokenize(captions).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        parts = trainer.train_step(model, frames, tokens, "stage2", scaler)
        trainer.optimizer_step(model, opt, sched, scaler)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(parts["loss"]))
    mean = sum(times) / len(times)
    out = {
        "preset": preset, "batch": batch, "frames": model.cfg.video.num_frames, "image_size": size,
        "precision": precision, "grad_checkpointing": grad_ckpt, "timed_steps": steps, "warmup_steps": warmup,
        "step_seconds_mean": round(mean, 4), "step_seconds_min": round(min(times), 4),
        "videos_per_second": round(batch / mean, 1), "losses": [round(v, 4) for v in losses],
        "parameters_m": round(model.parameter_counts()["total"] / 1e6, 2),
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def eval_pass(preset: str, device, videos: int, precision: str, workers: int) -> dict:
    import torch

    from hybridtower import hub
    from hybridtower.data import load_split
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.eval import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(tmp, SynthConfig(videos=videos, images=0, seed=0, test_fraction=0.9, val_fraction=0.05,
                                  workers=max(0, workers)), progress=False)
        gen_s = time.perf_counter() - t0
        split = load_split(f"msrvtt:{tmp}", "test-3k")
        torch.manual_seed(0)
        model = hub.create_model(preset).to(device).eval()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        result = evaluate(model, split, batch_size=32, num_workers=workers, precision=precision, progress=False)
        _sync(device)
        secs = time.perf_counter() - t0
    out = {"preset": preset, "videos": result["num_videos"], "captions": result["num_captions"],
           "seconds": round(secs, 2), "videos_per_second_end_to_end": round(result["num_videos"] / secs, 1),
           "t2v_R@1_random_weights": result["t2v"]["R@1"], "synth_seconds": round(gen_s, 1)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--model-size", default="vit-b-32", choices=["vit-b-32", "vit-b-16", "tiny"])
    p.add_argument("--frameworks", nargs="+", default=["pig", "meanp"])
    p.add_argument("--batch", type=int, default=None, help="per-GPU batch (default 32; tiny on CPU: 4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10; CPU: 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 3; CPU: 1)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"], help="default bf16 on CUDA")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--eval-videos", type=int, default=None, help="synthetic videos for the eval pass (default 300; CPU: 24)")
    p.add_argument("--workers", type=int, default=8, help="decode workers for the eval pass (default 8)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible (use --device cpu --model-size tiny)", file=sys.stderr)
        return 2
    cpu = device.type == "cpu"
    batch = args.batch or (4 if cpu else 32)
    steps = args.steps or (2 if cpu else 10)
    warmup = args.warmup if args.warmup is not None else (1 if cpu else 3)
    precision = args.precision or ("fp32" if cpu else "bf16")
    eval_videos = args.eval_videos or (24 if cpu else 300)
    workers = 0 if cpu else args.workers
    if cpu:
        torch.set_num_threads(2)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report = {
        "device": torch.cuda.get_device_name(device) if not cpu else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "command": " ".join(["python", "benchmarks/gpu_check.py"] + (argv if argv is not None else sys.argv[1:])),
        "train": [], "eval": None,
    }
    for fw in args.frameworks:
        preset = f"{fw}-{args.model_size}"
        report["train"].append(train_steps(preset, device, batch, steps, warmup, precision, args.grad_checkpointing))
        print(json.dumps(report["train"][-1]), file=sys.stderr, flush=True)
    report["eval"] = eval_pass(f"{args.frameworks[0]}-{args.model_size}", device, eval_videos, precision, workers)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
