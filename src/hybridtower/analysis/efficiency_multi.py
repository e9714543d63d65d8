"""Cost per M of PIG-M (several pseudo-query vectors per video), beside PIG, Two-Tower and X-Pool.

PIG-M (``num_pseudo_queries = M``, presets ``pig-m4-*``) stores M fused vectors per video and scores a
query by the maximum over them. For M = 1, 2, 4, 8 (``EfficiencyConfig.m_values``) this measures:

* **offline, per video**: counted FLOPs and time of ``encode_video`` (encoder + ITS + M generator
  sequences + M fusions), the FLOPs after the encoder (the part that grows with M), stored bytes
  (``M x D`` floats);
* **online, per query**, at each gallery size N: the model's own multi-vector scoring
  (:func:`hybridtower.models.base.multi_vector_scores`: one matrix product over the ``M x N`` stored rows,
  then the max over each video's M rows) + top-k, every M timed round-robin at the same N so machine
  noise hits all alike; the floor is ``M x N x D x 4`` bytes over the read bandwidth. M = 1 is PIG itself
  (a plain ``[N, D]`` gallery, the same product PIG and Two-Tower run).

One gallery of ``M_max x N`` rows is allocated per N (on the benchmark's device) and each smaller M
searches a prefix view of it, so the M values share one allocation. A gallery over the memory limit is
not allocated: that M's time at that N is scaled linearly from its largest measured N and marked
``extrapolated``.
"""

from __future__ import annotations

from .efficiency_config import EfficiencyConfig
from .flops import count_flops
from .timing import time_round_robin

__all__ = ["check_m_values", "build_multi_models", "multi_vector_topk", "multi_vector_costs"]


def check_m_values(model_size: str, m_values: list[int]) -> None:
    """Raise ConfigError now (before minutes of measurement) if a PIG-M preset cannot be built for some M."""
    from ..models.config import preset_config

    for m in m_values:
        preset_config(f"pig-{model_size}", [f"num_pseudo_queries={m}"])


def build_multi_models(model_size: str, m_values: list[int], device, pig=None) -> dict:
    """``{M: PIG-M model}`` with random weights (M = 1 reuses ``pig`` when given).

    When PIG-M at M has exactly PIG's parameters (today's design: M only changes how the video's tokens are
    split into the generator's inputs), the M model is ``pig`` itself with ``num_pseudo_queries = M`` in its
    config, sharing every weight: no build time, no memory, and every M runs the same encoder weights. A
    design whose parameters depend on M (e.g. learned query slots) is detected from the shapes (a
    meta-device build) and gets a model of its own."""
    from .. import hub

    out = {}
    for m in m_values:
        if m == 1 and pig is not None:
            out[m] = pig
            continue
        twin = _pig_with_m(pig, model_size, m) if pig is not None else None
        out[m] = twin if twin is not None else hub.create_model(
            f"pig-{model_size}", pretrained=None, overrides=[f"num_pseudo_queries={m}"]).to(device).eval()
    return out


def _pig_with_m(pig, model_size: str, m: int):
    """``pig`` with ``num_pseudo_queries = m`` sharing its weights, or None if PIG-M at m has other parameters."""
    import copy
    import dataclasses

    from .. import hub

    meta = hub.create_model(f"pig-{model_size}", overrides=[f"num_pseudo_queries={m}"], device="meta")
    shapes = lambda model: {k: tuple(v.shape) for k, v in model.state_dict().items()}  # noqa: E731
    if shapes(meta) != shapes(pig):
        return None
    twin = copy.copy(pig)  # a new module object over the same submodules, parameters and buffers
    twin.cfg = dataclasses.replace(pig.cfg, num_pseudo_queries=m).validate()
    return twin


def multi_vector_topk(query, rows, n: int, m: int, k: int):
    """Top-``k`` (scores, video ids) of one query [1, D] over ``n`` videos stored as the first ``n x m`` of
    ``rows`` [>= n*m, D] (video i owns rows i*m .. i*m+m-1): the model's own scoring, one matrix product
    and the max over each video's M rows (M = 1: a plain [N, D] gallery, PIG's and Two-Tower's product)."""
    import torch

    from ..models.base import multi_vector_scores

    d = rows.shape[-1]
    view = rows[: n * m].view(n, d) if m == 1 else rows[: n * m].view(n, m, d)
    scores = multi_vector_scores(query, view)[0]
    top = torch.topk(scores, min(k, n))
    return top.values, top.indices


