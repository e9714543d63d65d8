"""PIG-M: several pseudo-queries per video (one per temporal segment), scored by the max over M vectors."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from hybridtower import hub
from hybridtower.core.errors import ConfigError
from hybridtower.models.base import multi_vector_scores
from hybridtower.models.its import gather_tokens, reduce_heads, select_informative
from hybridtower.models.config import preset_config
from hybridtower.models.losses import reconstruction_loss
from hybridtower.train import TrainConfig
from hybridtower.train.distributed import DistEnv
from hybridtower.train.optim import build_optimizer, build_scheduler
from hybridtower.train.trainer import Trainer

CAPTIONS = ["a red ball bounces", "a blue cube slides left", "a green star spins", "two circles collide"]


def frames_batch(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, model.cfg.video.num_frames, 3, 64, 64, generator=g)


@pytest.fixture(scope="module")
def pigm():
    torch.manual_seed(0)
    return hub.create_model("pig-m4-tiny").eval()


def variant(model, **changes):
    """A copy of ``model`` (same weights) with model-config fields changed (no parameter depends on them)."""
    out = copy.deepcopy(model)
    out.cfg = dataclasses.replace(out.cfg, **changes)
    return out


def test_presets():
    for size in ("vit-b-32", "vit-b-16", "tiny"):
        assert preset_config(f"pig-m4-{size}").num_pseudo_queries == 4
        assert preset_config(f"pig-{size}").num_pseudo_queries == 1  # plain PIG stays the paper's
    with pytest.raises(ConfigError):
        preset_config("meanp-tiny", ["num_pseudo_queries=2"])
    with pytest.raises(ConfigError):
        preset_config("pig-m4-tiny", ["video.num_frames=2"])


def test_shapes(pigm):
    f = frames_batch(pigm)
    with torch.no_grad():
        out = pigm.video_features(f)
        v = pigm.encode_video(f)
    d = pigm.embed_dim
    assert v.shape == (3, 4, d) and out.pseudo_query.shape == (3, 4, d)
    assert pigm.vectors_per_video == 4 and pigm.query_independent
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3, 4))
    k_seg = pigm.segment_k()
    assert k_seg == 2 and out.its_positions.shape == (3, 4, k_seg)  # ceil(8 / 4)
    # every segment's patches come from that segment's frames only
    vt = out.tokens
    for m, seg in enumerate(pigm.segments(vt.num_frames)):
        frame_of = (out.its_positions[:, m] - vt.num_global) // vt.frame_len
        assert set(frame_of.flatten().tolist()) <= set(seg)
    assert pigm.segments(8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert pigm.segments(6) == [[0], [1, 2], [3], [4, 5]]
    assert pigm.segments(1) == [[0], [0], [0], [0]]  # an image as a 1-frame video
    # the M pseudo-queries differ (different segment inputs)
    pq = out.pseudo_query[0]
    assert (torch.cdist(pq, pq) + torch.eye(4) > 1e-4).all()


def test_pseudo_query_matches_a_by_hand_segment(pigm):
    """Pseudo-query m = generator([x_v; x_f of segment m; top ceil(k/M) patches of segment m]); its video
    vector = the fusion of that pseudo-query with ALL of the video's [x_v; x_f]."""
    f = frames_batch(pigm, b=2, seed=4)
    with torch.no_grad():
        out = pigm.video_features(f)
        vt = out.tokens
        scores = reduce_heads(vt.global_attn[:, :, 0], "max")
        m, seg = 2, pigm.segments(vt.num_frames)[2]
        cand = [p for p in vt.patch_positions.tolist() if (p - vt.num_global) // vt.frame_len in seg]
        pos = select_informative(scores, torch.tensor(cand), pigm.segment_k())
        x = torch.cat([vt.global_tokens, vt.frame_tokens[:, seg], gather_tokens(vt.tokens, pos)], dim=1)
        t_p = pigm.generator(x)
        v = F.normalize(pigm.fusion(t_p, pigm.fusion_tokens(vt)), dim=-1)
    torch.testing.assert_close(out.pseudo_query[:, m], t_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.video[:, m], v, rtol=1e-5, atol=1e-5)


def test_unequal_segments_run(pigm):
    model = variant(pigm)
    model.cfg.video = dataclasses.replace(model.cfg.video, num_frames=6)
    with torch.no_grad():
        v = model.encode_video(frames_batch(model, b=2))  # segments [0], [1, 2], [3], [4, 5]
    assert v.shape == (2, 4, model.embed_dim)


def test_m1_is_bit_identical_to_pig(tiny_models, pigm):
    """A PIG-M model has exactly PIG's parameters; with M = 1 it computes exactly the paper's PIG path."""
    pig = tiny_models["pig"]
    assert pig.state_dict().keys() == pigm.state_dict().keys()
    m1 = variant(pigm, num_pseudo_queries=1)
    m1.load_state_dict(pig.state_dict())
    f = frames_batch(pig, seed=2)
    tokens = pig.tokenize(CAPTIONS[:3])
    with torch.no_grad():
        a, b = pig.video_features(f), m1.video_features(f)
        # the paper's path written out: ITS over the whole video -> generator -> fusion
        vt = a.tokens
        pos = pig.its_positions(vt)
        ref_tp = pig.generator(pig.generator_inputs(vt, pos))
        ref_v = F.normalize(pig.fusion(ref_tp, pig.fusion_tokens(vt)), dim=-1)
        t = pig.encode_text(tokens)
    assert a.video.shape == (3, pig.embed_dim) and pig.vectors_per_video == 1
    assert torch.equal(a.video, b.video) and torch.equal(a.pseudo_query, b.pseudo_query)
    assert torch.equal(a.video, ref_v) and torch.equal(a.pseudo_query, ref_tp)
    assert torch.equal(pig.score(t, a.video), t @ a.video.t())


def test_max_over_m_scoring_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    v = F.normalize(torch.randn(7, 3, 16, generator=g), dim=-1)
    ref = torch.empty(5, 7)
    for i in range(5):
        for j in range(7):
            ref[i, j] = max(float(t[i] @ v[j, m]) for m in range(3))
    torch.testing.assert_close(multi_vector_scores(t, v), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert multi_vector_scores(t, v).dtype == torch.float32
    # one stored vector per video: plain matrix product
    assert torch.equal(multi_vector_scores(t, v[:, 0]), t @ v[:, 0].t())


def test_reconstruction_best_and_mean():
    g = torch.Generator().manual_seed(1)
    pq, t = torch.randn(4, 3, 8, generator=g), torch.randn(4, 8, generator=g)
    cos = torch.stack([F.cosine_similarity(pq[:, m], t, dim=-1) for m in range(3)], 1)
    torch.testing.assert_close(reconstruction_loss(pq, t), (2 - 2 * cos.max(1).values).mean())
    torch.testing.assert_close(reconstruction_loss(pq, t, multi="mean"), (2 - 2 * cos.mean(1)).mean())
    # "best": the gradient reaches only the winning slot of each video
    pq.requires_grad_(True)
    reconstruction_loss(pq, t).backward()
    touched = pq.grad.abs().sum(-1) > 0
    assert touched.sum(1).tolist() == [1, 1, 1, 1]
    assert torch.equal(touched.float().argmax(1), cos.argmax(1))


def _trainer(**values):
    cfg = TrainConfig(model="pig-m4-tiny", data="unused:x", warmup_ratio=0.0, **values)
    return Trainer(cfg, "/nonexistent", env=DistEnv(), progress=False)


def test_training_steps_decrease_the_loss(pigm):
    model = variant(pigm)
    model.fusion.dropout.p = 0.0
    model.train()
    model.set_trainable("all")
    trainer = _trainer(lr=3e-5, batch_size=4)
    f = frames_batch(model, b=4, seed=3)
    tokens = model.tokenize(CAPTIONS)
    opt = build_optimizer(model, trainer.cfg.lr, trainer.cfg.weight_decay, trainer.cfg.betas, trainer.cfg.eps)
    sched = build_scheduler(opt, 100, 0.0, "constant")
    losses = []
    for _ in range(2):
        parts = trainer.train_step(model, f, tokens, "stage2", None)
        trainer.optimizer_step(model, opt, sched, None)
        losses.append(float(parts["loss"]))
        assert set(parts) == {"loss", "contrastive", "recon"}
        assert float(parts["loss"]) == pytest.approx(float(parts["contrastive"]) + float(parts["recon"]), rel=1e-6)
    assert losses[-1] < losses[0], losses


def test_save_load_round_trip(pigm, tmp_path):
    path = hub.save_model(pigm, tmp_path / "m.safetensors")
    back = hub.load_model(path)
    assert back.cfg.num_pseudo_queries == 4 and back.cfg.name == "pig-m4-tiny"
    f = frames_batch(pigm, seed=7)
    with torch.no_grad():
        assert torch.equal(back.eval().encode_video(f), pigm.encode_video(f))
