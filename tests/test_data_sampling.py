import random

import pytest

from hybridtower.core.errors import ConfigError
from hybridtower.data.video.sampling import sample_indices


def test_uniform_is_segment_middles():
    assert sample_indices(120, 12, "uniform") == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 105, 115]
    assert sample_indices(12, 12, "uniform") == list(range(12))


def test_linspace_includes_both_ends():
    idx = sample_indices(100, 12, "linspace")
    assert idx[0] == 0 and idx[-1] == 99 and len(idx) == 12
    assert idx == sorted(idx)


@pytest.mark.parametrize("mode", ["uniform", "linspace", "jitter", "random"])
def test_short_video_repeats_frames(mode):
    idx = sample_indices(5, 12, mode, random.Random(1))
    assert len(idx) == 12
    assert idx == sorted(idx)
    assert set(idx) <= set(range(5))
    assert len(set(idx)) >= 4  # frames are repeated, not dropped wholesale


@pytest.mark.parametrize("mode", ["uniform", "linspace", "jitter", "random"])
def test_single_frame_video(mode):
    assert sample_indices(1, 12, mode, random.Random(0)) == [0] * 12


def test_jitter_follows_pig_train_rule():
    n, t = 1000, 12
    interval = n // (t - 1)
    starts, ends = set(), set()
    for seed in range(200):
        idx = sample_indices(n, t, "jitter", random.Random(seed))
        assert len(idx) == t and idx == sorted(idx)
        assert 0 <= idx[0] <= interval
        assert n - 1 - interval <= idx[-1] <= n - 1
        starts.add(idx[0])
        ends.add(idx[-1])
    assert len(starts) > 20 and len(ends) > 20  # really jittered


def test_random_mode_stays_in_segments_and_is_seeded():
    n, t = 240, 12
    for seed in range(50):
        idx = sample_indices(n, t, "random", random.Random(seed))
        for k, i in enumerate(idx):
            assert k * n // t <= i < (k + 1) * n // t
    assert sample_indices(n, t, "random", random.Random(3)) == sample_indices(n, t, "random", random.Random(3))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown frame sampling mode"):
        sample_indices(10, 4, "middle")
    with pytest.raises(ValueError):
        sample_indices(0, 4)
