"""One optimisation step of each stage touches exactly the parameters it should; accumulation is exact."""

import pytest
import torch

from hybridtower import hub
from hybridtower.train import TrainConfig
from hybridtower.train.distributed import DistEnv
from hybridtower.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from hybridtower.train.trainer import Trainer

CAPTIONS = ["a red ball bounces", "a blue cube slides left", "a green star spins", "two circles collide"]


def _setup(framework, overrides=(), **cfg_values):
    torch.manual_seed(0)
    model = hub.create_model(f"{framework}-tiny", overrides=list(overrides))
    model.train()
    cfg = TrainConfig(model=f"{framework}-tiny", data="unused:x", lr=1e-3, warmup_ratio=0.0, batch_size=4, **cfg_values)
    trainer = Trainer(cfg, "/nonexistent", env=DistEnv(), progress=False)
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(4, model.cfg.video.num_frames, 3, 64, 64, generator=g)
    return model, trainer, frames, model.tokenize(CAPTIONS)


def _step(model, trainer, frames, tokens, stage, trainable):
    model.set_trainable(trainable)
    opt = build_optimizer(model, trainer.cfg.lr, trainer.cfg.weight_decay, trainer.cfg.betas, trainer.cfg.eps)
    sched = build_scheduler(opt, 10, 0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    parts = trainer.train_step(model, frames, tokens, stage, None)
    trainer.optimizer_step(model, opt, sched, None)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    return parts, changed, opt


def test_stage1_step_changes_only_the_generator():
    model, trainer, frames, tokens = _setup("pig")
    parts, changed, opt = _step(model, trainer, frames, tokens, "stage1", ["generator"])
    generator = {n for n, _ in model.named_parameters() if n.startswith("generator.")}
    assert changed == generator
    assert set(parts) == {"loss", "recon"} and 0 < float(parts["loss"]) <= 4
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if n.startswith("generator.")}


@pytest.mark.parametrize("framework", ["pig", "meanp", "clipvip", "xpool"])
def test_stage2_step_changes_every_parameter(framework):
    model, trainer, frames, tokens = _setup(framework)
    parts, changed, _ = _step(model, trainer, frames, tokens, "stage2", "all")
    assert changed == {n for n, _ in model.named_parameters()}
    assert ("recon" in parts) == (framework == "pig")
    if framework == "pig":  # total = contrastive + lambda * recon
        assert float(parts["loss"]) == pytest.approx(float(parts["contrastive"]) + float(parts["recon"]), rel=1e-6)


def test_lambda_zero_drops_the_reconstruction_term():
    model, trainer, frames, tokens = _setup("pig", lambda_recon=0.0)
    parts, _, _ = _step(model, trainer, frames, tokens, "stage2", "all")
    assert float(parts["loss"]) == pytest.approx(float(parts["contrastive"]))


@pytest.mark.parametrize("framework", ["pig", "xpool"])
def test_gradient_accumulation_is_exact(framework):
    grads = {}
    for accum in (1, 2):
        model, trainer, frames, tokens = _setup(framework, ["fusion.dropout=0"], grad_accum=accum)
        model.set_trainable("all")
        parts = trainer.train_step(model, frames, tokens, "stage2", None)
        grads[accum] = (float(parts["loss"]), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[1][0] == pytest.approx(grads[2][0], rel=1e-6)
    assert grads[1][1].keys() == grads[2][1].keys()
    for name, g in grads[1][1].items():
        scale = float(g.abs().max())  # float32 sums in another order: compare at the tensor's scale
        assert float((grads[2][1][name] - g).abs().max()) <= 1e-5 * scale + 1e-6, name  # (k bias: exactly 0 in theory)


def test_weight_decay_exempts_biases_and_logit_scale_only():
    model = hub.create_model("pig-tiny")
    groups = param_groups(model, 1e-3, 0.2, new_module_lr_mult=10.0)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["logit_scale"]["weight_decay"] == 0.0
    assert by_name["text_encoder.transformer.resblocks.0.attn.in_proj_bias"]["weight_decay"] == 0.0
    assert by_name["text_encoder.ln_final.weight"]["weight_decay"] == 0.2  # LN gains decay (release rule)
    assert by_name["text_encoder.token_embedding.weight"]["weight_decay"] == 0.2
    assert by_name["fusion.q_proj.weight"]["lr"] == pytest.approx(1e-2)  # new module
    assert by_name["video_encoder.proxy_tokens"]["lr"] == pytest.approx(1e-2)
    assert by_name["video_encoder.visual.conv1.weight"]["lr"] == pytest.approx(1e-3)
    assert len(by_name) == sum(1 for _ in model.parameters())


def test_warmup_then_cosine():
    total, warm = 100, 10
    assert lr_factor(0, total, warm) == pytest.approx(0.1)
    assert lr_factor(9, total, warm) == pytest.approx(1.0)
    assert lr_factor(10, total, warm) == pytest.approx(1.0)
    assert lr_factor(55, total, warm) == pytest.approx(0.5)
    assert lr_factor(100, total, warm) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, total, 0, "constant") == 1.0
