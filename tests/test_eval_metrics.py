"""Retrieval metrics against brute-force references: ties, multi-caption groups, absent videos, DSL."""

import numpy as np
import pytest
import torch

from hybridtower.eval.metrics import dsl_scores, ranks_t2v, ranks_v2t, retrieval_metrics


# ----- brute-force references (deliberately written differently from the implementation) -----
def brute_t2v(s, gt, absent=None):
    nt, nv = s.shape
    absent = np.zeros(nv, bool) if absent is None else np.asarray(absent)
    present = [j for j in range(nv) if not absent[j]]
    out = []
    for i in range(nt):
        if absent[gt[i]]:
            out.append(len(present) + 1)
            continue
        out.append(1 + sum(1 for j in present if j != gt[i] and s[i, j] >= s[i, gt[i]]))
    return np.array(out)


def brute_v2t_group(s, gt, absent=None):
    """CLIP4Clip/X-Pool 'Deferf': regroup rows per video into [Nv, max_caps, Nv] padded with -inf,
    max over the caption axis, transpose, then rank each row's diagonal counting ties against it."""
    nt, nv = s.shape
    absent = np.zeros(nv, bool) if absent is None else np.asarray(absent)
    groups = [[i for i in range(nt) if gt[i] == v] for v in range(nv)]
    width = max(len(g) for g in groups)
    cube = np.full((nv, width, nv), -np.inf)
    for v, g in enumerate(groups):
        for k, i in enumerate(g):
            cube[v, k] = s[i]
    vt = cube.max(axis=1).T  # [video, caption group]
    out = []
    for v in range(nv):
        if absent[v]:
            out.append(nv + 1)
        else:
            out.append(1 + sum(1 for g in range(nv) if g != v and vt[v, g] >= vt[v, v]))
    return np.array(out)


def brute_v2t_caption(s, gt, absent=None):
    """COCO style: the best (smallest) rank any own caption gets among all captions."""
    nt, nv = s.shape
    absent = np.zeros(nv, bool) if absent is None else np.asarray(absent)
    out = []
    for v in range(nv):
        if absent[v]:
            out.append(nt + 1)
            continue
        col = s[:, v]
        others = [k for k in range(nt) if gt[k] != v]
        out.append(min(1 + sum(1 for k in others if col[k] >= col[i]) for i in range(nt) if gt[i] == v))
    return np.array(out)


def random_case(seed, nv, caps_per_video, ties):
    rng = np.random.default_rng(seed)
    gt = np.concatenate([[v] * rng.integers(1, caps_per_video + 1) for v in range(nv)])
    rng.shuffle(gt)
    if ties:  # few distinct values: exact ties everywhere, including with the ground truth
        s = rng.integers(0, 4, size=(len(gt), nv)).astype(np.float32)
    else:
        s = rng.standard_normal((len(gt), nv)).astype(np.float32)
    return s, gt


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_ranks_match_brute_force(seed, ties):
    s, gt = random_case(seed, nv=7 + seed, caps_per_video=1 + seed % 4, ties=ties)
    np.testing.assert_array_equal(ranks_t2v(s, gt), brute_t2v(s, gt))
    np.testing.assert_array_equal(ranks_v2t(s, gt), brute_v2t_group(s, gt))
    np.testing.assert_array_equal(ranks_v2t(s, gt, mode="caption"), brute_v2t_caption(s, gt))
    # torch input gives the same answer as numpy input
    np.testing.assert_array_equal(ranks_t2v(torch.from_numpy(s), torch.from_numpy(gt)), brute_t2v(s, gt))


@pytest.mark.parametrize("seed", range(4))
def test_absent_videos_are_failures(seed):
    s, gt = random_case(100 + seed, nv=9, caps_per_video=3, ties=seed % 2 == 1)
    absent = np.zeros(9, bool)
    absent[[1, 5]] = True
    poisoned = s.copy()
    poisoned[:, absent] = np.nan  # what the runner stores there: must be ignored
    r = ranks_t2v(poisoned, gt, absent=absent)
    np.testing.assert_array_equal(r, brute_t2v(s, gt, absent))
    assert (r[np.isin(gt, [1, 5])] == 7 + 1).all()
    np.testing.assert_array_equal(ranks_v2t(poisoned, gt, absent=absent), brute_v2t_group(s, gt, absent))
    np.testing.assert_array_equal(ranks_v2t(poisoned, gt, absent=absent, mode="caption"),
                                  brute_v2t_caption(s, gt, absent))