def _offline(models: dict, cfg: EfficiencyConfig, device) -> list[dict]:
    import torch

    first = next(iter(models.values()))
    pre = first.preprocess_config()
    t, s = int(pre["num_frames"]), int(pre["image_size"])
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    frames = torch.randn(cfg.offline_batch, t, 3, s, s, generator=gen).to(device)
    d = first.embed_dim
    rows = {}
    for m, model in models.items():
        k = model.cfg.its.k
        layer = model.cfg.its.layer if k != 0 else None
        with torch.no_grad():
            vt = model.video_encoder(frames[:1], attn_layer=layer)
            out = model.encode_video(frames[:1])
        total = count_flops(lambda mm=model: mm.encode_video(frames[:1]))
        after = count_flops(lambda mm=model, v=vt: mm.video_from_tokens(v))
        rows[m] = {"m": m, "vectors_per_video": int(out.shape[1]) if out.dim() == 3 else 1,
                   "gflops": total.total / 1e9, "gflops_after_encoder": after.total / 1e9,
                   "storage_floats": m * d, "storage_bytes_fp32": 4 * m * d, "storage_bytes_fp16": 2 * m * d}
    times = time_round_robin({m: (lambda mm=model: mm.encode_video(frames)) for m, model in models.items()},
                             repeats=cfg.offline_repeats, warmup=cfg.warmup, device=device)
    base = times[min(models)].median_ms
    for m, tm in times.items():
        rows[m].update(ms=tm.median_ms / cfg.offline_batch, ms_min=tm.min_ms / cfg.offline_batch,
                       time_vs_m1=tm.median_ms / base if base > 0 else None)
    g1 = rows[min(models)]["gflops"]
    for r in rows.values():
        r["gflops_vs_m1"] = r["gflops"] / g1 if g1 else None
    return [rows[m] for m in sorted(rows)]


def multi_vector_costs(models: dict, cfg: EfficiencyConfig, device, bandwidth: dict, text_ms: float,
                       fits, random_unit, bar=None) -> dict:
    """The cost-per-M section of the efficiency report.

    ``models``: ``{M: model}``; ``fits(nbytes)`` says whether a stored array of that size may be allocated
    on ``device``; ``random_unit(n, d, seed)`` makes ``n`` random unit vectors on ``device``; ``text_ms``
    is the text encoder's median time (the same tower for every M), added to the search for a total.
    """
    import torch

    m_values = sorted(models)
    d = next(iter(models.values())).embed_dim
    on_cuda = str(device).startswith("cuda")
    offline = _offline(models, cfg, device)
    bw = bandwidth["best_gbps"] * 1e9
    pig = models[m_values[0]]
    with torch.no_grad():
        q = pig.encode_text(pig.tokenize([cfg.query]))
    devices_used = {str(q.device)} | {str(next(mm.parameters()).device) for mm in models.values()}
    rows = []
    measured: dict[int, tuple[int, float]] = {}  # M -> (largest measured N, its search ms)
    for n in cfg.sizes:
        if bar is not None:
            bar.set_postfix_str(f"PIG-M N={n:,}")
        kk = min(cfg.topk, n)
        fit = [m for m in m_values if fits(4 * m * n * d)]
        row: dict = {"n": n, "per_m": {}}
        if fit:
            m_max = max(fit)
            gallery = random_unit(m_max * n, d, cfg.seed + 13 * n)
            devices_used.add(str(gallery.device))

            def search(m, g=gallery, n=n, kk=kk):
                idx = multi_vector_topk(q, g, n, m, kk)[1]
                return idx.cpu() if on_cuda else idx

            times = time_round_robin({m: (lambda m=m: search(m)) for m in fit}, repeats=cfg.repeats,
                                     warmup=cfg.warmup, device=device, min_seconds=cfg.min_seconds)
            del gallery
        else:
            times = {}
        for m in m_values:
            nbytes = 4 * m * n * d
            cell = {"bytes_scanned": nbytes, "floor_ms": nbytes / bw * 1e3, "search_gflops": 2 * m * n * d / 1e9}
            if m in times:
                ms = times[m].median_ms
                cell.update(search_ms=ms, search_ms_min=times[m].min_ms, extrapolated=False)
                measured[m] = (n, ms)
            elif m in measured:
                n0, ms0 = measured[m]
                ms = ms0 * n / n0
                cell.update(search_ms=ms, extrapolated=True, extrapolated_from=n0,
                            note=f"gallery of {nbytes / 1e9:.1f} GB over the memory limit: scaled linearly from N={n0:,}")
            else:
                cell.update(search_ms=None, extrapolated=False, note="gallery does not fit and nothing to extrapolate from")
                row["per_m"][m] = cell
                continue
            cell["search_vs_floor"] = ms / cell["floor_ms"]
            cell["total_ms"] = text_ms + ms
            row["per_m"][m] = cell
        base = row["per_m"][m_values[0]].get("search_ms")
        for m in m_values:
            c = row["per_m"][m]
            c["search_vs_m1"] = c["search_ms"] / base if base and c.get("search_ms") is not None else None
        row["per_m"] = {str(m): c for m, c in row["per_m"].items()}  # JSON object keys are strings
        rows.append(row)
        if bar is not None:
            bar.update(1)
    return {
        "m_values": m_values,
        "what": "PIG-M stores M vectors per video; online = one matrix product over M x N rows "
                "(multi_vector_scores) + max per video + top-k; M = 1 is PIG",
        "offline": offline,
        "rows": rows,
        "text_ms": text_ms,
        "devices_used": sorted(devices_used),
    }
