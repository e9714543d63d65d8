"""Torch datasets and the skipping collate, with DataLoader worker processes."""

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hybridtower.core.errors import ConfigError
from hybridtower.data.annotations import load_split
from hybridtower.data.datasets import ImageCaptions, TrainPairs, VideoFrames, collate_skip_errors
from hybridtower.data.synthetic import SynthConfig, generate
from hybridtower.data.video import PreprocessConfig, preprocess_frames

PRE = PreprocessConfig(image_size=32)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    generate(out, SynthConfig(seed=3, videos=10, images=6, workers=0), progress=False)
    return out


def test_preprocess_squash_and_normalise():
    frames = np.full((2, 48, 80, 3), 255, np.uint8)
    x = preprocess_frames(frames, PreprocessConfig(image_size=24))
    assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32
    expected = (1 - torch.tensor(PreprocessConfig().mean)) / torch.tensor(PreprocessConfig().std)
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-4)
    # shortest-side mode keeps the aspect ratio and crops the centre: a left-edge stripe disappears
    frames = np.zeros((1, 40, 80, 3), np.uint8)
    frames[:, :, :10] = 255
    sq = preprocess_frames(frames, PreprocessConfig(image_size=20, resize_mode="squash", mean=(0, 0, 0), std=(1, 1, 1)))
    cr = preprocess_frames(frames, PreprocessConfig(image_size=20, resize_mode="shortest", mean=(0, 0, 0), std=(1, 1, 1)))
    assert sq[0, 0, :, 0].mean() > 0.9 and cr[0, 0, :, 0].mean() < 0.05
    with pytest.raises(ConfigError):
        PreprocessConfig(resize_mode="longer")
    oc = PreprocessConfig.from_open_clip({"size": (64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "shortest"}, resize_mode="squash")
    assert oc.image_size == 64 and oc.mean == (0.5, 0.5, 0.5) and oc.resize_mode == "squash"


def test_train_pairs_one_item_per_video_with_workers(synth):
    split = load_split(f"msrvtt:{synth}", "train-9k")
    ds = TrainPairs(split, num_frames=4, preprocess=PRE, seed=1)
    assert len(ds) == len(split.videos)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skip_errors)
    batches = list(loader)
    seen = torch.cat([b["video_index"] for b in batches]).tolist()
    assert sorted(seen) == list(range(len(split.videos)))
    b = batches[0]
    assert b["frames"].shape == (3, 4, 3, 32, 32) and len(b["texts"]) == 3 and b["errors"] == []
    caps = split.captions_by_video()
    for vi, text in zip(b["video_index"].tolist(), b["texts"]):
        assert text in caps[split.videos[vi].video_id]
    # the same across worker counts (seeded per item), and new draws in a new epoch
    again = [ds[i]["text"] for i in range(len(ds))]
    assert again == [t for bb in batches for t in bb["texts"]]
    ds.set_epoch(1)
    assert [ds[i]["text"] for i in range(len(ds))] != again  # 5 captions per video: a new draw


def test_video_frames_and_errors_are_collected_not_raised(synth, tmp_path):
    shutil.copytree(synth, tmp_path / "copy")  # this test breaks files
    split = load_split(f"msrvtt:{tmp_path / 'copy'}", "train-7k")
    assert len(split.videos) >= 4
    split.videos[0].path.write_bytes(b"")  # broken file
    split.videos[1].path = None  # missing file
    ds = VideoFrames(split, num_frames=3, preprocess=PRE)
    loader = DataLoader(ds, batch_size=len(ds), num_workers=2, collate_fn=collate_skip_errors)
    (batch,) = list(loader)
    assert batch["video_index"].tolist() == list(range(2, len(split.videos)))
    assert batch["frames"].shape[1:] == (3, 3, 32, 32)
    errs = {e["video_index"]: e["error"] for e in batch["errors"]}
    assert "empty" in errs[0] and "not found" in errs[1]
    assert collate_skip_errors([ds[0]])["frames"] is None
    a, b = ds[2]["frames"], ds[2]["frames"]
    assert torch.equal(a, b)  # deterministic


def test_image_captions_from_images_and_from_video_frames(synth):
    imgs = load_split(f"images:{synth / 'images.jsonl'}", "train")
    ds = ImageCaptions(imgs, preprocess=PRE)
    assert len(ds) == len(imgs.captions)
    item = ds[0]
    assert item["frames"].shape == (1, 3, 32, 32) and isinstance(item["text"], str)
    vids = load_split(f"jsonl:{synth / 'captions.jsonl'}", "train")
    dv = ImageCaptions(vids, preprocess=PRE, seed=0)
    assert len(dv) == len(vids.captions)
    loader = DataLoader(dv, batch_size=8, num_workers=2, collate_fn=collate_skip_errors)
    b = next(iter(loader))
    assert b["frames"].shape == (8, 1, 3, 32, 32) and len(b["texts"]) == 8
