"""PIG without fusion (``fusion.enabled = False``, preset ``pig-nofusion-*``): t_p itself is the video vector."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hybridtower import hub
from hybridtower.models.config import preset_config
from hybridtower.train import TrainConfig
from hybridtower.train.distributed import DistEnv
from hybridtower.train.optim import build_optimizer, build_scheduler
from hybridtower.train.trainer import Trainer

CAPTIONS = ["a red ball bounces", "a blue cube slides left", "a green star spins", "two circles collide"]


def frames_batch(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, model.cfg.video.num_frames, 3, 64, 64, generator=g)


def without_fusion(model):
    out = copy.deepcopy(model)
    out.cfg = dataclasses.replace(out.cfg, fusion=dataclasses.replace(out.cfg.fusion, enabled=False))
    return out


def test_preset():
    assert preset_config("pig-nofusion-tiny").fusion.enabled is False
    assert preset_config("pig-tiny").fusion.enabled is True


def test_video_vector_is_the_normalised_pseudo_query(tiny_models):
    pig = tiny_models["pig"].eval()
    nf = without_fusion(pig)
    f = frames_batch(pig)
    tokens = pig.tokenize(CAPTIONS[:3])
    with torch.no_grad():
        a, b = pig.video_features(f), nf.video_features(f)
        v = nf.encode_video(f)
        out = nf(f, tokens)
    # same generator and weights: the same t_p; only the stored vector changes
    assert torch.equal(a.pseudo_query, b.pseudo_query)
    torch.testing.assert_close(b.video, F.normalize(b.pseudo_query, dim=-1))
    torch.testing.assert_close(v, F.normalize(a.pseudo_query, dim=-1))
    assert not torch.allclose(a.video, b.video)  # the fused vector differs from t_p's direction
    torch.testing.assert_close(out.video, v)  # training sees what the index stores
    torch.testing.assert_close(out.pseudo_query, a.pseudo_query)
    assert v.shape == (3, pig.embed_dim)


def test_multi_query_without_fusion():
    torch.manual_seed(0)
    pigm = hub.create_model("pig-m4-tiny", overrides=["fusion.enabled=false"]).eval()
    f = frames_batch(pigm)
    with torch.no_grad():
        out = pigm.video_features(f)
    assert out.video.shape == (3, 4, pigm.embed_dim)
    torch.testing.assert_close(out.video, F.normalize(out.pseudo_query, dim=-1))


def test_training_step_leaves_the_fusion_untouched_and_learns(tiny_models):
    model = without_fusion(tiny_models["pig"])
    model.train()
    model.set_trainable("all")
    cfg = TrainConfig(model="pig-nofusion-tiny", data="unused:x", warmup_ratio=0.0, lr=3e-5, batch_size=4)
    trainer = Trainer(cfg, "/nonexistent", env=DistEnv(), progress=False)
    f = frames_batch(model, b=4, seed=3)
    tokens = model.tokenize(CAPTIONS)
    fusion_before = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    sched = build_scheduler(opt, 100, 0.0, "constant")
    losses = []
    for _ in range(2):
        parts = trainer.train_step(model, f, tokens, "stage2", None)
        trainer.optimizer_step(model, opt, sched, None)
        losses.append(float(parts["loss"]))
    assert losses[-1] < losses[0], losses
    for k, v in model.fusion.state_dict().items():
        assert torch.equal(v, fusion_before[k]), k  # no gradient reaches the unused fusion


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = hub.create_model("pig-nofusion-tiny").eval()
    back = hub.load_model(hub.save_model(model, tmp_path / "m.safetensors"))
    assert back.cfg.fusion.enabled is False
    f = frames_batch(model, b=2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(back.eval().encode_video(f), F.normalize(model.video_features(f).pseudo_query, dim=-1))


@pytest.mark.parametrize("keys", ["frames", "global"])
def test_fusion_keys_ablation_changes_only_the_keys(keys):
    """fusion.keys picks the fusion's keys/values: frame CLS only or global tokens only; "all" is the release."""
    from hybridtower import hub
    from hybridtower.core.config import config_hash

    torch.manual_seed(0)
    full = hub.create_model("pig-tiny").eval()
    part = hub.create_model("pig-tiny", overrides=[f"fusion.keys={keys}"]).eval()
    part.load_state_dict(full.state_dict())
    frames = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        vt = full.video_encoder(frames, attn_layer=None)
        kv_full, kv_part = full.fusion_tokens(vt), part.fusion_tokens(vt)
        want = vt.frame_tokens if keys == "frames" else vt.global_tokens
        assert torch.equal(kv_part, want) and kv_full.shape[1] == vt.global_tokens.shape[1] + vt.frame_tokens.shape[1]
        assert not torch.allclose(full.encode_video(frames), part.encode_video(frames))
    assert config_hash(part.cfg) != config_hash(full.cfg)
    assert config_hash(full.cfg) == config_hash(hub.create_model("pig-tiny", overrides=["fusion.keys=all"]).cfg)
