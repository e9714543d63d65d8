"""``hybridtower synth``: write the synthetic benchmark (real video files + captions) to a folder.

Output under OUT_DIR (see docs/data.md for the full description)::

    videos/videoN.{mp4,webm,avi,mkv}   h264 / vp9 / mpeg4 / h264, a few frame sizes, CFR
    MSRVTT_data.json                    all videos (split train / validate / test) and all captions
    MSRVTT_train.9k.csv                 the train ids (validation ids are NOT in it: model selection
                                        uses ``val``, never test)
    MSRVTT_train.7k.csv                 the first 7/9 of the train ids (a smaller training set)
    MSRVTT_JSFUSION_test.csv            the test ids with their first caption (1k-A style, 1 per video)
    captions.jsonl                      generic JSONL, one line per caption, ``split`` in train/val/test,
                                        plus ``video_id`` and ``kind`` (caption kind); ``scene`` (the
                                        caption's scene index) for the ``scenes`` kind
    images/imgN.png + images.jsonl      image-caption pairs (split train / val) for pretraining a tiny CLIP
    synth_meta.json                     the generator config and every video's scene(s) and caption kinds

Two kinds (``SynthConfig.kind``): ``shapes`` (one scene per clip; every caption describes the whole clip)
and ``scenes`` (2-4 scenes per clip, each caption describes one scene: see :mod:`.multiscene`).
    README.md                           what the files are

Everything is a pure function of ``(seed, index)``: the same seed gives identical captions and
identical decoded frames, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ...core.errors import ConfigError
from ...core.io import atomic_path, atomic_write_json, atomic_write_text
from .captions import image_captions, make_captions
from .bold import bold_captions, render_bold, sample_bold_scene
from .multiscene import STYLES, clip_captions, render_clip, sample_clip
from .scene import render_frames, render_still, sample_scene

# (extension, PyAV container format, encoder)
VIDEO_FORMATS = (
    ("mp4", "mp4", "libx264"),
    ("webm", "webm", "libvpx-vp9"),
    ("avi", "avi", "mpeg4"),
    ("mkv", "matroska", "libx264"),
)
GENERATOR_VERSION = 1
KINDS = ("shapes", "scenes")


@dataclass
class SynthConfig:
    kind: str = "shapes"  # shapes: one scene per clip; scenes: 2-4 scenes per clip, a caption per scene (.multiscene)
    videos: int = 1000  # number of clips (split train / val / test by the fractions below)
    images: int = 3000  # number of still images for the image-caption set
    seed: int = 0
    frames: int = 12  # rendered frames per clip (shapes kind)
    scenes_min: int = 2  # scenes kind: scenes per clip, inclusive range
    scenes_max: int = 4
    frames_per_scene: int = 6  # scenes kind: rendered frames per scene (a clip has scenes x this many)
    small_subject_p: float = 0.7  # scenes kind: probability that a scene's subject is small
    # scenes kind: "fine" (the first design: small subjects, brief events) or "bold" (every scene readable
    # from one frame, .bold; the still images are then bold scenes with the same captions)
    scene_style: str = "fine"
    fps: int = 10
    sizes: tuple[str, ...] = ("64x64", "96x96", "96x64")  # WxH, even numbers (yuv420p)
    captions_per_video: int = 5
    captions_per_image: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    image_val_fraction: float = 0.05
    formats: tuple[str, ...] = ("mp4", "webm", "avi", "mkv")  # containers to cycle through
    workers: int = -1  # processes; -1 = min(4, CPUs) for >= 64 clips, else in-process

    def parsed_sizes(self) -> list[tuple[int, int]]:
        out = []
        for s in self.sizes:
            try:
                w, h = (int(v) for v in str(s).lower().split("x"))
            except ValueError:
                raise ConfigError(f"synth size {s!r} must look like WxH, e.g. 64x64") from None
            if w < 16 or h < 16 or w % 2 or h % 2:
                raise ConfigError(f"synth size {s!r}: width and height must be even and >= 16")
            out.append((w, h))
        if not out:
            raise ConfigError("synth needs at least one size")
        return out

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"synth kind {self.kind!r} unknown; choose one of {KINDS}")
        if self.kind == "scenes":
            if not 1 <= self.scenes_min <= self.scenes_max:
                raise ConfigError(f"synth scenes per clip: need 1 <= min <= max, got {self.scenes_min}-{self.scenes_max}")
            if self.frames_per_scene < 3:
                raise ConfigError("synth --frames-per-scene must be >= 3")
            if self.scene_style not in STYLES:
                raise ConfigError(f"synth scene style {self.scene_style!r} unknown; choose one of {STYLES}")
            if not 0.0 <= self.small_subject_p <= 1.0:
                raise ConfigError("synth small_subject_p must lie in [0, 1]")
        if self.videos < 3:
            raise ConfigError("synth needs at least 3 videos (train, val and test each get one)")
        if self.frames < 4:
            raise ConfigError("synth --frames must be >= 4")
        if self.images < 0 or self.captions_per_video < 1 or self.captions_per_image < 1:
            raise ConfigError("synth counts must be positive")
        known = {f[0] for f in VIDEO_FORMATS}
        bad = [f for f in self.formats if f not in known]
        if bad or not self.formats:
            raise ConfigError(f"synth formats {bad} unknown; choose from {sorted(known)}")
        self.parsed_sizes()


def split_of(index: int, cfg: SynthConfig) -> str:
    n = cfg.videos
    n_test = max(1, int(round(n * cfg.test_fraction)))
    n_val = max(1, int(round(n * cfg.val_fraction)))
    n_train = n - n_test - n_val
    if n_train < 1:
        raise ConfigError(f"synth: {n} videos leave no training video with these fractions")
    return "train" if index < n_train else "val" if index < n_train + n_val else "test"


def write_video(frames: np.ndarray, path: Path, fmt: str, codec: str, fps: int) -> None:
    """Encode uint8 ``[F, H, W, 3]`` frames to ``path`` (atomically), single-threaded for determinism."""
    import av

    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format=fmt)
        try:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "16", "preset": "veryfast", "threads": "1"}
            elif codec == "libvpx-vp9":
                stream.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8", "threads": "1", "row-mt": "0"}
            else:
                stream.bit_rate = 2_000_000
                stream.options = {"threads": "1"}
            for i, arr in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()


def _video_job(args) -> dict:
    index, cfg_dict, out_dir = args
    cfg = SynthConfig(**cfg_dict)
    rng = np.random.default_rng([cfg.seed, 0, index])
    sizes = cfg.parsed_sizes()
    width, height = sizes[int(rng.integers(len(sizes)))]
    ext = cfg.formats[int(rng.integers(len(cfg.formats)))]
    _, fmt, codec = next(f for f in VIDEO_FORMATS if f[0] == ext)
    video_id = f"video{index}"
    rel = f"videos/{video_id}.{ext}"
    record = {"video_id": video_id, "split": split_of(index, cfg), "file": rel, "width": width, "height": height,
              "codec": codec, "fps": cfg.fps}
    if cfg.kind == "scenes":
        clip = sample_clip(rng, (cfg.scenes_min, cfg.scenes_max), cfg.frames_per_scene, cfg.small_subject_p,
                           style=cfg.scene_style)
        captions = clip_captions(clip, cfg.captions_per_video, rng)
        write_video(render_clip(clip, width, height), Path(out_dir) / rel, fmt, codec, cfg.fps)
        return {**record, "frames": clip.num_frames, "clip": clip.to_dict(),
                "captions": [{"text": t, "kind": k, "scene": i} for t, k, i in captions]}
    scene = sample_scene(rng, cfg.frames)
    captions = make_captions(scene, cfg.captions_per_video, rng)
    write_video(render_frames(scene, width, height), Path(out_dir) / rel, fmt, codec, cfg.fps)
    return {**record, "frames": cfg.frames, "scene": scene.to_dict(),
            "captions": [{"text": t, "kind": k} for t, k in captions]}


def _image_job(args) -> dict:
    index, cfg_dict, out_dir = args
    from PIL import Image

    cfg = SynthConfig(**cfg_dict)
    rng = np.random.default_rng([cfg.seed, 1, index])
    sizes = cfg.parsed_sizes()
    width, height = sizes[int(rng.integers(len(sizes)))]
    if cfg.kind == "scenes" and cfg.scene_style == "bold":  # stills of the clips' scene style, same captions
        bold_scene = sample_bold_scene(rng, 1)
        image = render_bold(bold_scene, width, height)[0]
        captions = bold_captions(bold_scene, cfg.captions_per_image, rng)
    else:
        scene = sample_scene(rng, 1)
        n = int(rng.integers(1, 4))
        objects = scene.objects[:n]
        for o in objects:
            o.event, o.motion = None, "still"
        image = render_still(objects, scene.background, width, height)
        captions = image_captions(objects, cfg.captions_per_image, rng)
    image_id = f"img{index}"
    rel = f"images/{image_id}.png"
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    with atomic_path(Path(out_dir) / rel) as tmp:
        tmp.write_bytes(buf.getvalue())
    n_val = max(1, int(round(cfg.images * cfg.image_val_fraction))) if cfg.images >= 20 else 0
    split = "val" if index >= cfg.images - n_val else "train"
    return {"image_id": image_id, "file": rel, "split": split, "captions": captions}


def _run(jobs, fn, workers: int, desc: str, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="file", disable=not progress, leave=False)
    out: list[dict] = []
    try:
        if workers <= 1:
            for job in jobs:
                out.append(fn(job))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for res in pool.map(fn, jobs, chunksize=16):
                    out.append(res)
                    bar.update(1)
    finally:
        bar.close()
    return out


def generate(out_dir, cfg: SynthConfig | None = None, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the benchmark to ``out_dir``; return a summary (counts per split, files written)."""
    cfg = cfg or SynthConfig()
    cfg.validate()
    out = Path(out_dir)
    for sub in ("videos", "images"):
        folder = out / sub
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise ConfigError(f"{folder} is not empty; pass --overwrite to replace a previous synth output")
            shutil.rmtree(folder)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    if cfg.images:
        (out / "images").mkdir(parents=True, exist_ok=True)
    workers = cfg.workers
    if workers < 0:
        workers = min(4, os.cpu_count() or 1) if cfg.videos + cfg.images >= 64 else 0
    cfg_dict = asdict(cfg)
    videos = _run([(i, cfg_dict, str(out)) for i in range(cfg.videos)], _video_job, workers, "synth videos", progress)
    images = _run([(i, cfg_dict, str(out)) for i in range(cfg.images)], _image_job, workers, "synth images", progress)
    _write_annotations(out, cfg, videos, images)
    summary = {
        "out_dir": str(out),
        "videos": {s: sum(v["split"] == s for v in videos) for s in ("train", "val", "test")},
        "captions": {s: sum(len(v["captions"]) for v in videos if v["split"] == s) for s in ("train", "val", "test")},
        "images": {s: sum(im["split"] == s for im in images) for s in ("train", "val")},
        "image_captions": sum(len(im["captions"]) for im in images),
        "containers": {ext: sum(v["file"].endswith("." + ext) for v in videos) for ext in cfg.formats},
    }
    return summary


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_annotations(out: Path, cfg: SynthConfig, videos: list[dict], images: list[dict]) -> None:
    official = {"train": "train", "val": "validate", "test": "test"}
    sentences, sen_id = [], 0
    for v in videos:
        for c in v["captions"]:
            sentences.append({"caption": c["text"], "video_id": v["video_id"], "sen_id": sen_id})
            sen_id += 1
    data = {
        "info": {"description": "hybridtower synthetic benchmark", "generator_version": GENERATOR_VERSION, "seed": cfg.seed},
        "videos": [
            {
                "video_id": v["video_id"],
                "id": i,
                "split": official[v["split"]],
                "category": 0,
                "url": f"synthetic://{cfg.seed}/{v['video_id']}",
                "start time": 0.0,
                "end time": round(v["frames"] / v["fps"], 3),
            }
            for i, v in enumerate(videos)
        ],
        "sentences": sentences,
    }
    atomic_write_text(out / "MSRVTT_data.json", json.dumps(data) + "\n")
    train_ids = [v["video_id"] for v in videos if v["split"] == "train"]
    atomic_write_text(out / "MSRVTT_train.9k.csv", _csv_text(["video_id"], [[i] for i in train_ids]))
    n7 = max(1, (len(train_ids) * 7) // 9)
    atomic_write_text(out / "MSRVTT_train.7k.csv", _csv_text(["video_id"], [[i] for i in train_ids[:n7]]))
    test = [v for v in videos if v["split"] == "test"]
    rows = [[f"ret{k}", v["video_id"].replace("video", "msr"), v["video_id"], v["captions"][0]["text"]] for k, v in enumerate(test)]
    atomic_write_text(out / "MSRVTT_JSFUSION_test.csv", _csv_text(["key", "vid_key", "video_id", "sentence"], rows))
    lines = [
        json.dumps({"video": v["file"], "video_id": v["video_id"], "caption": c["text"], "split": v["split"], "kind": c["kind"],
                    **({"scene": c["scene"]} if "scene" in c else {})})
        for v in videos
        for c in v["captions"]
    ]
    atomic_write_text(out / "captions.jsonl", "\n".join(lines) + "\n")
    if images:
        lines = [
            json.dumps({"image": im["file"], "video_id": im["image_id"], "caption": c, "split": im["split"]})
            for im in images
            for c in im["captions"]
        ]
        atomic_write_text(out / "images.jsonl", "\n".join(lines) + "\n")
    atomic_write_json(out / "synth_meta.json", {"config": asdict(cfg), "generator_version": GENERATOR_VERSION, "videos": videos})
    atomic_write_text(out / "README.md", _README.format(seed=cfg.seed, n=len(videos), m=len(images)))


_README = """# hybridtower synthetic benchmark (seed {seed}, {n} videos, {m} images)

Generated by `hybridtower synth`. Read it with any of:

    hybridtower data inspect --data msrvtt:THIS_DIR            # splits train-9k, train-7k, val, test-1ka, test-3k
    hybridtower data inspect --data jsonl:THIS_DIR/captions.jsonl   # splits train, val, test
    hybridtower data inspect --data images:THIS_DIR/images.jsonl    # image-caption pairs (train, val)

- `videos/`: the clips (mp4/h264, webm/vp9, avi/mpeg4, mkv/h264; several frame sizes).
- `MSRVTT_*`: the MSRVTT / CLIP4Clip layout. `train-9k` = train split (validation held out);
  `val` = MSRVTT_data.json split "validate"; `test-3k` = every test caption; `test-1ka` = first
  caption per test video.
- `captions.jsonl`: the same pairs, one line per caption, with `split` and caption `kind`
  (event / event_motion / context / motion).
- `images/` + `images.jsonl`: still frames with static captions, for pretraining a tiny CLIP.
- `synth_meta.json`: the scene of every clip (objects, motions, events and their frames); for the
  `scenes` kind every clip's scenes (`clip.scenes`) and each caption's scene index.
"""
