"""Generator initialisation, query independence, gradients and stage freezing, losses, parameter counts."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from hybridtower import hub
from hybridtower.cli.main import main as cli_main
from hybridtower.models.generator import EOT_TOKEN_ID, SOT_TOKEN_ID
from hybridtower.models.losses import clamp_logit_scale_, reconstruction_loss, symmetric_infonce

from conftest import random_frames


def test_generator_starts_as_copy_of_text_tower_but_shares_no_storage():
    torch.manual_seed(0)
    m = hub.create_model("pig-tiny")
    text, gen = m.text_encoder, m.generator
    tsd, gsd = text.transformer.state_dict(), gen.transformer.state_dict()
    assert tsd.keys() == gsd.keys()
    for k in tsd:
        assert torch.equal(tsd[k], gsd[k]), k
        assert tsd[k].data_ptr() != gsd[k].data_ptr(), k
    assert torch.equal(gen.positional_embedding, text.positional_embedding)
    assert torch.equal(gen.text_projection, text.text_projection)
    assert torch.equal(gen.bos, text.token_embedding.weight[SOT_TOKEN_ID])
    assert torch.equal(gen.eos, text.token_embedding.weight[EOT_TOKEN_ID])
    # one optimisation step on the generator only leaves the text tower where it was
    before = {k: v.clone() for k, v in text.state_dict().items()}
    opt = torch.optim.SGD(gen.parameters(), lr=0.5)
    seq = torch.randn(2, 5, m.embed_dim)
    gen(seq).pow(2).sum().backward()
    opt.step()
    changed = [k for k in gsd if not torch.equal(gen.transformer.state_dict()[k], tsd[k])]
    assert changed, "the generator did not train"
    for k, v in text.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_pig_and_two_tower_video_vector_is_text_free_and_score_is_dot(tiny_models):
    frames = random_frames(3, 8, 64, seed=2)
    for fw in ("pig", "meanp", "clipvip"):
        m = tiny_models[fw]
        assert m.query_independent
        with torch.no_grad():
            v = m.encode_video(frames)
            out_a = m(frames, m.tokenize(["a red ball", "b", "c"]))
            out_b = m(frames, m.tokenize(["something else entirely", "x", "y"]))
            t = m.encode_text(m.tokenize(["a green cube moves left", "a ball"]))
            single = m.encode_video(frames[1:2])
        assert torch.allclose(out_a.video, v, atol=1e-6) and torch.allclose(out_b.video, v, atol=1e-6)
        assert torch.allclose(single[0], v[1], atol=1e-5), "a video's vector depends on its batch"
        assert torch.allclose(m.score(t, v), t @ v.t(), atol=0)
        assert v.shape == (3, m.embed_dim)


def test_xpool_score_needs_the_query(tiny_models):
    m = tiny_models["xpool"]
    assert not m.query_independent
    frames = random_frames(2, 8, 64, seed=4)
    with torch.no_grad():
        feats = m.encode_video(frames)
        t = m.encode_text(m.tokenize(["a red ball bounces", "two squares", "a star flashes at the end"]))
        pooled = m.fusion.forward_pairs(t, feats)  # [3, 2, D]: one pooled video per query
        s = m.score(t, feats)
    assert feats.shape == (2, 8, m.embed_dim)
    assert not torch.allclose(pooled[0, 0], pooled[1, 0], atol=1e-4)  # the pooled video depends on the query
    want = torch.einsum("qd,qvd->qv", F.normalize(t, dim=-1), F.normalize(pooled, dim=-1))
    assert torch.allclose(s, want, atol=1e-5)


def _train_step(m, stage_parts):
    m.train()
    m.set_trainable(stage_parts)
    frames = random_frames(3, 8, 64, seed=7)
    tokens = m.tokenize(["a red ball", "a blue cube moves left", "a star flashes"])
    out = m(frames, tokens)
    loss = reconstruction_loss(out.pseudo_query, out.text) if out.pseudo_query is not None else 0
    if stage_parts == "all":
        loss = loss + symmetric_infonce(m.score(out.text, out.video), m.logit_scale)
    m.zero_grad(set_to_none=True)
    loss.backward()
    return m


def test_gradients_reach_every_trainable_part():
    torch.manual_seed(0)
    for fw in ("pig", "meanp", "clipvip", "xpool"):
        m = _train_step(hub.create_model(f"{fw}-tiny"), "all")
        missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"{fw}: no gradient for {missing[:8]}"


def test_stage1_flag_freezes_all_but_generator():
    torch.manual_seed(0)
    m = _train_step(hub.create_model("pig-tiny"), ["generator"])
    for name, p in m.named_parameters():
        if name.startswith("generator."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_stage1_can_skip_fusion():
    m = hub.create_model("pig-tiny").eval()
    with torch.no_grad():
        out = m(random_frames(2, 8, 64), m.tokenize(["a", "b"]), fuse=False)
    assert out.video is None and out.pseudo_query.shape == (2, m.embed_dim)


def test_losses_match_definitions():
    torch.manual_seed(0)
    sim = torch.randn(4, 4)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * sim
    manual = 0.0
    for i in range(4):
        manual += -torch.log_softmax(logits[i], 0)[i] / 4 + -torch.log_softmax(logits[:, i], 0)[i] / 4
    assert torch.allclose(symmetric_infonce(sim, scale), manual, atol=1e-5)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    manual = ((F.normalize(a, dim=-1) - F.normalize(b, dim=-1)) ** 2).sum(-1).mean()
    assert torch.allclose(reconstruction_loss(a, b), manual, atol=1e-5)
    assert reconstruction_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        symmetric_infonce(torch.randn(3, 4), scale)
    ls = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale_(ls, math.log(200))
    assert ls.item() == pytest.approx(math.log(200))


def test_info_vit_b_32_parameter_counts(capsys):
    assert cli_main(["info", "pig-vit-b-32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    c = report["parameters"]
    clip = c["video_encoder"] + c["text_encoder"]
    assert 150e6 < clip < 152.5e6  # CLIP ViT-B/32 (~151.3 M; +3 proxies, frame CLS, temporal emb.)
    assert 37.5e6 < c["generator"] < 39.5e6  # 12-layer text transformer copy + mapper + projection
    assert 1.2e6 < c["fusion"] < 1.4e6  # five 512x512 linears + 3 LayerNorms
    assert c["total"] == sum(v for k, v in c.items() if k != "total")
    assert report["query_independent"] is True and report["config"]["its"]["k"] == 16


def test_unknown_preset_is_a_clear_error(capsys):
    assert cli_main(["info", "pig-vit-h-14"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
