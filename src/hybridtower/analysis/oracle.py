"""Oracle upper bound: PIG's own fusion queried by the real caption instead of the pseudo-query.

For every caption ``t`` and every video, PIG's fusion pools the video's ``[x_v; x_f]`` with ``t`` as
the query (``model.fusion`` on the pair, the Single-Tower use of the same weights) and the score is the
cosine of ``t`` with that fused vector. This is what PIG's pseudo-query tries to anticipate offline, so
it bounds what a better generator could give *with this checkpoint's encoder and fusion*. It is not a
trained Single-Tower model: the fusion was trained with pseudo-queries as queries.

Rows, all on the same checkpoint and test split (evaluation protocol of :mod:`hybridtower.eval`):

* ``pig``: the stored vectors ``v = fusion(t_p, [x_v; x_f])``, scored ``t . v`` (what PIG deploys);
* ``oracle``: ``fusion(t, [x_v; x_f])``, scored per pair (Single-Tower cost);
* ``video_cls``: the encoder's video-CLS output alone, ``t . cls`` (the CLIP-ViP-style vector of the
  same encoder: what the generator and fusion add);
* ``xpool`` (with ``--xpool-checkpoint``): a separately trained X-Pool model, evaluated on the same
  split by :func:`hybridtower.eval.evaluate`.

Pairwise scores use :class:`~hybridtower.analysis.xpool_fast.FoldedXPool` (exactly the fusion's
scores, dropout off) so the ``[captions x videos]`` matrix stays cheap.
"""

from __future__ import annotations

import copy

from .common import (
    AnalysisError,
    collect_pig_features,
    encode_captions,
    markdown_table,
    require_pig,
    retrieval_of_encoded,
    split_label,
    write_outputs,
)

__all__ = ["oracle_analysis"]

ROWS = {
    "pig": ("PIG (pseudo-query fusion, stored vector)", "text . v (dot product)"),
    "oracle": ("Oracle: PIG fusion queried by the real caption", "fusion per (caption, video) pair"),
    "video_cls": ("Same encoder, video CLS only (no generator / fusion)", "text . cls (dot product)"),
    "xpool": ("X-Pool checkpoint (Single-Tower)", "fusion per (caption, video) pair"),
}


def oracle_analysis(model, split, out_dir=None, *, xpool_model=None, batch_size: int = 16, num_workers: int = 0,
                    progress: bool = True) -> dict:
    """Run the oracle comparison; returns the result dict and writes ``oracle.md/json`` under ``out_dir``."""
    import torch

    from .xpool_fast import FoldedXPool

    require_pig(model, "the oracle analysis")
    if xpool_model is not None and xpool_model.cfg.framework != "xpool":
        raise AnalysisError(f"--xpool-checkpoint must be an X-Pool model, got {xpool_model.cfg.framework!r}")
    feats = collect_pig_features(model, split, batch_size=batch_size, num_workers=num_workers, progress=progress)
    text, gt = encode_captions(model, split)
    nv = len(split.videos)
    results: dict[str, dict] = {}
    with torch.no_grad():
        results["pig"] = retrieval_of_encoded(text @ feats.video.t(), feats.indices, nv, gt)
        fx = FoldedXPool(copy.deepcopy(model.fusion).float().cpu().eval())  # features live on the CPU
        oracle = fx.scores(text, fx.store(feats.fusion_tokens))
        results["oracle"] = retrieval_of_encoded(oracle, feats.indices, nv, gt)
        results["video_cls"] = retrieval_of_encoded(text @ feats.video_cls.t(), feats.indices, nv, gt)
    if xpool_model is not None:
        from ..eval import evaluate

        ev = evaluate(xpool_model, split, batch_size=batch_size, num_workers=num_workers, progress=progress)
        results["xpool"] = {"t2v": ev["t2v"], "v2t": ev["v2t"]}
    rows = []
    for key, res in results.items():
        label, cost = ROWS[key]
        t, v = res["t2v"], res["v2t"]
        rows.append([label, t["R@1"], t["R@5"], t["R@10"], t["MdR"], t["MnR"], v["R@1"], v["R@5"], cost])
    gap = results["oracle"]["t2v"]["R@1"] - results["pig"]["t2v"]["R@1"]
    md = (
        f"### Oracle upper bound ({split_label(split)})\n\n"
        f"{len(split.videos)} videos ({len(feats.indices)} decoded), {len(split.captions)} captions; "
        f"checkpoint `{model.cfg.name or model.cfg.framework}`.\n\n"
        + markdown_table(["", "t2v R@1", "R@5", "R@10", "MdR", "MnR", "v2t R@1", "v2t R@5", "online cost"], rows)
        + f"\nt2v R@1 gap oracle - PIG: {gap:+.1f} points (what a perfect pseudo-query could add with this "
        "encoder and fusion; the fusion was trained with pseudo-queries, so this is a bound of this checkpoint, "
        "not of a trained Single-Tower model).\n"
    )
    data = {
        "analysis": "oracle",
        "data": split_label(split),
        "num_videos": len(split.videos),
        "num_captions": len(split.captions),
        "skipped_videos": [{"video_id": e["video_id"], "error": e["error"]} for e in feats.errors],
        "results": results,
        "labels": {k: ROWS[k][0] for k in results},
        "t2v_r1_gap_oracle_minus_pig": gap,
    }
    if out_dir is not None:
        data["files"] = write_outputs(out_dir, "oracle", md, data)
    data["markdown"] = md
    return data
