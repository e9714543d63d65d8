"""The video encoder's attention (fused ``scaled_dot_product_attention`` wherever no probabilities are
needed) equals the reference math: a dense masked softmax attention written out by hand, per block, with
the video-proxy-guided mask of ``vip_attention_mask``. Tokens, the ITS layer's global attention, the
stored vectors and every gradient are compared in fp32 (1e-5) for PIG, PIG-M and CLIP-ViP, with and
without frame CLS / temporal embedding / proxies, in train and eval mode, with gradient checkpointing.
The fused path must really be taken: a 5-D or masked call would fall back to the unfused math kernel."""

import math

import pytest
import torch
import torch.nn.functional as F

from hybridtower import hub
from hybridtower.models.video_encoder import VideoProxyEncoder, vip_attention_mask

from conftest import random_frames

ATOL = 1e-5


def reference_attention(enc, block, y, t, frame_len, need_probs):
    """The block's attention as dense masked softmax(q k^T / sqrt(d)) v, every probability materialised."""
    attn = block.attn
    b, n, w = y.shape
    h = attn.num_heads
    hd = w // h
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(b, n, h, hd).transpose(1, 2) for z in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
    allowed = vip_attention_mask(enc.num_global, t, frame_len, device=y.device)
    probs = logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # [B, H, N, N]
    out = (probs @ v).transpose(1, 2).reshape(b, n, w)
    out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    return out, (probs[:, :, : enc.num_global] if need_probs else None)


class ReferenceEncoder(VideoProxyEncoder):
    def _attention(self, block, y, t, frame_len, need_probs):
        return reference_attention(self, block, y, t, frame_len, need_probs)


def _pair(preset, overrides=()):
    torch.manual_seed(0)
    model = hub.create_model(preset, overrides=list(overrides))
    enc = model.video_encoder
    with torch.no_grad():  # non-trivial values for every added parameter
        if enc.temporal_embedding is not None:
            enc.temporal_embedding.normal_(std=0.2)
        if enc.frame_cls is not None:
            enc.frame_cls.add_(0.1 * torch.randn_like(enc.frame_cls))
    ref = ReferenceEncoder(enc.visual, enc.cfg)
    ref.load_state_dict(enc.state_dict())
    return model, enc, ref


VARIANTS = [
    ("pig-tiny", ()),
    ("pig-tiny", ("video.frame_cls=false",)),
    ("pig-tiny", ("video.temporal_embedding=false",)),
    ("pig-tiny", ("video.num_proxies=0",)),
    ("pig-tiny", ("video.frame_cls=false", "video.temporal_embedding=false", "video.num_proxies=0")),
    ("pig-m4-tiny", ()),
    ("clipvip-tiny", ()),
    ("clipvip-tiny", ("video.frame_cls=false", "video.num_proxies=0")),
]


