"""The efficiency benchmark: offline cost per video, online cost per query, and the memory-bandwidth floor.

One run measures, side by side and on the same machine:

* **Offline, per video** (what each framework computes before any query arrives): counted FLOPs
  (:mod:`hybridtower.analysis.flops`), measured time and stored bytes, for Two-Tower meanP, CLIP-ViP,
  X-Pool (its precomputable part: frame features, LayerNormed) and PIG (encoder + ITS + generator +
  fusion, and each part separately).
* **Online, per query**, for galleries of N videos: text encoding plus an exact top-k search.
  PIG and Two-Tower: one matrix product over N stored D-vectors (our torch path, FAISS ``IndexFlatIP``
  with ``distance_compute_blas_threshold`` chosen by measurement, and the Searcher's own exact search,
  :class:`hybridtower.index.exact.ExactIndex` with the kernel it calibrates at that N). X-Pool: the fusion
  for every (query, video) pair (:class:`~hybridtower.analysis.xpool_fast.FoldedXPool`, its cheapest
  exact form), chunked. PIG and Two-Tower are timed round-robin, so machine noise hits both alike.
* **The floor**: bytes of stored vectors a query must read, divided by the memory bandwidth of a
  read-only scan measured in the same run (:mod:`hybridtower.analysis.bandwidth`; the copy figure,
  read + written bytes per second, is reported beside it).
* **PIG-M, cost per M** (``m_values``, default 1, 2, 4, 8): offline FLOPs/time and stored bytes per
  video, and the search over ``M x N`` stored rows + max per video at each N
  (:mod:`.efficiency_multi`).

Everything runs on ``cfg.device``: models, stored galleries (drawn there by a generator on that device),
queries and searches; ``devices_used`` in the report lists where every tensor a timed search touched
lived, so a GPU run shows that nothing fell back to the host. (FAISS and the Searcher's exact kernels are
CPU code and are measured on CPU runs only.)

Model weights are random (``create_model`` without pretrained weights): neither FLOPs nor time depend
on their values. Stored galleries are random unit vectors for the same reason. A gallery that would not
fit (``max_gallery_gb``, and never more than half of the free memory) is not allocated: its latency is
extrapolated linearly from the largest measured N and marked ``extrapolated`` everywhere it appears.

Pieces: :mod:`.efficiency_config` (the config), :mod:`.timing`, :mod:`.bandwidth`, :mod:`.machine`,
:mod:`.efficiency_multi` (PIG-M), :mod:`.efficiency_report` (Markdown and plot); this module runs the
measurements.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .bandwidth import measure_bandwidth
from .efficiency_config import FRAMEWORKS, LABELS, PUBLISHED_VIT_B_32_GFLOPS, EfficiencyConfig
from .efficiency_multi import build_multi_models, check_m_values, multi_vector_costs
from .efficiency_report import format_markdown, plot_latency
from .flops import FlopCount, count_flops
from .machine import available_memory_bytes, machine_info
from .timing import Timing, time_call, time_round_robin

__all__ = [
    "EfficiencyConfig",
    "Timing",
    "time_call",
    "time_round_robin",
    "measure_bandwidth",
    "pig_part_costs",
    "multi_vector_costs",
    "run_efficiency",
    "format_markdown",
    "plot_latency",
]


# ----------------------------------------------------------------------------------------------
# offline


def _cost(flops: FlopCount, timing: Timing | None, per: int = 1) -> dict:
    return {
        "gflops": flops.total / 1e9,
        "ms": timing.median_ms / per if timing else None,
        "ms_min": timing.min_ms / per if timing else None,
        "flops_by_op": flops.by_op,
    }


def pig_part_costs(model, frames, k: int | None = None, repeats: int = 3, warmup: int = 1,
                   min_seconds: float = 0.0) -> dict:
    """PIG's offline pipeline split into encoder / ITS / generator / fusion, FLOPs and time per video.

    ``frames`` is one batch [B, T, 3, S, S]; FLOPs are counted on the first video, times divided by B.
    ``k`` overrides the ITS top-k as in ``model.video_features(frames, k=k)``. ``repeats=0`` counts
    FLOPs only (times are None).
    """
    import torch
    import torch.nn.functional as F

    device = frames.device
    b = frames.shape[0]
    k = model.cfg.its.k if k is None else k
    layer = model.cfg.its.layer if k != 0 else None

    def parts(fr):
        enc = lambda: model.video_encoder(fr, attn_layer=layer)  # noqa: E731
        with torch.no_grad():
            vt = enc()
            pos = model.its_positions(vt, k)
            t_p = model.generator(model.generator_inputs(vt, pos))
        return {
            "encoder": enc,
            "its": lambda: model.its_positions(vt, k),
            "generator": lambda: model.generator(model.generator_inputs(vt, pos)),
            "fusion": lambda: F.normalize(model.fusion(t_p, model.fusion_tokens(vt)), dim=-1),
        }, pos.shape[1]

    one, selected = parts(frames[:1])
    full = parts(frames)[0] if repeats > 0 else None
    out = {"k": k, "selected": selected}
    for name in one:
        fl = count_flops(one[name])
        tm = time_call(full[name], repeats=repeats, warmup=warmup, device=device, min_seconds=min_seconds) if full else None
        out[name] = _cost(fl, tm, per=b)
    total_fl = count_flops(lambda: model.video_features(frames[:1], k=k))
    total_tm = (time_call(lambda: model.video_features(frames, k=k), repeats=repeats, warmup=warmup, device=device)
                if full else None)
    out["total"] = _cost(total_fl, total_tm, per=b)
    return out


def _offline(models: dict, cfg: EfficiencyConfig, device, bar) -> dict:
    import torch

    from .xpool_fast import FoldedXPool

    gen = torch.Generator().manual_seed(cfg.seed)
    out = {}
    for fw, model in models.items():
        pre = model.preprocess_config()
        t, s = int(pre["num_frames"]), int(pre["image_size"])
        frames = torch.randn(cfg.offline_batch, t, 3, s, s, generator=gen).to(device)
        d = model.embed_dim
        row: dict = {"framework": fw, "label": LABELS[fw], "frames": t, "image_size": s, "embed_dim": d}
        if fw == "xpool":
            fx = FoldedXPool(model.fusion)
            fn_one = lambda m=model, f=frames, x=fx: x.store(m.encode_video(f[:1]))  # noqa: E731
            fn = lambda m=model, f=frames, x=fx: x.store(m.encode_video(f))  # noqa: E731
            row["precomputed"] = "per-frame features, LayerNormed (T x D)"
            row["storage_floats"] = t * d
        else:
            fn_one = lambda m=model, f=frames: m.encode_video(f[:1])  # noqa: E731
            fn = lambda m=model, f=frames: m.encode_video(f)  # noqa: E731
            row["precomputed"] = {
                "pig": "fused video vector v (encoder + ITS + generator + fusion)",
                "meanp": "mean of frame features",
                "clipvip": "video-CLS feature",
            }[fw]
            row["storage_floats"] = d
        row["storage_bytes_fp32"] = 4 * row["storage_floats"]
        row["storage_bytes_fp16"] = 2 * row["storage_floats"]
        bar.set_postfix_str(f"offline {fw}")
        fl = count_flops(fn_one)
        tm = time_call(fn, repeats=cfg.offline_repeats, warmup=cfg.warmup, device=device)
        row.update(_cost(fl, tm, per=cfg.offline_batch))
        if fw == "pig":
            row["parts"] = pig_part_costs(model, frames, repeats=cfg.offline_repeats, warmup=cfg.warmup,
                                          min_seconds=min(cfg.min_seconds, 0.5))
        out[fw] = row
        bar.update(1)
    return out


def _image_check(models: dict, cfg: EfficiencyConfig, device) -> dict:
    import torch

    visual = models["meanp"].video_encoder.visual
    s = int(models["meanp"].preprocess_config()["image_size"])
    fl = count_flops(lambda: visual(torch.zeros(1, 3, s, s, device=device)))
    out = {"arch": models["meanp"].cfg.backbone.arch, "image_size": s, "gflops": fl.total / 1e9, "gmacs": fl.total / 2e9}
    if cfg.model_size == "vit-b-32":
        out["published_gflops"] = PUBLISHED_VIT_B_32_GFLOPS
        out["relative_difference"] = fl.total / 1e9 / PUBLISHED_VIT_B_32_GFLOPS - 1.0
    return out


# ----------------------------------------------------------------------------------------------
# online


def _fits(nbytes: int, cfg: EfficiencyConfig, device) -> bool:
    if nbytes > cfg.max_gallery_gb * 1e9:
        return False
    free = available_memory_bytes(device)
    return free is None or nbytes <= 0.5 * free


def _generator(device, seed: int):
    """A random generator on ``device``: stored arrays are drawn where they live (drawing 10M x 512 floats
    on the host and copying them to a GPU took longer than every timed search together)."""
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def _random_unit(n: int, d: int, device, seed: int, chunk: int = 65536):
    import torch

    g = _generator(device, seed)
    out = torch.empty(n, d, dtype=torch.float32, device=device)
    for s in range(0, n, chunk):
        x = torch.randn(min(chunk, n - s), d, generator=g, device=device)
        out[s : s + x.shape[0]] = torch.nn.functional.normalize(x, dim=-1)
    return out


def _faiss_index(gallery_cpu, dim: int):
    import faiss
    import numpy as np
    import torch

    index = faiss.IndexFlatIP(dim)
    step = 65536
    for s in range(0, gallery_cpu.shape[0], step):
        index.add(np.ascontiguousarray(gallery_cpu[s : s + step].numpy()))
    view = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * dim).reshape(index.ntotal, dim)
    return index, torch.from_numpy(view)  # the torch path reads FAISS's own storage: one copy in memory


def _faiss_search_timings(index, query, k: int, cfg: EfficiencyConfig) -> dict:
    import faiss

    default = int(faiss.cvar.distance_compute_blas_threshold)
    candidates = {f"default ({default})": default, "1 (BLAS for one query)": 1}
    out = {}
    try:
        for name, th in candidates.items():
            faiss.cvar.distance_compute_blas_threshold = th
            t = time_call(lambda: index.search(query, k), repeats=cfg.repeats, warmup=cfg.warmup,
                          min_seconds=cfg.min_seconds)
            out[name] = {"threshold": th, **t.to_dict()}
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
    best = min(out, key=lambda n: out[n]["median_ms"])
    return {"thresholds": out, "chosen": best, "median_ms": out[best]["median_ms"], "chosen_threshold": out[best]["threshold"]}


def _online(models: dict, cfg: EfficiencyConfig, device, bandwidth: dict, bar) -> dict:
    import torch

    from .xpool_fast import FoldedXPool

    pig, tt, xp = models["pig"], models["meanp"], models["xpool"]
    d = pig.embed_dim
    t_frames = int(xp.preprocess_config()["num_frames"])
    k = cfg.topk
    fx = FoldedXPool(xp.fusion)
    q = [cfg.query]
    on_cuda = str(device).startswith("cuda")
    chunk = cfg.xpool_chunk_for(device)
    # where every tensor a timed search touched lived: on a GPU run each entry must be that GPU
    devices_used = {str(next(m.parameters()).device) for m in (pig, tt, xp)} | {str(fx.m.device)}
    use_faiss = cfg.faiss and not on_cuda
    if use_faiss:
        try:
            import faiss  # noqa: F401
        except ImportError:
            use_faiss = False

    def encode(model):
        return lambda: model.encode_text(model.tokenize(q))

    def fetch(idx):  # a real search hands its results to the host
        return idx.cpu() if on_cuda else idx

    text_flops = {name: count_flops(encode(m)) for name, m in (("pig", pig), ("two_tower", tt), ("xpool", xp))}
    text_time = time_round_robin({n: encode(m) for n, m in (("pig", pig), ("two_tower", tt), ("xpool", xp))},
                                 repeats=cfg.repeats, warmup=cfg.warmup, device=device, min_seconds=cfg.min_seconds)
    with torch.no_grad():
        tq = {n: encode(m)() for n, m in (("pig", pig), ("two_tower", tt), ("xpool", xp))}
        xq = fx.prepare_query(tq["xpool"])
    devices_used |= {str(v.device) for v in tq.values()} | {str(xq[0].device)}
    xq_flops = count_flops(lambda: fx.prepare_query(tq["xpool"]))
    chunk_flops: dict[int, FlopCount] = {}

    def xpool_flops(n: int) -> FlopCount:
        total = xq_flops
        full, rem = divmod(n, chunk)
        for size, times in ((chunk, full), (rem, 1)):
            if size and times:
                if size not in chunk_flops:
                    probe = torch.zeros(size, t_frames, d, device=device)
                    chunk_flops[size] = count_flops(lambda: fx.score_chunk(xq, probe))
                    del probe
                total = total + chunk_flops[size].scaled(times)
        return total

    bw = bandwidth["best_gbps"] * 1e9
    rows = []
    xpool_measured: list[tuple[int, float]] = []
    for n in cfg.sizes:
        bar.set_postfix_str(f"online N={n:,}")
        row: dict = {"n": n}
        gal_bytes = n * d * 4
        x_bytes = n * t_frames * d * 4
        row["bytes_scanned"] = {"pig": gal_bytes, "two_tower": gal_bytes, "xpool": x_bytes}
        row["floor_ms"] = {"pig": gal_bytes / bw * 1e3, "two_tower": gal_bytes / bw * 1e3, "xpool": x_bytes / bw * 1e3}
        # ---- PIG and Two-Tower: text encode + one matrix product + top-k
        if _fits(gal_bytes, cfg, device):
            index = None
            if use_faiss:
                index, gallery = _faiss_index(_random_unit(n, d, "cpu", cfg.seed + n), d)
            else:
                gallery = _random_unit(n, d, device, cfg.seed + n)
            devices_used.add(str(gallery.device))
            kk = min(k, n)

            def search(tfeat, g=gallery, kk=kk):
                return fetch(torch.topk((g @ tfeat.t()).squeeze(1), kk).indices)

            e2e = time_round_robin(
                {
                    "pig": lambda: search(pig.encode_text(pig.tokenize(q))),
                    "two_tower": lambda: search(tt.encode_text(tt.tokenize(q))),
                },
                repeats=cfg.repeats, warmup=cfg.warmup, device=device, min_seconds=cfg.min_seconds,
            )
            s_torch = time_call(lambda: search(tq["pig"]), repeats=cfg.repeats, warmup=cfg.warmup, device=device,
                                min_seconds=cfg.min_seconds)
            exact = None
            if not on_cuda:  # the Searcher's own path: its exact kernel, calibrated on this gallery
                exact, s_exact = _searcher_timing(gallery, tq["pig"], kk, cfg, row)
            mm_flops = count_flops(lambda: gallery @ tq["pig"].t())
            for name in ("pig", "two_tower"):
                row[name] = {
                    "total_ms": e2e[name].median_ms,
                    "total_ms_min": e2e[name].min_ms,
                    "text_ms": text_time[name].median_ms,
                    "gflops": (text_flops[name] + mm_flops).total / 1e9,
                    "search_gflops": mm_flops.total / 1e9,
                    "extrapolated": False,
                }
            row["pig"]["search_torch_ms"] = s_torch.median_ms
            row["pig"]["search_torch_vs_floor"] = s_torch.median_ms / row["floor_ms"]["pig"]
            if exact is not None:
                row["pig"]["search_searcher_ms"] = s_exact.median_ms
                row["pig"]["search_searcher_vs_floor"] = s_exact.median_ms / row["floor_ms"]["pig"]
                row["pig"]["searcher_kernel"] = exact.kernel
                row["searcher_calibration"] = exact.calibration
            if index is not None:
                fs = _faiss_search_timings(index, tq["pig"].cpu().numpy(), kk, cfg)
                row["faiss"] = fs
                row["pig"]["search_faiss_ms"] = fs["median_ms"]
                row["pig"]["search_faiss_vs_floor"] = fs["median_ms"] / row["floor_ms"]["pig"]
            del gallery, index, exact
        else:
            row["skipped"] = f"PIG/Two-Tower gallery of {gal_bytes / 1e9:.1f} GB does not fit the memory limit"
        # ---- X-Pool: text encode + fusion with every video (chunked) + top-k
        xfl = xpool_flops(n)
        xrow = {"gflops": (text_flops["xpool"] + xfl).total / 1e9, "search_gflops": xfl.total / 1e9,
                "text_ms": text_time["xpool"].median_ms}
        if _fits(x_bytes, cfg, device):
            store = _xpool_store(fx, n, t_frames, d, device, cfg)
            devices_used.add(str(store.device))
            kk = min(k, n)

            def xsearch(st=store, kk=kk):
                tx = xp.encode_text(xp.tokenize(q))
                return fetch(torch.topk(fx.scores(tx, st, chunk=chunk)[0], kk).indices)

            def xsearch_only(st=store, kk=kk):
                return fetch(torch.topk(fx.scores(tq["xpool"], st, chunk=chunk)[0], kk).indices)

            reps = max(1, cfg.repeats if n * t_frames * d < 2e9 else min(cfg.repeats, 3))
            tm = time_call(xsearch, repeats=reps, warmup=cfg.warmup, device=device, min_seconds=cfg.min_seconds)
            ts = time_call(xsearch_only, repeats=reps, warmup=cfg.warmup, device=device, min_seconds=cfg.min_seconds)
            xrow.update(total_ms=tm.median_ms, total_ms_min=tm.min_ms, search_ms=ts.median_ms, extrapolated=False)
            xpool_measured.append((n, ts.median_ms))
            del store
        elif xpool_measured:
            n0, search0 = xpool_measured[-1]
            xrow.update(total_ms=text_time["xpool"].median_ms + search0 * n / n0, search_ms=search0 * n / n0,
                        extrapolated=True,
                        extrapolated_from=n0,
                        note=f"store of {x_bytes / 1e9:.1f} GB over the memory limit: search time scaled "
                             f"linearly from N={n0:,}")
        else:
            xrow.update(total_ms=None, extrapolated=False, note="store does not fit and nothing to extrapolate from")
        row["xpool"] = xrow
        if "pig" in row:
            row["ratio_pig_two_tower"] = row["pig"]["total_ms"] / row["two_tower"]["total_ms"]
            row["ratio_pig_two_tower_min"] = row["pig"]["total_ms_min"] / row["two_tower"]["total_ms_min"]
            if xrow.get("total_ms") is not None:
                row["ratio_xpool_pig"] = xrow["total_ms"] / row["pig"]["total_ms"]
            row["flops_ratio_xpool_pig"] = xrow["gflops"] / row["pig"]["gflops"]
        rows.append(row)
        bar.update(1)
    text = {n: {"gflops": text_flops[n].total / 1e9, **text_time[n].to_dict()} for n in text_flops}
    return {"text_encoder": text, "xpool_query_prep_gflops": xq_flops.total / 1e9, "rows": rows,
            "faiss_used": use_faiss, "xpool_chunk": chunk, "devices_used": sorted(devices_used)}


def _searcher_timing(gallery, query, kk: int, cfg: EfficiencyConfig, row: dict):
    """The Searcher's exact search (``ExactIndex``, kernel calibrated on this gallery), or (None, None) with a
    note in ``row`` when it cannot run here (its calibration needs FAISS)."""
    try:
        from ..index.exact import ExactIndex

        exact = ExactIndex(gallery.numpy(), "auto")
    except ImportError as exc:
        row["searcher_skipped"] = f"the Searcher's exact search could not run: {exc}"
        return None, None
    qnp = query.cpu().numpy()
    t = time_call(lambda: exact.search(qnp, kk), repeats=cfg.repeats, warmup=cfg.warmup, min_seconds=cfg.min_seconds)
    return exact, t


def _xpool_store(fx, n: int, t: int, d: int, device, cfg: EfficiencyConfig):
    import torch

    g = _generator(device, cfg.seed + 7 * n)
    store = torch.empty(n, t, d, dtype=torch.float32, device=device)
    step = max(1, 2**22 // (t * d))
    with torch.no_grad():
        for s in range(0, n, step):
            x = torch.randn(min(step, n - s), t, d, generator=g, device=device)
            store[s : s + x.shape[0]] = fx.store(x)
    return store


def _xpool_naive_check(models: dict, cfg: EfficiencyConfig, device) -> dict:
    """The folded scorer against ``XPool.score`` on a small gallery: same scores, and how much faster."""
    import torch

    from .xpool_fast import FoldedXPool

    xp = models["xpool"]
    fx = FoldedXPool(xp.fusion)
    t = int(xp.preprocess_config()["num_frames"])
    n = min(1000, cfg.sizes[0])
    chunk = cfg.xpool_chunk_for(device)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    frames = torch.randn(n, t, xp.embed_dim, generator=g).to(device)
    with torch.no_grad():
        text = xp.encode_text(xp.tokenize([cfg.query]))
        store = fx.store(frames)
        diff = (xp.score(text, frames) - fx.scores(text, store)).abs().max().item()
    naive = time_call(lambda: xp.score(text, frames), repeats=3, warmup=1, device=device)
    fast = time_call(lambda: fx.scores(text, store, chunk=chunk), repeats=3, warmup=1, device=device)
    return {"n": n, "max_abs_score_difference": diff, "model_score_ms": naive.median_ms,
            "folded_ms": fast.median_ms, "speedup": naive.median_ms / fast.median_ms}


# ----------------------------------------------------------------------------------------------
# the run


def build_models(model_size: str, device) -> dict:
    from .. import hub

    return {fw: hub.create_model(f"{fw}-{model_size}", pretrained=None).to(device).eval() for fw in FRAMEWORKS}


def run_efficiency(cfg: EfficiencyConfig, progress: bool = True, models: dict | None = None) -> dict:
    """Run the whole benchmark and return the report (a JSON-serialisable dict)."""
    import torch

    cfg.validate()
    check_m_values(cfg.model_size, cfg.m_values)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from ..core.errors import ConfigError

        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    threads_before = torch.get_num_threads()
    faiss_threads_before = None
    if cfg.threads:
        try:  # read both before setting either: they may share one OpenMP runtime
            import faiss

            faiss_threads_before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(cfg.threads)
        except ImportError:
            pass
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, device, progress, models)
    finally:
        if faiss_threads_before is not None:
            import faiss

            faiss.omp_set_num_threads(faiss_threads_before)
        torch.set_num_threads(threads_before)


def _run(cfg: EfficiencyConfig, device, progress: bool, models: dict | None) -> dict:
    from tqdm.auto import tqdm

    started = time.time()
    bar = tqdm(total=2 + len(FRAMEWORKS) + len(cfg.sizes) * (2 if cfg.m_values else 1), desc="bench efficiency",
               disable=not progress)
    bar.set_postfix_str("building models")
    models = models or build_models(cfg.model_size, device)
    bar.update(1)
    bar.set_postfix_str("memory bandwidth")
    bandwidth = measure_bandwidth(device, read_mbytes=2 * cfg.bandwidth_mb, copy_mbytes=cfg.bandwidth_mb)
    bar.update(1)
    offline = _offline(models, cfg, device, bar)
    image = _image_check(models, cfg, device)
    online = _online(models, cfg, device, bandwidth, bar)
    online["xpool_folded_check"] = _xpool_naive_check(models, cfg, device)
    multi = None
    if cfg.m_values:
        bar.set_postfix_str("PIG-M models")
        multi_models = build_multi_models(cfg.model_size, cfg.m_values, device, pig=models["pig"])
        multi = multi_vector_costs(multi_models, cfg, device, bandwidth, online["text_encoder"]["pig"]["median_ms"],
                                   fits=lambda nbytes: _fits(nbytes, cfg, device),
                                   random_unit=lambda n, d, seed: _random_unit(n, d, device, seed), bar=bar)
        del multi_models
    bar.close()
    return {
        "config": asdict(cfg),
        "command": _command_line(cfg),
        "machine": machine_info(device),
        "flop_convention": "2 FLOPs per multiply-add; matrix products and convolutions counted by "
                           "torch.utils.flop_counter (MHA fast path off, math SDPA backend); elementwise ops not counted",
        "image_check": image,
        "bandwidth": bandwidth,
        "offline": offline,
        "online": online,
        "multi_vector": multi,
        "devices_used": sorted(set(online["devices_used"]) | set(multi["devices_used"] if multi else [])),
        "parameters": {fw: m.parameter_counts() for fw, m in models.items()},
        "seconds": time.time() - started,
    }


def _command_line(cfg: EfficiencyConfig) -> str:
    default = EfficiencyConfig()
    parts = ["hybridtower bench efficiency", f"--model-size {cfg.model_size}"]
    if cfg.device != "cpu":
        parts.append(f"--device {cfg.device}")
    if cfg.sizes != default.sizes:
        parts.append("--sizes " + ",".join(str(n) for n in cfg.sizes))
    if cfg.repeats != default.repeats:
        parts.append(f"--repeats {cfg.repeats}")
    if cfg.offline_repeats != default.offline_repeats:
        parts.append(f"--offline-repeats {cfg.offline_repeats}")
    if cfg.offline_batch != default.offline_batch:
        parts.append(f"--offline-batch {cfg.offline_batch}")
    if cfg.min_seconds != default.min_seconds:
        parts.append(f"--min-seconds {cfg.min_seconds:g}")
    if cfg.threads:
        parts.append(f"--threads {cfg.threads}")
    if cfg.m_values != default.m_values:
        parts.append("--m-values " + (",".join(str(m) for m in cfg.m_values) or "none"))
    if cfg.max_gallery_gb != default.max_gallery_gb:
        parts.append(f"--max-gallery-gb {cfg.max_gallery_gb:g}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# reporting
