"""ITS k sweep: how many informative patch tokens should the generator see?

The same checkpoint is evaluated with the ITS top-k overridden at inference
(``model.video_features(frames, k=k)``) for k in {0, 4, 8, 16, 32, all}, reporting retrieval
(evaluation protocol) and the offline cost per video (counted FLOPs and measured time of encoder +
ITS + generator + fusion, from :func:`hybridtower.analysis.efficiency.pig_part_costs`).

**What this measures.** A model trained with one k and evaluated at another measures *robustness to
k*, not the accuracy a model trained at that k would reach. For the trained-at-k curve, train one
model per k (``hybridtower train ... --set model.its.k=K``) and run this analysis on each checkpoint
with ``--ks K`` (``docs/analysis.md`` has the loop).

**"all" patches.** The generator is a copy of CLIP's text transformer with 77 positions; its input is
``[BOS] + x_v + x_f + k patches + [EOS]``, so k is capped at ``77 - 2 - M - T`` (59 for ViT-B/32 with
12 frames and 4 global tokens, while a video has 588 patches). A k beyond the cap cannot run without
changing the model (new positions); the sweep reports it as skipped with that reason and adds the
largest k that fits ("max").
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    AnalysisError,
    collect_pig_features_for_ks,
    encode_captions,
    markdown_table,
    require_pig,
    retrieval_of_encoded,
    save_figure,
    split_label,
    write_outputs,
)

__all__ = ["DEFAULT_KS", "parse_ks", "its_capacity", "its_sweep_analysis"]

DEFAULT_KS = "0,4,8,16,32,all"


def parse_ks(text: str) -> list:
    out: list = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("all", "max"):
            out.append(part)
            continue
        try:
            k = int(part)
        except ValueError:
            raise AnalysisError(f"bad ITS k {part!r}: use integers >= 0, 'all' or 'max'") from None
        if k < 0:
            raise AnalysisError(f"ITS k must be >= 0, 'all' or 'max', got {k}")
        out.append(k)
    if not out:
        raise AnalysisError("no ITS k given")
    return out


def its_capacity(model) -> dict:
    """Patches per video, and the largest k the generator's positions allow."""
    cfg = model.cfg
    enc = model.video_encoder
    visual = enc.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    patch = visual.conv1.kernel_size[0]
    per_frame = (int(size) // int(patch)) ** 2
    t = cfg.video.num_frames
    fixed = (enc.num_global if cfg.generator.use_global_tokens else 0)
    fixed += (t if cfg.generator.use_frame_tokens and cfg.video.frame_cls else 0)
    fixed += 1 + int(cfg.generator.use_bos)
    positions = model.generator.positional_embedding.shape[0]
    return {"patches": per_frame * t, "patches_per_frame": per_frame, "grid": int(size) // int(patch),
            "max_k": max(0, positions - fixed), "generator_positions": positions, "fixed_tokens": fixed}


def its_sweep_analysis(model, split, out_dir=None, *, ks="0,4,8,16,32,all", batch_size: int = 16,
                       num_workers: int = 0, progress: bool = True, cost_repeats: int = 2, plot: bool = True) -> dict:
    import torch

    from .efficiency import pig_part_costs

    require_pig(model, "the ITS sweep")
    wanted = parse_ks(ks) if isinstance(ks, str) else list(ks)
    cap = its_capacity(model)
    trained_k = model.cfg.its.k
    plan: list[tuple[str, int | None, str | None]] = []  # (label, k, reason skipped)
    for k in wanted:
        if k == "max":
            plan.append((f"max ({cap['max_k']})", cap["max_k"], None))
        elif k == "all":
            if cap["patches"] <= cap["max_k"]:
                plan.append((f"all ({cap['patches']})", cap["patches"], None))
            else:
                plan.append((f"all ({cap['patches']})", None,
                             f"{cap['patches']} patches + {cap['fixed_tokens']} other tokens exceed the generator's "
                             f"{cap['generator_positions']} positions"))
                if "max" not in wanted and cap["max_k"] not in wanted:
                    plan.append((f"max ({cap['max_k']})", cap["max_k"], None))
        elif k > cap["max_k"]:
            plan.append((str(k), None, f"k={k} exceeds the largest k the generator's positions allow ({cap['max_k']})"))
        else:
            plan.append((str(k), k, None))
    text, gt = encode_captions(model, split)
    nv = len(split.videos)
    device = next(model.parameters()).device
    pre = model.preprocess_config()
    frames = torch.randn(1, int(pre["num_frames"]), 3, int(pre["image_size"]), int(pre["image_size"]),
                         generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    by_k = collect_pig_features_for_ks(model, split, [k for _, k, _ in plan if k is not None], batch_size=batch_size,
                                       num_workers=num_workers, progress=progress, desc="ITS sweep")
    for label, k, reason in plan:
        if k is None:
            rows.append({"k": label, "skipped": reason})
            continue
        feats = by_k[k]
        res = retrieval_of_encoded(text @ feats.video.t(), feats.indices, nv, gt)
        was = model.training
        model.eval()
        try:
            cost = pig_part_costs(model, frames, k=k, repeats=cost_repeats, warmup=1)
        finally:
            model.train(was)
        rows.append({
            "k": label, "k_value": k, "trained_k": k == trained_k, **res,
            "generator_tokens": cap["fixed_tokens"] + k,
            "offline_gflops": cost["total"]["gflops"], "offline_ms": cost["total"]["ms"],  # None: not timed
            "generator_gflops": cost["generator"]["gflops"], "generator_ms": cost["generator"]["ms"],
        })
    result = {
        "analysis": "its-sweep",
        "data": split_label(split),
        "trained_k": trained_k,
        "capacity": cap,
        "rows": rows,
        "note": "one checkpoint evaluated at several k: robustness to k, not the accuracy of a model trained at each k",
    }
    table_rows = []
    for r in rows:
        if "skipped" in r:
            table_rows.append([r["k"], "skipped: " + r["skipped"], "", "", "", "", "", "", ""])
            continue
        t = r["t2v"]
        table_rows.append([r["k"] + (" (trained)" if r["trained_k"] else ""), r["generator_tokens"], t["R@1"], t["R@5"],
                           t["R@10"], r["v2t"]["R@1"], r["offline_gflops"], r["generator_gflops"], r["offline_ms"]])
    md = (
        f"### ITS k sweep ({split_label(split)})\n\n"
        f"Checkpoint trained with k = {trained_k}; every row evaluates the same weights with k overridden at "
        f"inference (robustness to k, not a model trained at each k). A video has {cap['patches']} patches; the "
        f"generator fits at most k = {cap['max_k']}.\n\n"
        + markdown_table(["k", "generator tokens", "t2v R@1", "R@5", "R@10", "v2t R@1", "offline GFLOPs / video",
                          "generator GFLOPs", "offline ms / video"], table_rows)
    )
    files = {}
    if out_dir is not None and plot and any("skipped" not in r for r in rows):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        files["plot"] = str(Path(out_dir) / "its_sweep.png")
        _plot([r for r in rows if "skipped" not in r], files["plot"], trained_k, len(split.captions))
        md += f"\n![ITS k sweep]({Path(files['plot']).name})\n"
    result["files"] = files
    if out_dir is not None:
        result["files"].update(write_outputs(out_dir, "its_sweep", md, result))
    result["markdown"] = md
    return result


def _plot(rows, path, trained_k, num_captions: int | None = None) -> None:
    """R@1/5/10 (left, from 0 so that flat stays flat) and offline GFLOPs (right, from 0) against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k_value"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.6, 4.6), dpi=120, layout="constrained")
    recall_max = 0.0
    for name, marker, alpha in (("R@1", "o", 1.0), ("R@5", "^", 0.75), ("R@10", "v", 0.55)):
        ys = [r["t2v"][name] for r in rows]
        recall_max = max(recall_max, *ys)
        ax.plot(ks, ys, marker=marker, color="tab:blue", alpha=alpha, label=f"t2v {name}")
    ax.set_ylim(0, max(1.0, recall_max) * 1.15)
    ax.set_xlabel("ITS k (patch tokens given to the generator)")
    ax.set_ylabel("t2v recall (%)", color="tab:blue")
    ax.axvline(trained_k, color="gray", ls=":", lw=1, label=f"trained k = {trained_k}")
    ax2 = ax.twinx()
    gf = [r["offline_gflops"] for r in rows]
    ax2.plot(ks, gf, marker="s", color="tab:red", ls="--", label="offline GFLOPs / video")
    ax2.set_ylim(0, max(gf) * 1.15)
    ax2.set_ylabel("offline GFLOPs per video", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    title = f"Same checkpoint (trained at k={trained_k}) evaluated at each k"
    if num_captions:
        title += f"\n({num_captions} captions: one caption = {100 / num_captions:.2g} recall points)"
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    plt.close(fig)