def test_hand_example_multi_caption_and_ties():
    # 3 videos; video 0 owns captions 0 and 1, video 1 owns caption 2, video 2 owns caption 3
    s = np.array([
        [0.5, 0.5, 0.1],  # caption 0: ties with video 1 -> rank 2 (a tie counts against the query)
        [0.2, 0.9, 0.3],  # caption 1: video 1 and 2 higher -> rank 3
        [0.4, 0.4, 0.4],  # caption 2: all equal -> rank 3 (the worst end of the tie range)
        [0.6, 0.0, 0.1],  # caption 3: video 0 higher -> rank 2
    ])
    gt = [0, 0, 1, 2]
    assert ranks_t2v(s, gt).tolist() == [2, 3, 3, 2]
    # v2t group: video 0 best own = 0.5; groups' best for video 0: g1 0.4, g2 0.6 -> rank 2
    # video 1 best own = 0.4; g0 best = 0.9 > 0.4, g2 = 0.0 -> rank 2
    # video 2 best own = 0.1; g0 best = 0.3 > 0.1, g1 = 0.4 > 0.1 -> rank 3
    assert ranks_v2t(s, gt).tolist() == [2, 2, 3]
    # v2t caption: video 0 best own 0.5: captions 2 (0.4) and 3 (0.6) -> only 3 higher -> rank 2;
    # video 1 best own 0.4; captions 0 (0.5) and 1 (0.9) higher -> rank 3;
    # video 2 best own 0.1: captions 1 (0.3), 2 (0.4) higher and caption 0 ties (0.1) -> rank 4
    assert ranks_v2t(s, gt, mode="caption").tolist() == [2, 3, 4]


def test_all_tied_scores_give_the_worst_rank():
    """A collapsed (constant-score) model must not look perfect: every query gets the worst rank."""
    s = np.zeros((6, 3))
    gt = [0, 0, 1, 1, 2, 2]
    assert ranks_t2v(s, gt).tolist() == [3] * 6
    assert ranks_v2t(s, gt).tolist() == [3] * 3
    assert ranks_v2t(s, gt, mode="caption").tolist() == [5] * 3
    assert retrieval_metrics(ranks_t2v(s, gt))["R@1"] == 0.0
    assert retrieval_metrics(ranks_t2v(np.zeros((1, 1)), [0]))["R@1"] == 100.0  # one candidate: nothing to tie


def test_retrieval_metrics_values():
    m = retrieval_metrics([1, 2, 5, 10, 11])
    assert m == {"R@1": 20.0, "R@5": 60.0, "R@10": 80.0, "MdR": 5.0, "MnR": 5.8}
    assert retrieval_metrics([1, 4])["MdR"] == 2.5
    with pytest.raises(ValueError):
        retrieval_metrics([])
    with pytest.raises(ValueError):
        retrieval_metrics([0, 1])


def test_input_validation():
    s = np.zeros((3, 2))
    with pytest.raises(ValueError, match="rows"):
        ranks_t2v(s, [0, 1])
    with pytest.raises(ValueError, match="range"):
        ranks_t2v(s, [0, 1, 2])
    bad = s.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ranks_t2v(bad, [0, 1, 1])
    with pytest.raises(ValueError, match="own no caption"):
        ranks_v2t(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="mode"):
        ranks_v2t(s, [0, 1, 1], mode="best")


def test_dsl_formula_and_effect():
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, size=(5, 4))
    d = dsl_scores(s, temperature=100.0).numpy()
    w = np.exp(100 * s) / np.exp(100 * s).sum(axis=0, keepdims=True)  # softmax over captions
    np.testing.assert_allclose(d, s * w, rtol=1e-10)
    d1 = dsl_scores(s, temperature=100.0, dim=1).numpy()
    w1 = np.exp(100 * s) / np.exp(100 * s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(d1, s * w1, rtol=1e-10)
    # a "hub" video that every caption likes: DSL demotes it for the caption that is not its own
    s = np.array([[0.9, 0.8], [0.95, 0.5]])
    gt = [1, 0]
    assert ranks_t2v(s, gt).tolist() == [2, 1]
    assert ranks_t2v(dsl_scores(s, temperature=10.0), gt).tolist() == [1, 1]
    # absent (NaN) columns stay NaN and do not enter the softmax
    s2 = np.array([[0.3, np.nan], [0.1, np.nan]])
    d2 = dsl_scores(s2, temperature=1.0).numpy()
    assert np.isnan(d2[:, 1]).all() and np.isfinite(d2[:, 0]).all()
