import numpy as np
import pytest
import torch

from hybridtower.data.video.transforms import OPENAI_CLIP_MEAN as OPENAI_MEAN
from hybridtower.data.video.transforms import OPENAI_CLIP_STD as OPENAI_STD
from hybridtower.data.video.transforms import PreprocessConfig, preprocess_frames


@pytest.mark.parametrize("mode", ["squash", "shortest"])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear", "nearest"])
def test_chunked_preprocessing_equals_whole_clip(mode, interp):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 48, 80, 3), dtype=np.uint8)
    cfg = PreprocessConfig(image_size=32, resize_mode=mode, interpolation=interp)
    one = preprocess_frames(frames, cfg, chunk=1)
    whole = preprocess_frames(frames, cfg, chunk=100)
    three = preprocess_frames(frames, cfg, chunk=3)
    assert one.shape == (7, 3, 32, 32) and one.dtype == torch.float32
    torch.testing.assert_close(one, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(three, whole, rtol=0, atol=1e-6)


def test_normalisation_and_no_resize_path():
    frames = np.full((2, 16, 16, 3), 255, dtype=np.uint8)
    cfg = PreprocessConfig(image_size=16)
    out = preprocess_frames(frames, cfg)
    expected = (1.0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(out[1, :, 5, 5], expected)
    assert preprocess_frames(frames[0], cfg).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError):
        preprocess_frames(np.zeros((2, 16, 16), dtype=np.uint8), cfg)


# --- resize_mode="longest": open_clip's ResizeKeepRatio(longest=1) + CenterCropOrPad ----------------------

def _smooth_frame(h: int, w: int, seed: int) -> np.ndarray:
    """A frame with gradients and a few blobs (no pixel noise, so interpolation differences stay small)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(0.5, 3.0, size=3)
        img[..., c] = 0.5 + 0.45 * np.sin(a * np.pi * yy / h + p) * np.cos(b * np.pi * xx / w)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def _open_clip_longest(frame: np.ndarray, size: int, fill: int, interpolation: str = "bicubic"):
    open_clip = pytest.importorskip("open_clip")
    from PIL import Image

    tf = open_clip.image_transform(size, is_train=False, resize_mode="longest", fill_color=fill,
                                   interpolation=interpolation)
    return tf(Image.fromarray(frame))


@pytest.mark.parametrize("hw", [(48, 80), (90, 36), (61, 97), (40, 40), (17, 120)])
@pytest.mark.parametrize("fill,interp", [(0, "bicubic"), (200, "bicubic"), (90, "bilinear")])
def test_longest_matches_open_clip(hw, fill, interp):
    h, w = hw
    s = 32
    frame = _smooth_frame(h, w, seed=h * 1000 + w)
    ref = _open_clip_longest(frame, s, fill, interp)
    cfg = PreprocessConfig(image_size=s, resize_mode="longest", fill=fill, interpolation=interp)
    ours = preprocess_frames(frame[None], cfg)[0]
    assert ours.shape == ref.shape == (3, s, s)

    # exact geometry: the rows / columns that are all padding are the same ones in both
    pad_value = (fill / 255.0 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    def pad_mask(x):
        return (x - pad_value.view(3, 1, 1)).abs().amax(0) < 1e-5
    ours_pad, ref_pad = pad_mask(ours), pad_mask(ref)
    rows_ours, rows_ref = ours_pad.all(1), ref_pad.all(1)
    cols_ours, cols_ref = ours_pad.all(0), ref_pad.all(0)
    assert torch.equal(rows_ours, rows_ref) and torch.equal(cols_ours, cols_ref)
    # the padding lies where "long side = s, centred, odd pixel at the bottom/right" puts it
    ratio = max(h / s, w / s)
    nh, nw = round(h / ratio), round(w / ratio)
    top, left = (s - nh) // 2, (s - nw) // 2
    expected_rows = torch.ones(s, dtype=torch.bool)
    expected_rows[top : top + nh] = False
    expected_cols = torch.ones(s, dtype=torch.bool)
    expected_cols[left : left + nw] = False
    assert torch.equal(rows_ours, expected_rows) and torch.equal(cols_ours, expected_cols)
    assert max(nh, nw) == s

    # the content: equal within interpolation tolerance (PIL works on uint8, torch in float)
    diff = (ours - ref).abs()
    assert diff.mean() < 0.01, float(diff.mean())
    assert diff.max() < 0.05, float(diff.max())  # measured: mean <= 0.003, max <= 0.015


def test_longest_keeps_the_whole_frame_and_differs_from_shortest():
    """A bright stripe at the frame's far left survives "longest" (padding) but not "shortest" (crop)."""
    frame = np.zeros((40, 120, 3), dtype=np.uint8)
    frame[:, :6] = 255
    longest = preprocess_frames(frame, PreprocessConfig(image_size=30, resize_mode="longest"))[0]
    shortest = preprocess_frames(frame, PreprocessConfig(image_size=30, resize_mode="shortest"))[0]
    bright = (1.0 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    assert (longest[:, 10:20, 0] - bright.view(3, 1)).abs().max() < 0.1  # the stripe, inside the picture rows
    assert (shortest - bright.view(3, 1, 1)).abs().amin() > 1.0  # cropped away entirely
    # 40 x 120 -> 10 x 30: ten picture rows, padded 10 above and 10 below
    black = (0.0 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    torch.testing.assert_close(longest[:, :10, :], black.view(3, 1, 1).expand(3, 10, 30), rtol=0, atol=1e-6)
    torch.testing.assert_close(longest[:, 20:, :], black.view(3, 1, 1).expand(3, 10, 30), rtol=0, atol=1e-6)


def test_longest_chunking_and_config_checks():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(5, 30, 70, 3), dtype=np.uint8)
    cfg = PreprocessConfig(image_size=24, resize_mode="longest", fill=17)
    torch.testing.assert_close(preprocess_frames(frames, cfg, chunk=2), preprocess_frames(frames, cfg, chunk=9),
                               rtol=0, atol=1e-6)
    from hybridtower.core.errors import ConfigError

    for bad in (-1, 256, 1.5, True):
        with pytest.raises(ConfigError):
            PreprocessConfig(resize_mode="longest", fill=bad)
    with pytest.raises(ConfigError):
        PreprocessConfig(resize_mode="longer")
    cfg = PreprocessConfig.from_open_clip({"size": (64, 64), "resize_mode": "longest", "fill_color": 9,
                                           "interpolation": "bilinear"})
    assert (cfg.image_size, cfg.resize_mode, cfg.fill, cfg.interpolation) == (64, "longest", 9, "bilinear")
    with pytest.raises(ConfigError):
        PreprocessConfig.from_open_clip({"size": (64, 96)})


def test_preprocess_from_dict_carries_the_padding_fill():
    from hybridtower.encode import preprocess_from_dict

    base = {"image_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize_mode": "longest"}
    assert preprocess_from_dict(base).fill == 0
    assert preprocess_from_dict(dict(base, fill=128)).fill == 128


# --- resize_mode="shortest" of frames of extreme aspect: only the centre that the crop keeps is resized ----

def _full_shortest(frames: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """The plain "shortest" path (short side to S over the whole frame, then the centre S x S), written out
    here as the reference: at an extreme aspect it makes the huge float copy the library avoids."""
    s, (h, w) = cfg.image_size, frames.shape[1:3]
    scale = s / min(h, w)
    size = (max(s, round(h * scale)), max(s, round(w * scale)))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    kw = {} if cfg.interpolation == "nearest" else {"align_corners": False, "antialias": True}
    if (h, w) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode=cfg.interpolation, **kw)
    top, left = (size[0] - s) // 2, (size[1] - s) // 2
    x = x[..., top:top + s, left:left + s].clamp(0.0, 1.0)
    return (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)


def _long_smooth(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth content that varies along the long side on the scale of the short side (what the crop sees)."""
    rng = np.random.default_rng(seed)
    short = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) / short
    img = np.stack([0.5 + 0.4 * np.sin(rng.uniform(1, 3) * (xx + yy) + rng.uniform(0, 6)) for _ in range(3)], -1)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("hw", [(48, 80), (80, 48), (10, 80), (80, 10), (9, 70), (33, 33), (5, 40), (400, 50)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear", "nearest"])
def test_shortest_up_to_max_aspect_is_bit_identical_to_the_full_resize(hw, interp):
    from hybridtower.data.video.transforms import MAX_ASPECT

    assert max(hw) <= MAX_ASPECT * min(hw)
    frames = np.random.default_rng(hw[0] * 1000 + hw[1]).integers(0, 256, size=(3, *hw, 3), dtype=np.uint8)
    for s in (16, 24):  # up- and downscaling
        cfg = PreprocessConfig(image_size=s, resize_mode="shortest", interpolation=interp)
        assert torch.equal(preprocess_frames(frames, cfg), _full_shortest(frames, cfg))


@pytest.mark.parametrize("hw, s", [((30, 400), 16), ((400, 30), 16), ((8, 201), 16), ((3, 300), 32),
                                   ((100, 2000), 24), ((7, 999), 13), ((2, 3000), 20), ((1500, 4), 12)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear", "nearest"])
def test_shortest_beyond_max_aspect_keeps_the_centre(hw, s, interp):
    """Same output as the full resize up to where the crop lands (at most half an output pixel off; with
    "nearest" that can pick the neighbouring input pixel): measured max <= 0.04 (nearest 0.15), mean <= 0.02
    on the 0..1 scale, half of the shapes exact."""
    frames = _long_smooth(*hw, seed=hw[0] + hw[1])[None]
    cfg = PreprocessConfig(image_size=s, resize_mode="shortest", interpolation=interp, mean=(0, 0, 0), std=(1, 1, 1))
    ours, ref = preprocess_frames(frames, cfg), _full_shortest(frames, cfg)
    assert ours.shape == ref.shape == (1, 3, s, s)
    diff = (ours - ref).abs()
    bound = 0.2 if interp == "nearest" else 0.06
    assert float(diff.max()) < bound and float(diff.mean()) < 0.03, (float(diff.max()), float(diff.mean()))


def test_shortest_of_a_60000_x_2_frame_resizes_only_its_centre(monkeypatch):
    """A 60000 x 2 stream at S = 224 was resized to 224 x 6.7M floats per frame (74 GB a 4-frame chunk)."""
    import torch.nn.functional as F

    s, chunk, aspect = 224, 4, 8  # what the resize may see: the frame's centre, 8 x its short side
    seen = []
    interpolate = F.interpolate

    def bounded(x, size, **kw):  # checked before the call: a regression fails here, it does not allocate
        seen.append((x.numel(), x.shape[0] * x.shape[1] * size[0] * size[1]))
        assert seen[-1][0] <= chunk * 3 * 2 * 2 * aspect and seen[-1][1] <= chunk * 3 * s * s * aspect, seen
        return interpolate(x, size=size, **kw)

    monkeypatch.setattr(F, "interpolate", bounded)
    frames = np.zeros((4, 2, 60000, 3), np.uint8)
    frames[:, :, 29990:30010] = 200  # only the centre (what the crop keeps) is bright
    cfg = PreprocessConfig(image_size=s, resize_mode="shortest", mean=(0, 0, 0), std=(1, 1, 1))
    out = preprocess_frames(frames, cfg, chunk=chunk)
    assert out.shape == (4, 3, s, s) and seen
    torch.testing.assert_close(out, torch.full_like(out, 200 / 255), rtol=0, atol=1e-5)
    tall = preprocess_frames(frames.transpose(0, 2, 1, 3), cfg, chunk=chunk)  # 60000 x 2 the other way round
    torch.testing.assert_close(tall, out, rtol=0, atol=1e-5)
