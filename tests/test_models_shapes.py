"""Shapes of every intermediate, the ViP sequence layout and attention pattern, ITS and the fusion."""

import math

import pytest
import torch
import torch.nn.functional as F

from hybridtower.models.config import FusionConfig
from hybridtower.models.fusion import XPoolFusion
from hybridtower.models.its import gather_tokens, reduce_heads, select_informative
from hybridtower.models.video_encoder import vip_attention_mask

from conftest import random_frames


def test_pig_tiny_intermediate_shapes(tiny_models):
    m = tiny_models["pig"]
    cfg = m.cfg
    b, t, s = 2, cfg.video.num_frames, 64
    p = (s // 16) ** 2  # tiny: 64 px, patch 16
    frames = random_frames(b, t, s)
    with torch.no_grad():
        out = m.video_features(frames)
    vt = out.tokens
    m_glob = 1 + cfg.video.num_proxies
    n = m_glob + t * (1 + p)
    d = m.embed_dim
    assert vt.tokens.shape == (b, n, d)
    assert vt.global_attn.shape == (b, m.video_encoder.heads, m_glob, n)
    assert torch.allclose(vt.global_attn.sum(-1), torch.ones(b, m.video_encoder.heads, m_glob), atol=1e-5)
    assert vt.global_tokens.shape == (b, m_glob, d)
    assert vt.frame_tokens.shape == (b, t, d)
    assert vt.patch_tokens.shape == (b, t * p, d)
    assert out.its_positions.shape == (b, cfg.its.k)
    gen_in = m.generator_inputs(vt, out.its_positions)
    assert gen_in.shape == (b, m_glob + t + cfg.its.k, d)
    seq = m.generator.build_sequence(gen_in)
    assert seq.shape == (b, m_glob + t + cfg.its.k + 2, m.text_encoder.width)
    assert out.pseudo_query.shape == (b, d)
    assert out.video.shape == (b, d)
    assert torch.allclose(out.video.norm(dim=-1), torch.ones(b), atol=1e-5)
    assert m.fusion_tokens(vt).shape == (b, m_glob + t, d)


def test_sequence_layout_positions(tiny_models):
    vt_enc = tiny_models["pig"].video_encoder
    with torch.no_grad():
        vt = vt_enc(random_frames(1, 3, 64))
    L = 1 + 16
    assert vt.frame_len == L and vt.num_global == 4 and vt.num_frames == 3
    assert vt.frame_cls_positions.tolist() == [4, 4 + L, 4 + 2 * L]
    expected_patches = [i for i in range(4 + 3 * L) if i >= 4 and (i - 4) % L != 0]
    assert vt.patch_positions.tolist() == expected_patches


def test_embedding_layout_matches_brute_force(tiny_models):
    """Each token of the input sequence is built from the documented sum of embeddings."""
    enc = tiny_models["pig"].video_encoder
    v = enc.visual
    with torch.no_grad():
        enc.temporal_embedding.normal_()  # non-zero so its placement is tested
        frames = random_frames(1, 3, 64)
        seq, t, L = enc.embed(frames)
        te = torch.nn.functional.interpolate(enc.temporal_embedding.transpose(1, 2), size=3, mode="linear",
                                             align_corners=False).transpose(1, 2)[0]
        pos = v.positional_embedding
        rows = [v.class_embedding + pos[0]] + [enc.proxy_tokens[i] + pos[0] for i in range(3)]
        for f in range(3):
            patches = v.conv1(frames[0, f : f + 1]).flatten(2)[0].t()  # [P, W]
            rows.append(enc.frame_cls + pos[0] + te[f])
            rows += [patches[i] + pos[1 + i] + te[f] for i in range(patches.shape[0])]
        brute = v.ln_pre(torch.stack(rows))
        enc.temporal_embedding.zero_()
    assert torch.allclose(seq[0], brute, atol=1e-5)


def test_attention_mask_brute_force():
    mglob, t, L = 4, 3, 5
    mask = vip_attention_mask(mglob, t, L)
    n = mglob + t * L
    for i in range(n):
        for j in range(n):
            if i < mglob or j < mglob:
                want = True
            else:
                want = (i - mglob) // L == (j - mglob) // L
            assert bool(mask[i, j]) == want, (i, j)


def test_blockwise_attention_matches_dense_reference(tiny_models):
    enc = tiny_models["pig"].video_encoder
    with torch.no_grad():
        enc.temporal_embedding.normal_(std=0.1)
        frames = random_frames(2, 5, 64, seed=3)
        fast = enc(frames).tokens
        dense = enc.dense_reference_forward(frames)
        enc.temporal_embedding.zero_()
    assert torch.allclose(fast, dense, atol=1e-5), (fast - dense).abs().max()


def test_frames_do_not_see_other_frames_directly(tiny_models):
    """Changing frame 2 changes frame 0's tokens only through the global tokens (layer >= 2)."""
    enc = tiny_models["pig"].video_encoder
    frames = random_frames(1, 3, 64)
    x, t, L = enc.embed(frames)
    block = enc.visual.transformer.resblocks[0]
    with torch.no_grad():
        out1, _ = enc._block(block, x, t, L, False)
        x2 = x.clone()
        x2[:, 4 + 2 * L :] += torch.randn_like(x2[:, 4 + 2 * L :])  # perturb frame 2 (last frame) only
        out2, _ = enc._block(block, x2, t, L, False)
    frame0 = slice(4, 4 + L)
    assert torch.allclose(out1[:, frame0], out2[:, frame0], atol=1e-6)  # one layer: no path from frame 2
    assert not torch.allclose(out1[:, :4], out2[:, :4])  # global tokens see everything


@pytest.mark.parametrize("how", ["max", "mean"])
def test_its_selects_exact_topk_with_ties(how):
    torch.manual_seed(0)
    mglob, t, L = 4, 3, 5
    n = mglob + t * L
    attn = torch.rand(2, 3, n)
    attn[:, :, :mglob] = 10.0  # globals and frame-CLS score highest but must never be picked
    fcls = torch.tensor([mglob + f * L for f in range(t)])
    attn[:, :, fcls] = 9.0
    attn[0, :, 10] = attn[0, :, 7] = 5.0  # a tie among patches
    scores = reduce_heads(attn, how)
    patch_pos = torch.tensor([i for i in range(n) if i >= mglob and (i - mglob) % L != 0])
    for k in (0, 1, 4, 7, 12, -1):
        got = select_informative(scores, patch_pos, k)
        kk = len(patch_pos) if k < 0 else min(k, len(patch_pos))
        for b in range(2):
            ranked = sorted(patch_pos.tolist(), key=lambda i: (-scores[b, i].item(), i))
            assert got[b].tolist() == ranked[:kk]
            assert not set(got[b].tolist()) & (set(range(mglob)) | set(fcls.tolist()))
    assert select_informative(scores, patch_pos, 2)[0].tolist() == [7, 10]  # tie -> lower position first
    tokens = torch.randn(2, n, 6)
    pos = select_informative(scores, patch_pos, 4)
    assert torch.equal(gather_tokens(tokens, pos)[1, 2], tokens[1, pos[1, 2]])


def test_pig_uses_its_on_video_cls_attention_of_last_layer(tiny_models):
    m = tiny_models["pig"]
    with torch.no_grad():
        out = m.video_features(random_frames(2, 8, 64, seed=5))
    scores = out.tokens.global_attn[:, :, 0].amax(dim=1)
    for b in range(2):
        ranked = sorted(out.tokens.patch_positions.tolist(), key=lambda i: (-scores[b, i].item(), i))
        assert out.its_positions[b].tolist() == ranked[: m.cfg.its.k]


def test_fusion_closed_form_at_init():
    torch.manual_seed(1)
    d, n, b = 32, 7, 3
    fusion = XPoolFusion(d, FusionConfig(num_heads=1, dropout=0.1)).eval()
    q, x = torch.randn(b, d), torch.randn(b, n, d)
    ln = lambda z: F.layer_norm(z, (d,))
    alpha = torch.softmax(torch.einsum("bnd,bd->bn", ln(x), ln(q)) / math.sqrt(d), dim=-1)
    # identity projections: a = LN2(sum_j alpha_j LN1(x_j)); v = LN3(a + I a) = LN3(2a) (= LN(a) up to LN eps)
    expected = ln(2 * ln(torch.einsum("bn,bnd->bd", alpha, ln(x))))
    with torch.no_grad():
        got = fusion(q, x)
        pairs = fusion.forward_pairs(q, x)
    assert torch.allclose(got, expected, atol=1e-5)
    for i in range(b):  # the pairwise path agrees with the diagonal path
        assert torch.allclose(pairs[i, i], got[i], atol=1e-5)
    for name, p in fusion.named_parameters():
        if name.endswith("proj.weight"):
            assert torch.equal(p, torch.eye(d))
        if name.endswith("proj.bias"):
            assert torch.equal(p, torch.zeros(d))


def test_tiny_video_encoder_handles_other_frame_counts(tiny_models):
    m = tiny_models["clipvip"]
    with torch.no_grad():
        assert m.encode_video(random_frames(1, 1, 64)).shape == (1, m.embed_dim)
        assert m.encode_video(random_frames(1, 12, 64)).shape == (1, m.embed_dim)
