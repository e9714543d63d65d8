"""FLOP counting: the counter agrees with hand counts (2 FLOPs per multiply-add, matmuls only)."""

import pytest
import torch
from torch import nn

from hybridtower.analysis.flops import count_flops
from hybridtower.analysis.xpool_fast import FoldedXPool
from hybridtower.models.config import FusionConfig
from hybridtower.models.fusion import XPoolFusion


@pytest.mark.parametrize("heads", [1, 2])
def test_fusion_diagonal_matches_hand_count(heads):
    b, n, d = 3, 5, 16
    f = XPoolFusion(d, FusionConfig(num_heads=heads)).eval()
    got = count_flops(lambda: f(torch.randn(b, d), torch.randn(b, n, d)))
    # per video: q_proj D^2, k_proj and v_proj n*D^2 each, logits n*D, pooling n*D, out_proj D^2, linear_proj D^2
    macs = b * (d * d + 2 * n * d * d + n * d + n * d + d * d + d * d)
    assert got.total == 2 * macs


@pytest.mark.parametrize("heads", [1, 4])
def test_fusion_all_pairs_matches_hand_count(heads):
    nq, nv, n, d = 2, 7, 5, 16
    f = XPoolFusion(d, FusionConfig(num_heads=heads)).eval()
    got = count_flops(lambda: f.forward_pairs(torch.randn(nq, d), torch.randn(nv, n, d)))
    # q_proj once per query, K/V once per video, then per pair: logits, pooling, out_proj, linear_proj
    macs = nq * d * d + 2 * nv * n * d * d + nq * nv * (2 * n * d + 2 * d * d)
    assert got.total == 2 * macs


def test_dot_product_matches_hand_count(tiny_models):
    model = tiny_models["pig"]
    d = model.embed_dim
    text, video = torch.randn(3, d), torch.randn(50, d)
    assert count_flops(lambda: model.score(text, video)).total == 2 * 3 * 50 * d


@pytest.mark.parametrize("heads", [1, 2])
def test_folded_xpool_matches_hand_count(heads):
    nq, nv, t, d = 2, 9, 6, 16
    fx = FoldedXPool(XPoolFusion(d, FusionConfig(num_heads=heads)).eval())
    query = fx.prepare_query(torch.randn(nq, d))
    per_pair = 2 * t * d * heads + heads * d * d + d * d + d  # logits, pooling, folded Wo.Wv, Wl, cosine
    assert count_flops(lambda: fx.score_chunk(query, torch.randn(nv, t, d))).total == 2 * nq * nv * per_pair
    assert count_flops(lambda: fx.prepare_query(torch.randn(nq, d))).total == 2 * nq * 2 * d * d


def test_attention_is_counted_in_eval_under_no_grad():
    """nn.MultiheadAttention's eval fast path is invisible to a plain FlopCounterMode; ours sees it."""
    n, d = 10, 32
    mha = nn.MultiheadAttention(d, 4, batch_first=True).eval()
    x = torch.randn(1, n, d)
    got = count_flops(lambda: mha(x, x, x, need_weights=False))
    macs = 3 * n * d * d + n * n * d + n * n * d + n * d * d  # in-proj, QK^T, AV, out-proj
    assert got.total == 2 * macs
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


def _vit_flops(image, patch, width, layers, embed_dim):
    p = (image // patch) ** 2
    n = p + 1
    conv = p * 3 * patch * patch * width
    block = n * (4 * width * width + 8 * width * width) + 2 * n * n * width
    return 2 * (conv + layers * block + embed_dim * width)


def test_tiny_image_encoder_matches_hand_count(tiny_models):
    visual = tiny_models["meanp"].video_encoder.visual
    got = count_flops(lambda: visual(torch.zeros(1, 3, 64, 64)))
    assert got.total == _vit_flops(64, 16, 128, 3, 128)


def test_vit_b_32_image_flops_match_published():
    import open_clip

    # counted on the meta device: shapes only, no weights or arithmetic, the same operator calls
    with torch.device("meta"):
        clip = open_clip.CLIP(**open_clip.get_model_config("ViT-B-32"), quick_gelu=True)
    got = count_flops(lambda: clip.visual(torch.zeros(1, 3, 224, 224, device="meta")))
    assert got.total == _vit_flops(224, 32, 768, 12, 512)
    assert abs(got.total / 1e9 - 8.8) < 0.05  # the published ~4.4 GMACs = 8.8 GFLOPs
