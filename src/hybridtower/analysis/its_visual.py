"""Which patches does ITS pick? The sampled frames of one video with the selected patches outlined.

The frames are shown as the model sees them (sampled, resized, then un-normalised for display). Each
selected patch is outlined and numbered by its ITS rank (1 = highest video-CLS attention, max over
heads, in the ITS layer); a light heat map shows the ITS score of every patch, on one colour scale for
the whole video (selection is over the whole video, not per frame).
"""

from __future__ import annotations

from pathlib import Path

from .common import AnalysisError, markdown_table, require_pig, save_figure, split_label, write_outputs

__all__ = ["its_patches", "its_patches_analysis", "position_to_patch"]


def position_to_patch(position: int, num_global: int, frame_len: int, has_frame_cls: bool, grid: int) -> tuple[int, int, int]:
    """Sequence position of a patch token -> (frame, row, col)."""
    rel = position - num_global
    if rel < 0:
        raise ValueError(f"position {position} is a global token, not a patch")
    frame, within = divmod(rel, frame_len)
    if has_frame_cls:
        if within == 0:
            raise ValueError(f"position {position} is frame {frame}'s CLS token, not a patch")
        within -= 1
    row, col = divmod(within, grid)
    return frame, row, col


def its_patches(model, frames, k: int | None = None) -> dict:
    """ITS selection for one video ``frames`` [T, 3, S, S] (preprocessed): positions, patches, scores."""
    import torch

    from ..models.its import reduce_heads

    require_pig(model, "the ITS patch picture")
    k = model.cfg.its.k if k is None else k
    if k == 0:
        raise AnalysisError("ITS with k = 0 selects no patch: nothing to show")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.video_features(frames[None].to(device), fuse=False, k=k)
    finally:
        model.train(was)
    vt = out.tokens
    visual = model.video_encoder.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    grid = int(size) // int(visual.conv1.kernel_size[0])
    scores = reduce_heads(vt.global_attn[:, :, 0], model.cfg.its.head_reduction)[0].float().cpu()  # [N]
    patch_pos = vt.patch_positions.cpu()
    heat = scores[patch_pos].view(vt.num_frames, grid, grid)
    selected = []
    for rank, pos in enumerate(out.its_positions[0].cpu().tolist(), start=1):
        f, r, c = position_to_patch(pos, vt.num_global, vt.frame_len, vt.has_frame_cls, grid)
        selected.append({"rank": rank, "position": pos, "frame": f, "row": r, "col": c, "score": float(scores[pos])})
    return {"k": k, "grid": grid, "patch_size": int(visual.conv1.kernel_size[0]), "num_frames": vt.num_frames,
            "selected": selected, "heat": heat}


def its_patches_analysis(model, split, out_dir, *, video: str | int = 0, k: int | None = None,
                         heatmap: bool = True) -> dict:
    """Draw the ITS selection of one video of ``split`` (by id or index); writes its_patches.{png,md,json}."""
    from ..data.datasets import VideoFrames
    from ..encode import eval_sample_mode, preprocess_for

    require_pig(model, "the ITS patch picture")
    index = _video_index(split, video)
    ds = VideoFrames(split, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                     sample_mode=eval_sample_mode(model))
    item = ds[index]
    if "error" in item:
        raise AnalysisError(f"video {item['video_id']!r} cannot be read: {item['error']}")
    sel = its_patches(model, item["frames"], k=k)
    vid = item["video_id"]
    captions = split.captions_by_video().get(vid, [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "its_patches.png"
    pre = model.preprocess_config()
    _draw(item["frames"], sel, pre["mean"], pre["std"], png, vid, captions, heatmap)
    per_frame = [0] * sel["num_frames"]
    for s in sel["selected"]:
        per_frame[s["frame"]] += 1
    result = {
        "analysis": "its-patches",
        "data": split_label(split),
        "video_id": vid,
        "video_index": index,
        "captions": captions,
        "k": sel["k"],
        "trained_k": model.cfg.its.k,
        "grid": sel["grid"],
        "patch_size": sel["patch_size"],
        "selected": sel["selected"],
        "selected_per_frame": per_frame,
    }
    md = (
        f"### ITS-selected patches of video `{vid}` ({split_label(split)})\n\n"
        + (f"Captions: {'; '.join(captions[:5])}\n\n" if captions else "")
        + f"k = {sel['k']} of {sel['num_frames'] * sel['grid'] ** 2} patches ({sel['grid']}x{sel['grid']} per frame); "
        f"selected per frame: {per_frame}.\n\n![ITS patches]({png.name})\n\n"
        + markdown_table(["rank", "frame", "row", "col", "ITS score"],
                         [[s["rank"], s["frame"], s["row"], s["col"], round(s["score"], 5)] for s in sel["selected"]])
    )
    result["files"] = {"picture": str(png), **write_outputs(out_dir, "its_patches", md, result)}
    result["markdown"] = md
    return result


def _video_index(split, video) -> int:
    if isinstance(video, int) or (isinstance(video, str) and video.isdigit() and video not in split.video_index()):
        i = int(video)
        if not 0 <= i < len(split.videos):
            raise AnalysisError(f"video index {i} out of range: split {split.name!r} has {len(split.videos)} videos")
        return i
    index = split.video_index()
    if video not in index:
        raise AnalysisError(f"no video {video!r} in split {split.name!r} (e.g. {', '.join(list(index)[:3])})")
    return index[video]


def _draw(frames, sel, mean, std, path, video_id, captions, heatmap: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.patches import Rectangle

    t = frames.shape[0]
    size = frames.shape[-1]
    img = (frames * torch.tensor(std)[None, :, None, None] + torch.tensor(mean)[None, :, None, None]).clamp(0, 1)
    rows = (t + 5) // 6  # at most 6 per row, rows filled evenly (8 frames -> 2 x 4, not 6 + 2)
    cols = (t + rows - 1) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows + 0.7), dpi=120, squeeze=False,
                             layout="constrained")
    heat = sel["heat"]
    vmax = float(heat.max()) if heat.numel() else 1.0
    p = size / sel["grid"]  # patch size in displayed pixels
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= t:
            continue
        ax.imshow(img[i].permute(1, 2, 0).numpy(), extent=(0, size, size, 0))
        if heatmap:
            ax.imshow(heat[i].numpy(), cmap="magma", alpha=0.35, vmin=0, vmax=vmax, extent=(0, size, size, 0),
                      interpolation="nearest")
        ax.set_title(f"frame {i}", fontsize=8)
        for s in sel["selected"]:
            if s["frame"] != i:
                continue
            ax.add_patch(Rectangle((s["col"] * p, s["row"] * p), p, p, fill=False, edgecolor="lime", lw=1.6))
            ax.text(s["col"] * p + 1, s["row"] * p + 1, str(s["rank"]), color="yellow", fontsize=7, va="top",
                    ha="left", fontweight="bold")
    title = f"ITS top-{sel['k']} patches of {video_id} (boxes numbered by ITS rank"
    title += "; tint: ITS score, one scale for the video)" if heatmap else ")"
    if captions:
        title += f'\n"{captions[0][:90]}"'
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
