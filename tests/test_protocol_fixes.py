"""Protocol fixes from the review against the official code: evaluation frames, fp32 logits, meanP
normalisation, per-framework fusion dropout, the reconstruction stop-gradient, the stage-1 LR."""

import pytest
import torch
import torch.nn.functional as F

from hybridtower import hub
from hybridtower.core.errors import ConfigError
from hybridtower.data.video.sampling import sample_indices
from hybridtower.encode import eval_sample_mode
from hybridtower.models.config import preset_config
from hybridtower.models.losses import reconstruction_loss, symmetric_infonce
from hybridtower.train import TrainConfig
from hybridtower.train.distributed import DistEnv
from hybridtower.train.trainer import Trainer

CAPTIONS = ["a red ball bounces", "a blue cube slides left", "a green star spins", "two circles collide"]


# ----- 1. evaluation frame sampling -----
@pytest.mark.parametrize("fw, mode", [("pig", "linspace"), ("clipvip", "linspace"), ("meanp", "uniform"), ("xpool", "uniform")])
def test_eval_sampling_default_follows_each_release(tiny_models, fw, mode):
    model = tiny_models[fw]
    assert eval_sample_mode(model) == mode
    assert eval_sample_mode(model, "middle") == "uniform"
    assert eval_sample_mode(model, "linspace") == "linspace"
    assert eval_sample_mode(model, "auto") == mode


def test_eval_sampling_config_key_and_frames():
    cfg = preset_config("pig-tiny", ["video.eval_sampling=middle"])
    assert cfg.resolved_eval_sampling() == "middle"
    assert cfg.resolved_eval_sampling("linspace") == "linspace"  # an explicit choice beats the config
    with pytest.raises(ConfigError):
        preset_config("pig-tiny", ["video.eval_sampling=random"])
    # the two grids differ: linspace takes the first and last frame, middle never does
    assert sample_indices(100, 12, "linspace")[0] == 0 and sample_indices(100, 12, "linspace")[-1] == 99
    assert sample_indices(100, 12, "uniform")[0] == 4 and sample_indices(100, 12, "uniform")[-1] == 95


def test_evaluate_uses_the_chosen_frames(tiny_models, tmp_path):
    from hybridtower.data import load_split
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.eval import evaluate

    generate(tmp_path, SynthConfig(videos=6, images=1, frames=24, test_fraction=0.5, val_fraction=0.0,
                                   captions_per_video=1, workers=0), overwrite=True, progress=False)
    split = load_split(f"jsonl:{tmp_path}/captions.jsonl", "test")
    model = tiny_models["clipvip"]
    lin = evaluate(model, split, batch_size=4, progress=False, return_ranks=True)
    mid = evaluate(model, split, batch_size=4, progress=False, return_ranks=True, eval_sampling="middle")
    assert "linspace" in lin["protocol"]["frames"] and "uniform" in mid["protocol"]["frames"]
    from hybridtower.eval.runner import score_split

    s_lin, _, _ = score_split(model, split, batch_size=4, progress=False)
    s_mid, _, _ = score_split(model, split, batch_size=4, progress=False, eval_sampling="middle")
    assert not torch.equal(s_lin, s_mid)  # other frames were read


# ----- 3. logits in fp32 under autocast -----
@pytest.mark.parametrize("fw", ["pig", "meanp", "xpool"])
def test_scores_and_loss_are_fp32_under_bf16_autocast(tiny_models, fw):
    model = tiny_models[fw]
    g = torch.Generator().manual_seed(3)
    text = F.normalize(torch.randn(6, model.embed_dim, generator=g), dim=-1)
    video = (torch.randn(6, model.cfg.video.num_frames, model.embed_dim, generator=g) if fw == "xpool"
             else F.normalize(torch.randn(6, model.embed_dim, generator=g), dim=-1))
    with torch.no_grad():
        ref = model.score(text, video)
        ref_loss = symmetric_infonce(ref, model.logit_scale)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.score(text, video)
            loss = symmetric_infonce(low, model.logit_scale)
            plain_bf16 = text @ video.t() if fw != "xpool" else None
    assert low.dtype == torch.float32 and loss.dtype == torch.float32
    if fw != "xpool":  # the fusion itself may run in bf16; the product of the vectors must not
        assert plain_bf16.dtype == torch.bfloat16  # the autocast really is active (the test can fail)
        assert torch.equal(low, ref)
        assert torch.equal(loss, ref_loss)
    else:
        torch.testing.assert_close(low, ref, atol=3e-2, rtol=0)


