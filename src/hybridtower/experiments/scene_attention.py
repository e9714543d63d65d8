"""Which scene does a PIG video vector stand for? (investigation of issue 9, section 4, on the scenes kinds)

A PIG video vector is ``fusion(t_p, [x_v; x_f])``: the pseudo-query pools the video's tokens, and the
fusion's attention over the frame tokens ``x_f`` says which frames, hence which scenes, the stored
vector represents. A caption describes ONE scene of its clip; if the single pseudo-query, made without
the text, settles on one scene, captions of that scene should be found and captions of the other
scenes missed. For PIG-M (M vectors, the max over them at search time) the same is asked of each
segment's vector: does the winning vector's attention sit on the caption's scene?

For every test caption this measures, on one checkpoint and the evaluation protocol's frames:

* ``mass``: the fusion attention mass on the frame tokens of the caption's scene, divided by the mass
  on all frame tokens (the video-CLS/proxy tokens are left out); 1 / (scenes in the clip) when the
  attention spreads evenly;
* ``top``: whether the caption's scene holds the most frame-attention mass of the clip;
* the caption's t2v rank (pessimistic under ties, as :mod:`hybridtower.eval`), to split R@1/R@5/MdR by
  ``top``.

    python -m hybridtower.experiments.scene_attention RUN_DIR SYNTH_DIR [--split test-3k] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def frame_scenes(frame_indices: list[int], frames_per_scene: int) -> list[int]:
    """The scene of each sampled frame index (scenes are ``frames_per_scene`` rendered frames each)."""
    return [int(f) // frames_per_scene for f in frame_indices]


def scene_masses(alpha_frames: np.ndarray, scenes: list[int], num_scenes: int) -> np.ndarray:
    """``alpha_frames`` [T] attention on the frame tokens -> the share of it on each scene [num_scenes]."""
    out = np.zeros(num_scenes)
    for a, s in zip(alpha_frames, scenes):
        out[s] += a
    total = out.sum()
    return out / total if total > 0 else out


def _fusion_alpha(fusion, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The fusion's attention weights [B, n] (mean over heads) of ``query`` [B, D] over ``tokens`` [B, n, D]."""
    import math

    hd = fusion.dim // fusion.heads
    q = fusion.q_proj(fusion.layer_norm1(query)).unflatten(-1, (fusion.heads, hd))
    k, _ = fusion._keys_values(tokens)
    logits = torch.einsum("bhd,bnhd->bhn", q, k) / (math.sqrt(hd) * fusion.temperature)
    return logits.softmax(dim=-1).mean(dim=1)


def _summary(ranks: np.ndarray) -> dict:
    if len(ranks) == 0:
        return {"captions": 0}
    return {"captions": int(len(ranks)), "R@1": float((ranks <= 1).mean() * 100), "R@5": float((ranks <= 5).mean() * 100),
            "MdR": float(np.median(ranks))}


@torch.no_grad()
def scene_attention(run_dir: str | Path, synth_dir: str | Path, split: str = "test-3k", batch_size: int = 16) -> dict:
    from .. import hub
    from ..data import load_split
    from ..data.datasets import VideoFrames
    from ..data.video.sampling import sample_indices
    from ..encode import eval_sample_mode, preprocess_for
    from ..eval import evaluate

    model = hub.load_model(run_dir).eval()
    if model.framework != "pig" or not getattr(model, "fusion_enabled", True):
        raise ValueError("scene_attention needs a PIG checkpoint with its fusion (pig-*, pig-m4-*)")
    meta = json.loads((Path(synth_dir) / "synth_meta.json").read_text())
    clips = {v["video_id"]: v for v in meta["videos"]}
    data = load_split(f"msrvtt:{synth_dir}", split)
    mode = eval_sample_mode(model)
    t = model.cfg.video.num_frames
    frames_ds = VideoFrames(data, num_frames=t, preprocess=preprocess_for(model), sample_mode=mode)
    m = model.num_pseudo_queries
    per_video: dict[str, np.ndarray] = {}  # video id -> [M, scenes] attention share per scene
    vectors: dict[str, torch.Tensor] = {}
    for start in range(0, len(frames_ds), batch_size):
        items = [frames_ds[i] for i in range(start, min(start + batch_size, len(frames_ds)))]
        frames = torch.stack([it["frames"] for it in items])
        out = model.video_features(frames)
        vt = out.tokens
        kv = model.fusion_tokens(vt)  # [B, G + T, D]: x_v then x_f
        g = vt.global_tokens.shape[1]
        tp = out.pseudo_query if m > 1 else out.pseudo_query[:, None]
        for j, it in enumerate(items):
            vid = it["video_id"]
            clip = clips[vid]
            fps_scene = clip["clip"]["frames_per_scene"]
            n_scenes = len(clip["clip"]["scenes"])
            scenes = frame_scenes(sample_indices(clip["frames"], t, mode), fps_scene)
            alpha = _fusion_alpha(model.fusion, tp[j], kv[j : j + 1].expand(tp.shape[1], -1, -1))  # [M, G + T]
            per_video[vid] = np.stack([scene_masses(a[g:].numpy(), scenes, n_scenes) for a in alpha])
            vectors[vid] = out.video[j] if m > 1 else out.video[j][None]
    metrics = evaluate(model, data, batch_size=batch_size, progress=False, return_ranks=True)
    ranks = np.asarray(metrics["ranks"]["t2v"])
    texts = model.encode_text(model.tokenize([c.text for c in data.captions]))
    scene_of = {}
    for v in meta["videos"]:
        for c in v["captions"]:
            scene_of[(v["video_id"], c["text"])] = c["scene"]
    masses, tops, uniform = [], [], []
    for i, c in enumerate(data.captions):
        s = scene_of[(c.video_id, c.text)]
        share = per_video[c.video_id]  # [M, scenes]
        win = int((vectors[c.video_id] @ texts[i]).argmax())  # the vector a search would score this video by
        masses.append(float(share[win, s]))
        tops.append(bool(share[win].argmax() == s))
        uniform.append(1.0 / share.shape[1])
    masses, tops = np.asarray(masses), np.asarray(tops)
    return {
        "checkpoint": str(run_dir), "split": split, "model": model.cfg.name, "pseudo_queries": m, "sample_mode": mode,
        "mean_mass_on_caption_scene": float(masses.mean()), "mean_uniform_share": float(np.mean(uniform)),
        "caption_scene_is_top": float(tops.mean() * 100),
        "ranks_when_top": _summary(ranks[tops]), "ranks_otherwise": _summary(ranks[~tops]), "all": _summary(ranks),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("synth_dir")
    p.add_argument("--split", default="test-3k")
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args(argv)
    res = scene_attention(args.run_dir, args.synth_dir, args.split)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
