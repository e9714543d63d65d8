"""How close are PIG's pseudo-queries to real queries?

For every video the generator produces ``t_p`` from the video alone; training pulls it toward the
features of the video's captions (reconstruction loss ``2 - 2 cos(t_p, t)``). On a test split we
measure, with caption features ``t`` from the same checkpoint's text tower:

* ``cos(t_p, t)`` for the video's **own** captions against **other** videos' captions (two
  distributions, histogram PNG), and the probability that an own pair beats an other pair (AUC);
* the pseudo-query used directly as a Two-Tower video vector: t2v R@1 etc. of captions retrieving
  ``t_p`` (evaluation protocol), beside PIG's fused vectors ``v``;
* a 2-D projection (PCA on the pooled, L2-normalised features) of pseudo-queries and captions (PNG).
  PCA rather than t-SNE: it is deterministic, needs no extra package and keeps global geometry, so a
  modality gap between the two clouds shows as a shift rather than being folded away.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .common import (
    collect_pig_features,
    encode_captions,
    markdown_table,
    require_pig,
    retrieval_of_encoded,
    save_figure,
    split_label,
    write_outputs,
)

__all__ = ["pseudo_query_analysis", "own_other_cosines", "pca_2d"]


def own_other_cosines(pseudo: torch.Tensor, text: torch.Tensor, caption_row: torch.Tensor,
                      max_other: int = 500_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(t_p, own captions) [Nt] and cos(t_p, other videos' captions) (all pairs, or a random sample).

    ``pseudo`` [Nv, D] (rows = decoded videos), ``text`` [Nt, D], ``caption_row[i]`` the row of caption
    i's video in ``pseudo`` (-1 when that video could not be decoded: the caption is left out).
    """
    p = F.normalize(pseudo.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    keep = caption_row >= 0
    t, rows = t[keep], caption_row[keep]
    cos = t @ p.t()  # [Nt', Nv]
    own = cos.gather(1, rows[:, None]).squeeze(1)
    mask = torch.ones_like(cos, dtype=torch.bool)
    mask[torch.arange(cos.shape[0]), rows] = False
    other = cos[mask]
    if other.numel() > max_other:
        g = torch.Generator().manual_seed(seed)
        other = other[torch.randperm(other.numel(), generator=g)[:max_other]]
    return own, other


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(pos > neg) + 0.5 P(pos = neg), by ranks (Mann-Whitney U)."""
    allv = torch.cat([pos, neg]).double()
    order = allv.argsort()
    ranks = torch.empty_like(allv)
    ranks[order] = torch.arange(1, allv.numel() + 1, dtype=torch.float64)
    # average the ranks of ties
    uniq, inverse, counts = torch.unique(allv, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    n_pos, n_neg = pos.numel(), neg.numel()
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` projected on their top-2 principal axes, and the explained-variance ratios."""
    x = x.double()
    xc = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    var = s**2
    return (xc @ vh[:2].t()).float(), (var[:2] / var.sum()).float()


def _stats(x: torch.Tensor) -> dict:
    x = x.double()
    return {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0, "median": float(x.median()),
            "n": int(x.numel())}


def pseudo_query_analysis(model, split, out_dir=None, *, batch_size: int = 16, num_workers: int = 0,
                          progress: bool = True, highlight: int = 8, plot: bool = True) -> dict:
    require_pig(model, "the pseudo-query analysis")
    feats = collect_pig_features(model, split, batch_size=batch_size, num_workers=num_workers, progress=progress)
    text, gt = encode_captions(model, split)
    nv = len(split.videos)
    row_of = torch.full((nv,), -1, dtype=torch.long)
    row_of[feats.indices] = torch.arange(feats.indices.numel())
    caption_row = row_of[gt]
    own, other = own_other_cosines(feats.pseudo_query, text, caption_row)
    p_n = F.normalize(feats.pseudo_query.float(), dim=-1)
    as_video = retrieval_of_encoded(text @ p_n.t(), feats.indices, nv, gt)
    fused = retrieval_of_encoded(text @ feats.video.t(), feats.indices, nv, gt)
    # modality gap: distance between the centroids of the two normalised clouds
    t_n = F.normalize(text.float(), dim=-1)
    gap = float((p_n.mean(0) - t_n.mean(0)).norm())
    result = {
        "analysis": "pseudo-query",
        "data": split_label(split),
        "num_videos": nv,
        "num_captions": len(split.captions),
        "cos_own": _stats(own),
        "cos_other": _stats(other),
        "auc_own_vs_other": auc(own, other),
        "pseudo_query_as_video_vector": as_video,
        "pig_fused_vector": fused,
        "centroid_distance": gap,
        "skipped_videos": [{"video_id": e["video_id"], "error": e["error"]} for e in feats.errors],
    }
    files = {}
    if out_dir is not None and plot:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files["histogram"] = str(out / "pseudo_query_cosines.png")
        _histogram(own, other, files["histogram"], result["auc_own_vs_other"])
        files["projection"] = str(out / "pseudo_query_pca.png")
        result["pca_explained_variance"] = _projection(p_n, t_n, caption_row, files["projection"], highlight)
    o, x = result["cos_own"], result["cos_other"]
    md = (
        f"### Pseudo-queries against real captions ({split_label(split)})\n\n"
        + markdown_table(
            ["", "mean cos", "std", "median", "pairs"],
            [["t_p vs its own video's captions", o["mean"], o["std"], o["median"], o["n"]],
             ["t_p vs other videos' captions", x["mean"], x["std"], x["median"], x["n"]]],
        )
        + f"\nP(own > other) (AUC): {result['auc_own_vs_other']:.3f}; distance between the centroids of the "
        f"normalised pseudo-queries and captions: {gap:.3f}.\n\n"
        + markdown_table(
            ["video vector scored by captions", "t2v R@1", "R@5", "R@10", "MdR", "v2t R@1"],
            [["t_p (pseudo-query itself)", *_r(as_video)], ["v = fusion(t_p, [x_v; x_f]) (PIG)", *_r(fused)]],
        )
    )
    if files:
        md += "\n" + "".join(f"![{k}]({Path(v).name})\n" for k, v in files.items())
    result["files"] = files
    if out_dir is not None:
        result["files"].update(write_outputs(out_dir, "pseudo_query", md, result))
    result["markdown"] = md
    return result


def _r(res: dict) -> list:
    t = res["t2v"]
    return [t["R@1"], t["R@5"], t["R@10"], t["MdR"], res["v2t"]["R@1"]]




def _histogram(own, other, path, auc_value) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    lo = float(min(own.min(), other.min()))
    hi = float(max(own.max(), other.max()))
    bins = torch.linspace(lo, hi if hi > lo else lo + 1e-3, 50).tolist()
    ax.hist(other.numpy(), bins=bins, density=True, alpha=0.55, label=f"other videos' captions (n={other.numel():,})")
    ax.hist(own.numpy(), bins=bins, density=True, alpha=0.55, label=f"own video's captions (n={own.numel():,})")
    ax.set_xlabel("cos(pseudo-query t_p, caption feature t)")
    ax.set_ylabel("density")
    ax.set_title(f"Pseudo-query vs caption similarity (AUC {auc_value:.3f})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _projection(p_n, t_n, caption_row, path, highlight: int) -> list[float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = caption_row >= 0
    t_k, rows = t_n[keep], caption_row[keep]
    xy, ratio = pca_2d(torch.cat([p_n, t_k]))
    pq, cap = xy[: p_n.shape[0]], xy[p_n.shape[0] :]
    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    ax.scatter(cap[:, 0], cap[:, 1], s=6, alpha=0.35, c="tab:blue", label="caption features t")
    ax.scatter(pq[:, 0], pq[:, 1], s=14, alpha=0.7, marker="x", c="tab:orange", label="pseudo-queries t_p")
    cmap = plt.get_cmap("tab10")
    for j in range(min(highlight, p_n.shape[0])):
        colour = cmap(j % 10)
        own = cap[rows == j]
        for c in own:
            ax.plot([pq[j, 0], c[0]], [pq[j, 1], c[1]], color=colour, lw=0.8, alpha=0.8)
        ax.scatter(pq[j : j + 1, 0], pq[j : j + 1, 1], s=60, marker="*", color=colour, edgecolor="k", lw=0.5, zorder=3)
    ax.set_xlabel(f"PC1 ({100 * float(ratio[0]):.1f} % var.)")
    ax.set_ylabel(f"PC2 ({100 * float(ratio[1]):.1f} % var.)")
    ax.set_title(f"PCA of pseudo-queries and captions (stars: {min(highlight, p_n.shape[0])} videos, "
                 "lines to their captions)", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return [float(r) for r in ratio]