def test_train_loss_under_bf16_autocast_equals_fp32_reference():
    torch.manual_seed(0)
    model = hub.create_model("pig-tiny").eval()
    trainer = Trainer(TrainConfig(model="pig-tiny", data="unused:x", batch_size=4), "/nonexistent",
                      env=DistEnv(), progress=False)
    g = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(4, model.embed_dim, generator=g), dim=-1)
    video = F.normalize(torch.randn(4, model.embed_dim, generator=g), dim=-1)
    pq = torch.randn(4, model.embed_dim, generator=g)
    with torch.no_grad():
        ref, _ = trainer._loss(model, text, video, pq, "stage2")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = trainer._loss(model, text, video, pq, "stage2")
    assert low.dtype == torch.float32
    assert torch.equal(low, ref)


# ----- 4. meanP normalises every frame first -----
def test_meanp_normalises_frames_before_the_mean(tiny_models):
    model = tiny_models["meanp"]
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, model.cfg.video.num_frames, 3, 64, 64, generator=g)
    with torch.no_grad():
        per_frame = model.video_encoder(frames)
        # make frame norms very unequal: the unnormalised mean would follow the big frame
        per_frame_scaled = per_frame.clone()
        per_frame_scaled[:, 0] *= 1000
        v = model.encode_video(frames)
    ref = F.normalize(F.normalize(per_frame, dim=-1).mean(1), dim=-1)
    torch.testing.assert_close(v, ref)
    naive = F.normalize(per_frame.mean(1), dim=-1)
    assert not torch.allclose(v, naive, atol=1e-4)
    # scaling one frame's feature does not change the normalised-mean rule's result
    torch.testing.assert_close(F.normalize(F.normalize(per_frame_scaled, dim=-1).mean(1), dim=-1), ref)


# ----- 5. per-framework fusion dropout -----
def test_fusion_dropout_is_per_framework():
    assert preset_config("xpool-vit-b-32").fusion.dropout == 0.3
    assert preset_config("xpool-tiny").fusion.dropout == 0.3
    assert preset_config("pig-vit-b-32").fusion.dropout == 0.1
    assert preset_config("xpool-tiny", ["fusion.dropout=0.4"]).fusion.dropout == 0.4
    assert hub.create_model("xpool-tiny").fusion.dropout.p == 0.3


def test_xpool_own_recipe_config_loads():
    from pathlib import Path

    from hybridtower.train.config import load_train_config

    path = Path(__file__).resolve().parents[1] / "configs" / "msrvtt-1ka-xpool-own-recipe-vit-b-32.yaml"
    cfg = load_train_config(path)
    assert cfg.model == "xpool-vit-b-32" and cfg.batch_size == 32
    assert cfg.lr == pytest.approx(1e-6) and cfg.lr * cfg.new_module_lr_mult == pytest.approx(3e-5)


# ----- 6. stop-gradient on the reconstruction target -----
@pytest.mark.parametrize("stop", [False, True])
def test_recon_stop_grad_keeps_the_text_tower_out(stop):
    torch.manual_seed(0)
    model = hub.create_model("pig-tiny")
    model.train()
    cfg = TrainConfig(model="pig-tiny", data="unused:x", batch_size=4, recon_stop_grad=stop)
    trainer = Trainer(cfg, "/nonexistent", env=DistEnv(), progress=False)
    frames = torch.randn(4, model.cfg.video.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = model(frames, model.tokenize(CAPTIONS))
    # the reconstruction term alone (stage 1's loss): only it can carry a gradient into t here
    loss, _ = trainer._loss(model, out.text, out.video, out.pseudo_query, "stage1")
    loss.backward()
    text_grads = [p.grad for n, p in model.named_parameters() if n.startswith("text_encoder.")]
    gen_grads = [p.grad for n, p in model.named_parameters() if n.startswith("generator.")]
    text_reached = any(gr is not None and gr.abs().sum() > 0 for gr in text_grads)
    assert text_reached == (not stop)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in gen_grads)


def test_reconstruction_loss_value_unchanged_by_stop_grad():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.equal(reconstruction_loss(a, b), reconstruction_loss(a, b, stop_grad=True))
    assert torch.allclose(reconstruction_loss(a, b), (2 - 2 * F.cosine_similarity(a, b)).mean())


# ----- 7. stage-1 LR default -----
def test_stage1_lr_default_is_an_adapter_lr():
    cfg = TrainConfig()
    assert cfg.stage1_lr == pytest.approx(1e-4) and cfg.recon_stop_grad is False
    with pytest.raises(ConfigError):
        TrainConfig(stage1_lr=-1.0).validate()
