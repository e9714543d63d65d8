import numpy as np
import pytest
import torch

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
