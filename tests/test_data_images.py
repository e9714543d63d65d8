import os

import numpy as np
import pytest
from blocking import within
from PIL import Image

from hybridtower.data.datasets import load_image
from hybridtower.data.video.decode import VideoDecodeError


def test_load_image_reads_a_regular_file(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), pixels)


def test_load_image_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "img.png")
    with pytest.raises(VideoDecodeError, match="FIFO"):
        within(5, load_image, tmp_path / "img.png")
    with pytest.raises(VideoDecodeError, match="does not exist"):
        load_image(tmp_path / "absent.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(VideoDecodeError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