@pytest.mark.parametrize("preset,overrides", VARIANTS, ids=[f"{p}{'+' if o else ''}{','.join(o)}" for p, o in VARIANTS])
@pytest.mark.parametrize("layer", [None, -1, 0])
def test_encoder_equals_reference_math(preset, overrides, layer):
    _, enc, ref = _pair(preset, overrides)
    frames = random_frames(2, 5, 64, seed=1)
    with torch.no_grad():
        got, want = enc.eval()(frames, attn_layer=layer), ref.eval()(frames, attn_layer=layer)
    assert got.tokens.shape == want.tokens.shape
    assert torch.allclose(got.tokens, want.tokens, atol=ATOL), (got.tokens - want.tokens).abs().max()
    if layer is None:
        assert got.global_attn is None and want.global_attn is None
    else:
        assert got.global_attn.shape == want.global_attn.shape
        assert torch.allclose(got.global_attn, want.global_attn, atol=ATOL)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("preset,overrides", [("pig-tiny", ()), ("pig-tiny", ("video.frame_cls=false", "video.num_proxies=0")),
                                              ("pig-m4-tiny", ()), ("clipvip-tiny", ())])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_equal_reference_in_train_mode(preset, overrides, checkpointing):
    model, enc, ref = _pair(preset, overrides)
    frames = random_frames(2, 4, 64, seed=2).requires_grad_(True)
    results = []
    for e in (enc, ref):
        e.train()
        e.grad_checkpointing = checkpointing
        e.zero_grad(set_to_none=True)
        frames.grad = None
        vt = e(frames, attn_layer=-1)
        w = torch.linspace(-1, 1, vt.tokens.numel()).view_as(vt.tokens)
        loss = (vt.tokens * w).sum() + (vt.global_attn[:, :, 0] ** 2).sum()  # ITS scores carry gradient too
        loss.backward()
        results.append((vt.tokens.detach(), _grads(e), frames.grad.clone()))
    (tok_a, g_a, f_a), (tok_b, g_b, f_b) = results
    assert torch.allclose(tok_a, tok_b, atol=ATOL)
    assert g_a.keys() == g_b.keys() and len(g_a) > 10
    for name in g_a:
        # a parameter's gradient sums over every token (ln_pre.bias: all B x N positions), and the two paths sum
        # in different orders: fp32 rounding grows with the gradient's size, so the tolerance scales with it
        # (a wrong mask or a missing term gives differences of the gradient's own order)
        atol = ATOL * max(1.0, float(g_b[name].abs().max()) if g_b[name].numel() else 0.0)
        assert torch.allclose(g_a[name], g_b[name], atol=atol, rtol=1e-4), (name, (g_a[name] - g_b[name]).abs().max())
    assert torch.allclose(f_a, f_b, atol=ATOL)


@pytest.mark.parametrize("preset", ["pig-tiny", "pig-m4-tiny", "clipvip-tiny"])
def test_stored_vectors_equal_reference(preset):
    """``encode_video`` (what an index stores) through the fused encoder and through the reference."""
    model, enc, ref = _pair(preset)
    model.eval()
    frames = random_frames(3, 6, 64, seed=4)
    with torch.no_grad():
        fast = model.encode_video(frames)
        model.video_encoder = ref.eval()
        slow = model.encode_video(frames)
    assert fast.shape == slow.shape
    assert torch.allclose(fast, slow, atol=ATOL), (fast - slow).abs().max()


def _kernel_counts(fn) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    math = "aten::_scaled_dot_product_attention_math"
    fused = [n for n in names if n.startswith("aten::_scaled_dot_product_") and n != math]  # flash / efficient kernels
    return {"fused": len(fused), "math": sum(n == math for n in names),
            "softmax": sum(n == "aten::_softmax" for n in names)}


@pytest.mark.parametrize("layer", [None, -1, 1])
def test_fused_kernel_is_taken_and_probabilities_only_at_the_its_layer(layer):
    torch.manual_seed(0)
    enc = hub.create_model("pig-tiny").video_encoder.eval()
    frames = random_frames(2, 4, 64)
    layers = enc.num_layers
    with torch.no_grad():
        counts = _kernel_counts(lambda: enc(frames, attn_layer=layer))
    probs_layers = 0 if layer is None else 1
    assert counts["math"] == 0, counts  # no unfused fallback anywhere
    assert counts["fused"] == 2 * layers - probs_layers, counts  # global + frame rows of every layer
    assert counts["softmax"] == probs_layers, counts  # a hand softmax only where probabilities are read


def test_reference_would_be_caught():
    """The comparison can fail: a mask that lets frames see each other changes the tokens beyond 1e-5."""
    _, enc, ref = _pair("pig-tiny")
    frames = random_frames(1, 3, 64, seed=5)

    class Leaky(ReferenceEncoder):
        def _attention(self, block, y, t, frame_len, need_probs):
            return reference_attention(self, block, y, 1, t * frame_len, need_probs)  # one big frame

    leaky = Leaky(enc.visual, enc.cfg)
    leaky.load_state_dict(enc.state_dict())
    with torch.no_grad():
        a, b = enc.eval()(frames).tokens, leaky.eval()(frames).tokens
    assert not torch.allclose(a, b, atol=ATOL)
