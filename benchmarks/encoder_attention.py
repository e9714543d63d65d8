"""Encode-only videos/s of the video encoder's attention now against the previous one, in one process.

    python benchmarks/encoder_attention.py                       # pig-tiny (B=16) and pig-vit-b-32 (B=4), 1 thread
    python benchmarks/encoder_attention.py --models tiny --threads 2 --reps 40

The previous attention (kept below as ``previous_attention``, the code before the change) computed the
frame rows with one 5-D ``scaled_dot_product_attention`` call, which the CPU backend does not fuse: it
fell back to its math path (logits, a masked "safe" softmax, copies). The current one
(``VideoProxyEncoder._attention``) makes the frames batch entries of one 4-D call. Both are bound to the
same model in turn, calls alternate (old, new / new, old), random weights and frames; it prints the
median and best videos/s of each, their ratio, the largest difference of the stored vectors and the load.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

MODELS = {"tiny": ("pig-tiny", 16), "vit-b-32": ("pig-vit-b-32", 4)}


def previous_attention(self, block, y, t: int, frame_len: int, need_probs: bool):
    """The encoder's attention before the change (frame rows as a 5-D SDPA call)."""
    import torch
    import torch.nn.functional as F

    attn = block.attn
    b, n, w = y.shape
    m = self.num_global
    h = attn.num_heads

    def split(x):
        return x.view(b, n, h, w // h).transpose(1, 2)

    q, k, v = (split(z) for z in F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    hd = q.shape[-1]
    probs = None
    if need_probs:
        probs = ((q[:, :, :m] @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(dim=-1)
        out_g = probs @ v
    else:
        out_g = F.scaled_dot_product_attention(q[:, :, :m], k, v)
    qf = q[:, :, m:].reshape(b, h, t, frame_len, hd)
    kf = torch.cat([k[:, :, None, :m].expand(-1, -1, t, -1, -1), k[:, :, m:].reshape(b, h, t, frame_len, hd)], dim=3)
    vf = torch.cat([v[:, :, None, :m].expand(-1, -1, t, -1, -1), v[:, :, m:].reshape(b, h, t, frame_len, hd)], dim=3)
    out_f = F.scaled_dot_product_attention(qf, kf, vf).reshape(b, h, t * frame_len, hd)
    out = torch.cat([out_g, out_f], dim=2).transpose(1, 2).reshape(b, n, w)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias), probs


def measure(preset: str, batch: int, reps: int) -> dict:
    import torch

    from hybridtower import hub
    from hybridtower.encode import preprocess_for
    from hybridtower.models.video_encoder import VideoProxyEncoder

    torch.manual_seed(0)
    model = hub.create_model(preset).eval()
    enc = model.video_encoder
    size = int(preprocess_for(model).image_size)
    frames = torch.randn(batch, model.cfg.video.num_frames, 3, size, size)
    variants = {"previous": previous_attention.__get__(enc), "now": VideoProxyEncoder._attention.__get__(enc)}
    speed = {k: [] for k in variants}
    with torch.no_grad():
        outs = {}
        for name, fn in variants.items():
            enc._attention = fn
            outs[name] = model.encode_video(frames)  # also the warm-up
        for r in range(reps):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                enc._attention = variants[name]
                t0 = time.perf_counter()
                model.encode_video(frames)
                speed[name].append(batch / (time.perf_counter() - t0))
    del enc._attention
    med = {k: statistics.median(v) for k, v in speed.items()}
    return {"model": preset, "batch": batch, "frames": tuple(frames.shape[1:]),
            "max_abs_diff": float((outs["now"] - outs["previous"]).abs().max()),
            **{f"{k}_median": round(v, 3) for k, v in med.items()},
            **{f"{k}_best": round(max(v), 3) for k, v in speed.items()},
            "ratio_median": round(med["now"] / med["previous"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,vit-b-32", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--reps", type=int, default=None, help="calls per variant (default 40 tiny, 6 vit-b-32)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        preset, batch = MODELS[key]
        reps = args.reps or (40 if key == "tiny" else 6)
        load0 = os.getloadavg()[0]
        r = measure(preset, batch, reps)
        print(f"{preset} B={batch} frames {r['frames']} {args.threads} thread(s), {reps} calls each: encode-only videos/s "
              f"previous {r['previous_median']:.2f} (best {r['previous_best']:.2f})  now {r['now_median']:.2f} "
              f"(best {r['now_best']:.2f})  now/previous {r['ratio_median']:.3f}  max |diff| {r['max_abs_diff']:.1e}  "
              f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
