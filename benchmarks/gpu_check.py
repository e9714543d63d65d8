"""GPU check: exact search at the bandwidth floor, indexing throughput, the efficiency benchmark, training step
time and an evaluation pass, in ONE prepared run that fits one device call of about 8 minutes.

Parts (``--parts``, run in this order; each one writes the JSON again when it finishes, so a run stopped by
a time limit still leaves every finished part's figures):

``search``      GPU exact search: ``torch`` matrix-vector product + ``topk`` over N x 512 unit vectors, fp32
                and fp16, one query and a batch, against the GPU's memory-bandwidth floor (a read-only
                reduction, ``torch.sum``, over a large device array, best of 10; the device-to-device copy
                figure beside it) and against a read scan of the same gallery. fp16's recall@10 against fp32.
``index``       indexing throughput of pig-vit-b-32 (bf16 on a GPU): decode-only videos/s (the index run's own
                DataLoader), encode-only videos/s from frames in memory (host memory, as the pipeline hands
                them over, and already on the device), and the full ``hybridtower index`` (``build_index``),
                on synthetic clips this script generates with the package's generator.
``efficiency``  ``hybridtower bench efficiency`` on this device: PIG vs Two-Tower vs X-Pool online cost at
                N = 1k .. 10M, and PIG-M's cost per M; the full report goes beside ``--out``
                (``*-efficiency.json`` / ``.md``); ``devices_used`` must show the GPU only.
``train``       the package's own training step (``Trainer.train_step`` + ``optimizer_step``) on random-weight
                pig and meanp models at batch 32, bf16 autocast: step time, videos/s, peak memory.
``eval``        one ``evaluate`` pass of pig over a few hundred synthetic videos (decode + encode + score).

Model weights are random (cost does not depend on them); nothing needs a network or a data set.

    python benchmarks/gpu_check.py --out gpu_check.json --budget-s 240     # one H100/H200
    python benchmarks/gpu_check.py --device cpu --model-size tiny --out r.json   # rehearsal, every part, seconds

``--budget-s`` skips a part whose expected time (``ESTIMATE_S``, measured or estimated for one H100/H200 with
the GPU defaults) no longer fits. The exit code is 0 when every part that ran succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

PARTS = ("search", "index", "efficiency", "train", "eval")
# expected seconds per part on one H100/H200 with the GPU defaults below (estimates until a run replaces them:
# see docs/gpu.md); used by --budget-s to skip a part that would not fit
ESTIMATE_S = {"search": 30, "index": 75, "efficiency": 110, "train": 40, "eval": 35}


@dataclass
class Plan:
    """Sizes of every part; ``for_device`` gives the GPU run and the CPU rehearsal."""

    batch: int = 32
    steps: int = 10
    warmup: int = 3
    precision: str = "bf16"
    eval_videos: int = 300
    workers: int = 8
    index_videos: int = 2000
    index_batch: int = 64
    index_rounds: int = 2
    index_hold_videos: int = 512  # videos whose frames are held in memory for encode-only
    eff_sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000, 10_000_000])
    eff_repeats: int = 5
    eff_offline_repeats: int = 3
    eff_offline_batch: int = 32
    eff_min_seconds: float = 0.3
    eff_max_gallery_gb: float = 48.0
    eff_bandwidth_mb: int = 2048
    eff_m_values: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    search_sizes: list[int] = field(default_factory=lambda: [1_000, 100_000, 1_000_000, 10_000_000, 30_000_000])
    search_dim: int = 512
    search_batch: int = 64
    search_repeats: int = 10
    search_min_seconds: float = 0.2
    search_floor_mb: int = 4096  # 4 GiB: far past the 50-60 MB L2 of an H100/H200
    search_max_gb: float | None = None  # None: up to 80 % of the device's free memory
    topk: int = 10

    @classmethod
    def for_device(cls, device) -> "Plan":
        if device.type == "cuda":
            cpus = os.cpu_count() or 4
            return cls(workers=max(1, min(14, cpus - 2)))
        return cls(batch=2, steps=1, warmup=1, precision="fp32", eval_videos=24, workers=0, index_videos=8,
                   index_batch=4, index_rounds=1, index_hold_videos=8, eff_sizes=[256, 1024], eff_repeats=1,
                   eff_offline_repeats=1, eff_offline_batch=1, eff_min_seconds=0.0, eff_max_gallery_gb=0.002,
                   eff_bandwidth_mb=8, search_sizes=[1_000, 20_000], search_batch=8, search_repeats=3,
                   search_min_seconds=0.0, search_floor_mb=32, search_max_gb=0.5)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_device_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# search: exact search on the device against its bandwidth floor


def _random_unit(n: int, d: int, device, dtype, seed: int, chunk: int = 1 << 20):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, d, dtype=dtype, device=device)
    for s in range(0, n, chunk):
        x = torch.randn(min(chunk, n - s), d, generator=g, device=device)
        out[s : s + x.shape[0]] = torch.nn.functional.normalize(x, dim=-1).to(dtype)
    return out


def search_part(device, plan: Plan) -> dict:
    """Exact top-k by matrix product on the device, fp32 and fp16, against the read floor."""
    import torch

    from hybridtower.analysis.bandwidth import measure_copy_bandwidth, measure_read_bandwidth
    from hybridtower.analysis.machine import available_memory_bytes
    from hybridtower.analysis.timing import time_call, time_round_robin

    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here (a batch's product would use TF32)
    try:
        read = measure_read_bandwidth(device, mbytes=plan.search_floor_mb, repeats=10)
        copy = measure_copy_bandwidth(device, mbytes=plan.search_floor_mb // 2, repeats=5)
        _free_device_memory(device)
        bw = read["best_gbps"] * 1e9
        d, k, nb = plan.search_dim, plan.topk, plan.search_batch

        def fits(nbytes: int) -> bool:
            if plan.search_max_gb is not None:
                return nbytes <= plan.search_max_gb * 1e9
            free = available_memory_bytes(device)
            return free is None or nbytes <= 0.8 * free

        gq = torch.Generator(device=device).manual_seed(1)
        q32 = torch.nn.functional.normalize(torch.randn(nb, d, generator=gq, device=device), dim=-1)
        rows = []
        for n in plan.search_sizes:
            kk = min(k, n)
            batch_bytes = nb * n * 4  # the [batch, N] score matrix (fp32 upper bound)
            g32 = g16 = None
            ref_ids = None
            if fits(n * d * 4 + n * d * 2 + batch_bytes):
                g32 = _random_unit(n, d, device, torch.float32, seed=n)
            elif fits(n * d * 2 + batch_bytes):
                g16 = _random_unit(n, d, device, torch.float16, seed=n)
            else:
                rows.append({"n": n, "skipped": f"{n * d * 2 / 1e9:.1f} GB (fp16) does not fit the device's free memory"})
                continue
            for dtype in (torch.float32, torch.float16):
                name = str(dtype).replace("torch.", "")
                if dtype == torch.float16 and g16 is None:
                    g16 = g32.half()
                    del g32
                    g32 = None
                    _free_device_memory(device)
                g = g32 if dtype == torch.float32 else g16
                if g is None:
                    rows.append({"n": n, "dtype": name, "skipped": "fp32 gallery does not fit the device's free memory"})
                    continue
                qv = q32[0].to(dtype)
                qb = q32.to(dtype)
                fns = {
                    "scan": lambda g=g: g.sum(),
                    "matmul": lambda g=g, qv=qv: g @ qv,
                    "search": lambda g=g, qv=qv, kk=kk: torch.topk(g @ qv, kk).indices.cpu(),
                }
                t = time_round_robin(fns, repeats=plan.search_repeats, warmup=2, device=device,
                                     min_seconds=plan.search_min_seconds)
                nbytes = n * d * g.element_size()
                floor = nbytes / bw * 1e3
                row = {"n": n, "dim": d, "dtype": name, "bytes": nbytes, "floor_ms": floor,
                       "search_ms": t["search"].median_ms, "search_ms_min": t["search"].min_ms,
                       "matmul_ms": t["matmul"].median_ms, "scan_this_gallery_ms": t["scan"].median_ms,
                       "search_vs_floor": t["search"].median_ms / floor, "matmul_vs_floor": t["matmul"].median_ms / floor,
                       "search_vs_scan": t["search"].median_ms / t["scan"].median_ms,
                       "repeats": t["search"].repeats, "device": str(g.device)}
                with torch.no_grad():
                    ids1 = torch.topk(g @ qv, kk).indices.cpu()
                    if fits(batch_bytes):
                        tb = time_call(lambda g=g, qb=qb, kk=kk: torch.topk(qb @ g.t(), kk, dim=1).indices.cpu(),
                                       repeats=max(3, plan.search_repeats // 2), warmup=1, device=device,
                                       min_seconds=plan.search_min_seconds)
                        idsb = torch.topk(qb @ g.t(), kk, dim=1).indices.cpu()
                        row.update(batch=nb, batch_ms=tb.median_ms, batch_ms_per_query=tb.median_ms / nb,
                                   batch_per_query_vs_floor=tb.median_ms / nb / floor,
                                   batch_row0_same_ids=bool(torch.equal(idsb[0], ids1)))
                if dtype == torch.float32:
                    ref_ids = ids1
                elif ref_ids is not None:
                    row["recall_at_k_vs_fp32"] = len(set(ids1.tolist()) & set(ref_ids.tolist())) / kk
                rows.append(row)
                _log(f"  search N={n:>11,} {name:7s} {row['search_ms']:8.3f} ms  floor {floor:8.3f} ms  "
                     f"x{row['search_vs_floor']:.2f}  (matmul x{row['matmul_vs_floor']:.2f}, scan of this gallery "
                     f"{row['scan_this_gallery_ms']:.3f} ms)")
            del g32, g16
            _free_device_memory(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"floor": {"read": read, "copy": copy, "best_read_gbps": read["best_gbps"]}, "topk": k, "rows": rows,
            "what": "torch.topk(G @ q) with the indices fetched to the host; floor = bytes of G / best read-only "
                    "scan bandwidth (torch.sum over a large device array); TF32 off"}


# ----------------------------------------------------------------------------------------------------------
# index: decode-only, encode-only, full pipeline


def index_part(device, plan: Plan, model_size: str, work: Path) -> dict:
    import torch

    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.encode import autocast_context
    from hybridtower.index import IndexOptions, build_index
    from hybridtower.index.encoding import make_loader
    from hybridtower.index.identity import load_checkpoint

    preset = f"pig-{model_size}"
    n = plan.index_videos
    t0 = time.perf_counter()
    synth = work / "index-synth"
    generate(synth, SynthConfig(videos=max(n, 3), images=0, seed=0, workers=plan.workers or 0), overwrite=True,
             progress=False)  # the generator makes at least 3 (one per split)
    synth_s = time.perf_counter() - t0
    folder = synth / "videos"
    paths = sorted(str(p) for p in folder.iterdir())
    n = len(paths)
    ckpt = work / f"{preset}.safetensors"
    torch.manual_seed(0)
    hub.save_model(hub.create_model(preset).eval(), ckpt)
    model, _ = load_checkpoint(ckpt, device=str(device))
    workers = plan.workers
    batch = plan.index_batch
    size = int(model.preprocess_config()["image_size"])
    frame_bytes = model.cfg.video.num_frames * 3 * size * size * 4
    shm = _shm_free_bytes()
    # each worker prefetches 2 batches through shared memory: stay within half of /dev/shm
    while workers > 1 and shm is not None and workers * 2 * batch * frame_bytes > 0.5 * shm:
        workers -= 1
    while batch > 4 and shm is not None and max(workers, 1) * 2 * batch * frame_bytes > 0.5 * shm:
        batch //= 2
    options = IndexOptions(batch_size=batch, num_workers=workers, device=str(device), precision=plan.precision,
                           progress=False, overwrite=True)

    if device.type == "cuda":  # warm-up: CUDA context and kernels, DataLoader start, page cache
        warm = work / "index-warm"
        warm.mkdir(exist_ok=True)
        for p in paths[: min(n, 2 * batch)]:
            _link(Path(p), warm / Path(p).name)
        build_index([warm], work / "index-warm-out", ckpt, options)
        shutil.rmtree(work / "index-warm-out", ignore_errors=True)

    def encode(batches, on_device: bool) -> float:
        count = sum(len(b) for b in batches)
        _sync(device)
        t = time.perf_counter()
        with torch.no_grad(), autocast_context(device, plan.precision):
            for b in batches:
                model.encode_video(b if on_device else b.to(device, non_blocking=True)).float()
        _sync(device)
        return count / (time.perf_counter() - t)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    per = {"decode": [], "encode_host": [], "encode_device": [], "index": []}
    for _ in range(plan.index_rounds):
        held, held_n, count = [], 0, 0
        t = time.perf_counter()
        for b in make_loader(model, paths, options):
            if b["frames"] is None:
                continue
            count += len(b["frames"])
            if held_n < plan.index_hold_videos:
                held.append(b["frames"])
                held_n += len(b["frames"])
        dt = time.perf_counter() - t
        if count != n:
            raise RuntimeError(f"decode-only read {count} of {n} synthetic videos")
        per["decode"].append(count / dt)
        encode(held[:1], False)  # warm (shapes of a full batch)
        per["encode_host"].append(encode(held, False))
        on_dev = [b.to(device) for b in held]
        per["encode_device"].append(encode(on_dev, True))
        del on_dev, held
        out = work / "index-out"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        s = build_index([folder], out, ckpt, options)
        dt = time.perf_counter() - t
        if s.encoded != n:
            raise RuntimeError(f"the index run encoded {s.encoded} of {n} videos: {s.skipped[:3]}")
        per["index"].append(n / dt)
        shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    bound = min(med["decode"], med["encode_host"])
    out = {"preset": preset, "videos": n, "precision": plan.precision, "batch_size": batch, "decode_workers": workers,
           "frames_per_video": model.cfg.video.num_frames, "image_size": size,
           "shm_free_gb": round(shm / 1e9, 1) if shm is not None else None, "rounds": plan.index_rounds,
           "synth_seconds": round(synth_s, 1), "encode_held_videos": min(plan.index_hold_videos, n),
           **{f"{k}_videos_per_s": round(v, 1) for k, v in med.items()},
           "per_round": {k: [round(x, 1) for x in v] for k, v in per.items()},
           "index_over_min_bound": round(med["index"] / bound, 3),
           "mb_per_video": round(sum(os.path.getsize(p) for p in paths) / n / 1e6, 3),
           "what": "decode: the index run's DataLoader alone; encode_host: model.encode_video under the index's "
                   "autocast, frames held in host memory and copied per batch (what the pipeline does); "
                   "encode_device: the same frames already on the device; index: build_index end to end "
                   "(scan, hash, decode in workers overlapped with encoding, commit)"}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _shm_free_bytes() -> int | None:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------------------
# efficiency: the package's benchmark on this device


def efficiency_part(device, plan: Plan, model_size: str, out_path: Path | None) -> dict:
    from hybridtower.analysis.efficiency import EfficiencyConfig, format_markdown, run_efficiency

    cfg = EfficiencyConfig(model_size=model_size, device=str(device), sizes=list(plan.eff_sizes),
                           repeats=plan.eff_repeats, offline_repeats=plan.eff_offline_repeats,
                           offline_batch=plan.eff_offline_batch, min_seconds=plan.eff_min_seconds,
                           max_gallery_gb=plan.eff_max_gallery_gb, bandwidth_mb=plan.eff_bandwidth_mb,
                           faiss=device.type == "cpu", m_values=list(plan.eff_m_values))
    report = run_efficiency(cfg, progress=False)
    files = []
    if out_path is not None:
        stem = out_path.with_name(out_path.stem + "-efficiency")
        _write_json(stem.with_suffix(".json"), report)
        stem.with_suffix(".md").write_text(format_markdown(report))
        files = [stem.with_suffix(".json").name, stem.with_suffix(".md").name]
    rows = []
    for r in report["online"]["rows"]:
        x = r["xpool"]
        row = {"n": r["n"], "xpool_ms": x.get("total_ms"), "xpool_extrapolated": bool(x.get("extrapolated")),
               "floor_ms": r["floor_ms"]["pig"]}
        if "pig" in r:
            row.update(pig_ms=r["pig"]["total_ms"], two_tower_ms=r["two_tower"]["total_ms"],
                       ratio_pig_two_tower=r["ratio_pig_two_tower"], ratio_xpool_pig=r.get("ratio_xpool_pig"),
                       pig_search_ms=r["pig"]["search_torch_ms"], pig_search_vs_floor=r["pig"]["search_torch_vs_floor"])
        else:
            row["skipped"] = r.get("skipped")
        rows.append(row)
    per_m = []
    mv = report.get("multi_vector")
    if mv:
        for o in mv["offline"]:
            m = o["m"]
            per_m.append({"m": m, "offline_ms": o["ms"], "offline_gflops": o["gflops"], "bytes_fp32": o["storage_bytes_fp32"],
                          "search_ms": {str(r["n"]): r["per_m"][str(m)].get("search_ms") for r in mv["rows"]},
                          "extrapolated": {str(r["n"]): bool(r["per_m"][str(m)].get("extrapolated")) for r in mv["rows"]}})
    used = report["devices_used"]
    ok = all(u.startswith(device.type) for u in used)
    return {"command": report["command"], "read_gbps": report["bandwidth"]["best_gbps"],
            "copy_gbps": report["bandwidth"]["copy"]["best_gbps"], "text_ms": report["online"]["text_encoder"]["pig"]["median_ms"],
            "rows": rows, "per_m": per_m, "devices_used": used,
            "device_check": "ok" if ok else f"FAILED: tensors on {used}, asked for {device.type}",
            "files": files, "seconds": round(report["seconds"], 1)}


# ----------------------------------------------------------------------------------------------------------
# train and eval (the package's own step and evaluation)


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
    _free_device_memory(device)
    return out


def train_part(device, plan: Plan, model_size: str, frameworks: list[str], grad_ckpt: bool) -> list[dict]:
    import torch

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        out = []
        for fw in frameworks:
            out.append(train_steps(f"{fw}-{model_size}", device, plan.batch, plan.steps, plan.warmup, plan.precision,
                                   grad_ckpt))
            _log("  " + json.dumps(out[-1]))
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def eval_part(device, plan: Plan, preset: str, work: Path) -> dict:
    import torch

    from hybridtower import hub
    from hybridtower.data import load_split
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.eval import evaluate

    root = work / "eval-synth"
    t0 = time.perf_counter()
    generate(root, SynthConfig(videos=plan.eval_videos, images=0, seed=0, test_fraction=0.9, val_fraction=0.05,
                               workers=max(0, plan.workers)), overwrite=True, progress=False)
    gen_s = time.perf_counter() - t0
    split = load_split(f"msrvtt:{root}", "test-3k")
    torch.manual_seed(0)
    model = hub.create_model(preset).to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    result = evaluate(model, split, batch_size=32, num_workers=plan.workers, precision=plan.precision, progress=False)
    _sync(device)
    secs = time.perf_counter() - t0
    out = {"preset": preset, "videos": result["num_videos"], "captions": result["num_captions"],
           "seconds": round(secs, 2), "videos_per_second_end_to_end": round(result["num_videos"] / secs, 1),
           "t2v_R@1_random_weights": result["t2v"]["R@1"], "synth_seconds": round(gen_s, 1)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model
    _free_device_memory(device)
    return out


# ----------------------------------------------------------------------------------------------------------
# the run


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _summary_line(part: str, result) -> str:
    if part == "search":
        best = [r for r in result["rows"] if "search_ms" in r]
        big = max(best, key=lambda r: r["n"]) if best else None
        head = f"read floor {result['floor']['read']['best_gbps']:.0f} GB/s, copy {result['floor']['copy']['best_gbps']:.0f} GB/s"
        return head + (f"; N={big['n']:,} {big['dtype']}: {big['search_ms']:.2f} ms = {big['search_vs_floor']:.2f}x floor" if big else "")
    if part == "index":
        return (f"{result['preset']} {result['precision']}: decode {result['decode_videos_per_s']:.1f}, encode "
                f"{result['encode_host_videos_per_s']:.1f} (on device {result['encode_device_videos_per_s']:.1f}), index "
                f"{result['index_videos_per_s']:.1f} videos/s = {result['index_over_min_bound']:.2f} of the lower bound")
    if part == "efficiency":
        last = result["rows"][-1]
        ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        return (f"devices {result['devices_used']} ({result['device_check']}); N={last['n']:,}: PIG "
                f"{ms(last.get('pig_ms'))} ms, Two-Tower {ms(last.get('two_tower_ms'))} ms, X-Pool "
                f"{ms(last.get('xpool_ms'))} ms{' (extrapolated)' if last.get('xpool_extrapolated') else ''}")
    if part == "train":
        return "; ".join(f"{r['preset']} {r['step_seconds_mean']} s/step, {r['videos_per_second']} videos/s" for r in result)
    if part == "eval":
        return f"{result['videos']} videos in {result['seconds']} s ({result['videos_per_second_end_to_end']} videos/s)"
    return ""


class _Stop(Exception):
    pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a rehearsal with small sizes)")
    p.add_argument("--model-size", default="vit-b-32", choices=["vit-b-32", "vit-b-16", "tiny"])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (run in that order)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip a part whose expected time (ESTIMATE_S) no longer fits in this many seconds from the start")
    p.add_argument("--frameworks", nargs="+", default=["pig", "meanp"], help="train part: frameworks (default pig meanp)")
    p.add_argument("--batch", type=int, default=None, help="train part: per-GPU batch (default 32; CPU: 2)")
    p.add_argument("--steps", type=int, default=None, help="train part: timed steps (default 10; CPU: 1)")
    p.add_argument("--warmup", type=int, default=None, help="train part: untimed first steps (default 3; CPU: 1)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"], help="default bf16 on CUDA")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--eval-videos", type=int, default=None, help="eval part: synthetic videos (default 300; CPU: 12)")
    p.add_argument("--workers", type=int, default=None, help="decode workers (default min(14, CPUs - 2); CPU: 0)")
    p.add_argument("--index-videos", type=int, default=None, help="index part: synthetic clips (default 2000; CPU: 12)")
    p.add_argument("--index-batch", type=int, default=None, help="index part: batch size (default 64; CPU: 4)")
    p.add_argument("--index-rounds", type=int, default=None, help="index part: rounds, median (default 2; CPU: 1)")
    p.add_argument("--eff-sizes", default=None, help="efficiency part: gallery sizes (default 1k,10k,100k,1M,10M)")
    p.add_argument("--eff-m-values", default=None, help="efficiency part: PIG-M values of M (default 1,2,4,8)")
    p.add_argument("--search-sizes", default=None, help="search part: gallery sizes (default 1k,100k,1M,10M,30M)")
    p.add_argument("--work-dir", help="where synthetic clips and the checkpoint go (default: a temporary folder)")
    p.add_argument("--out", help="write the JSON here (again after every part)")
    args = p.parse_args(argv)

    import torch

    from hybridtower.cli.commands.bench import _m_values, _sizes

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible (use --device cpu --model-size tiny)", file=sys.stderr)
        return 2
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        print(f"error: unknown part(s) {bad}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    plan = Plan.for_device(device)
    for name, value in (("batch", args.batch), ("steps", args.steps), ("warmup", args.warmup),
                        ("precision", args.precision), ("eval_videos", args.eval_videos), ("workers", args.workers),
                        ("index_videos", args.index_videos), ("index_batch", args.index_batch),
                        ("index_rounds", args.index_rounds)):
        if value is not None:
            setattr(plan, name, value)
    if args.eff_sizes:
        plan.eff_sizes = _sizes(args.eff_sizes)
    if args.search_sizes:
        plan.search_sizes = _sizes(args.search_sizes)
    if args.eff_m_values:
        plan.eff_m_values = _m_values(args.eff_m_values)
    if device.type == "cpu":  # a rehearsal: one thread does not stall on a shared machine's busy cores
        torch.set_num_threads(1)
    out_path = Path(args.out) if args.out else None
    started = time.time()
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/gpu_check.py"] + (argv if argv is not None else sys.argv[1:])),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": args.budget_s, "plan": asdict(plan),
        "estimate_s": {k: ESTIMATE_S[k] for k in parts}, "parts": {}, "seconds_per_part": {}, "skipped": {},
        "errors": {}, "interrupted": None,
    }

    def save():
        report["seconds"] = round(time.time() - started, 1)
        if out_path is not None:
            _write_json(out_path, report)

    def on_term(signum, frame):  # `timeout` sends SIGTERM: record where it stopped, keep what finished
        raise _Stop(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, on_term)
    tmp = None
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gpu-check-")
        work = Path(tmp.name)
    save()
    try:
        for part in parts:
            elapsed = time.time() - started
            if args.budget_s is not None and elapsed + ESTIMATE_S[part] > args.budget_s:
                report["skipped"][part] = (f"budget: {elapsed:.0f} s used, {ESTIMATE_S[part]} s expected, "
                                           f"{args.budget_s:.0f} s allowed")
                _log(f"[{part}] skipped: {report['skipped'][part]}")
                save()
                continue
            _log(f"[{part}] started at {elapsed:.0f} s (expected {ESTIMATE_S[part]} s on one H100/H200)")
            t0 = time.time()
            try:
                if part == "search":
                    result = search_part(device, plan)
                elif part == "index":
                    result = index_part(device, plan, args.model_size, work)
                elif part == "efficiency":
                    result = efficiency_part(device, plan, args.model_size, out_path)
                    if result["device_check"] != "ok":
                        report["errors"]["efficiency"] = result["device_check"]
                elif part == "train":
                    result = train_part(device, plan, args.model_size, args.frameworks, args.grad_checkpointing)
                else:
                    result = eval_part(device, plan, f"{args.frameworks[0]}-{args.model_size}", work)
                report["parts"][part] = result
                _log(f"[{part}] done in {time.time() - t0:.1f} s: {_summary_line(part, result)}")
            except _Stop:
                raise
            except Exception as exc:  # one part failing must not cost the others' figures
                report["errors"][part] = f"{type(exc).__name__}: {exc}"
                report.setdefault("tracebacks", {})[part] = traceback.format_exc(limit=8)[-4000:]
                _log(f"[{part}] FAILED after {time.time() - t0:.1f} s: {type(exc).__name__}: {exc}")
            finally:
                report["seconds_per_part"][part] = round(time.time() - t0, 1)
                _free_device_memory(device)
                save()
    except (_Stop, KeyboardInterrupt) as exc:
        report["interrupted"] = f"stopped during a part ({exc or 'interrupt'}); the finished parts are complete"
        save()
        _log(f"interrupted: {report['interrupted']}")
        return 124
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if tmp is not None:
            tmp.cleanup()
    save()
    print(json.dumps(report, indent=2, default=str))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
