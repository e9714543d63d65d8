"""hybridtower's own CLIP towers (models/clip_backbone.py) against open_clip's ``CLIP``: the same state-dict
keys, order and shapes, bit-identical outputs and gradients once they hold open_clip's tensors, the same
models (PIG, CLIP-ViP, X-Pool, meanP) built either way, configs read from their files equal to open_clip's,
the architectures they do not implement left to open_clip, and old checkpoints loading as before."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from hybridtower import hub
from hybridtower.models import clip_backbone as cb
from hybridtower.models.text_encoder import TextEncoder

DEMO_CKPT = Path(hub.__file__).parent / "assets" / "demo-pig-tiny.safetensors"
EOT = 49407


def _cfg(arch: str, **changes) -> dict:
    hub._register_package_archs()
    cfg = open_clip.get_model_config(arch)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        (cfg[section] if name else cfg)[name or section] = value
    return cfg


def _small_b32(**changes) -> dict:
    """ViT-B-32's config at a small width (same layout: patch 32, CLIP text tower, no quick_gelu key)."""
    cfg = _cfg("ViT-B-32")
    cfg["embed_dim"] = 48
    cfg["vision_cfg"].update(image_size=64, layers=2, width=64, head_width=16)
    cfg["text_cfg"].update(width=32, heads=4, layers=2)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        cfg[section][name] = value
    return cfg


CONFIGS = {
    "tiny-quickgelu": lambda: _cfg("hybridtower-tiny"),
    "tiny-gelu-layerscale": lambda: _cfg("hybridtower-tiny", quick_gelu=False, vision_cfg__ls_init_value=0.1,
                                         text_cfg__ls_init_value=0.1),
    "b32-small-gelu": lambda: _small_b32(),
    "b32-small-quickgelu-mlp": lambda: dict(_small_b32(vision_cfg__mlp_ratio=4.9231, text_cfg__mlp_ratio=3.5),
                                            quick_gelu=True),
}


def _tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 49406, (batch, length), generator=g)
    for row, eot in enumerate(torch.randint(2, length, (batch,), generator=g).tolist()):
        tokens[row, eot] = EOT
        tokens[row, eot + 1:] = 0
    return tokens


def _pair(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    clip = open_clip.CLIP(**copy.deepcopy(cfg))
    with torch.no_grad():  # distinctive LayerNorms / LayerScales too
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    reference = copy.deepcopy(clip)
    return reference, cb.adopt_open_clip(clip, cfg)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_tensors_and_bit_identical_outputs_and_gradients(name):
    cfg = CONFIGS[name]()
    assert cb.unsupported(cfg) is None
    ref, own = _pair(cfg)
    assert type(own) is cb.ClipBackbone and type(ref).__module__.startswith("open_clip")
    assert [(k, v.shape) for k, v in own.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert [k for k, _ in own.named_parameters()] == [k for k, _ in ref.named_parameters()]
    assert cb.structure(own) == cb.structure(ref)
    assert own.visual.image_size == ref.visual.image_size and own.visual.output_dim == ref.visual.output_dim
    for k, v in ref.state_dict().items():
        assert torch.equal(own.state_dict()[k], v), k
    size = own.visual.image_size
    images = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))
    tokens = _tokens(3, 20, seed=2)
    for mode in ("train", "eval"):
        own.train(mode == "train"), ref.train(mode == "train")
        with torch.no_grad():
            assert torch.equal(own.visual(images), ref.visual(images)), mode
            assert torch.equal(TextEncoder(own)(tokens), TextEncoder(ref)(tokens)), mode
            full = _tokens(2, 77, seed=3)
            assert torch.equal(own.encode_text(full), ref.encode_text(full)), mode
    # one training step's gradients, grad checkpointing on one side too
    own.train(), ref.train()
    own.set_grad_checkpointing(True)
    for model in (own, ref):
        model.zero_grad()
        loss = (model.visual(images) ** 2).sum() + (TextEncoder(model)(tokens) ** 2).sum()
        loss.backward()
    ref_grads = dict(ref.named_parameters())
    for k, p in own.named_parameters():
        if p.grad is None:
            assert ref_grads[k].grad is None, k
        else:
            assert torch.equal(p.grad, ref_grads[k].grad), k


def test_real_vit_b_32_layout_matches_open_clip():
    cfg = _cfg("ViT-B-32")
    assert cb.unsupported(cfg) is None
    with torch.device("meta"):
        ref = open_clip.CLIP(**cfg)
    own = cb.build_backbone(cfg, device="meta")
    assert [(k, v.shape) for k, v in own.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert cb.structure(own) == cb.structure(ref)
    assert own.visual.transformer.resblocks[0].attn.num_heads == 12


def test_adopt_refuses_a_model_of_another_structure():
    cfg = _cfg("hybridtower-tiny")
    other = copy.deepcopy(cfg)
    other["vision_cfg"]["head_width"] = 64  # same tensors, other head count: only the structure shows it
    torch.manual_seed(0)
    clip = open_clip.CLIP(**other)
    with pytest.raises(ValueError, match="differs"):
        cb.adopt_open_clip(clip, cfg)
    with pytest.raises(ValueError, match="cannot be built"):
        cb.ClipBackbone(_cfg("RN50"))


@pytest.mark.parametrize("arch, why", [
    ("RN50", "ResNet"), ("ViT-B-16-SigLIP", "timm"), ("coca_ViT-B-32", "CoCa"), ("convnext_base", "timm"),
    ("EVA02-B-16", "timm"), ("ViT-B-32-SigLIP2-256", "timm"),
])
def test_unsupported_architectures_are_named(arch, why):
    cfg = hub.open_clip_config(arch)
    assert cfg is not None
    assert why in (cb.unsupported(cfg) or "")


@pytest.mark.parametrize("change", [
    {"vision_cfg__patch_dropout": 0.5}, {"vision_cfg__attentional_pool": True}, {"vision_cfg__pool_type": "avg"},
    {"vision_cfg__no_ln_pre": True}, {"vision_cfg__final_ln_after_pool": True}, {"vision_cfg__qk_norm": True},
    {"vision_cfg__pos_embed_type": "sin_cos_2d"}, {"text_cfg__proj_bias": True}, {"text_cfg__pool_type": "last"},
    {"text_cfg__norm_kwargs": {"eps": 1e-6}}, {"text_cfg__act_kwargs": {"approximate": "tanh"}},
    {"init_logit_bias": -10}, {"custom_text": True}, {"vision_cfg__some_new_option": 1},
])
def test_unsupported_options_are_named(change):
    cfg = _cfg("hybridtower-tiny")
    for key, value in change.items():
        section, _, name = key.partition("__")
        (cfg[section] if name else cfg)[name or section] = value
    assert cb.unsupported(cfg)


def test_unsupported_architecture_still_builds_with_open_clip():
    clip, pre = hub.load_clip("RN50", device="meta")
    assert type(clip).__module__.startswith("open_clip") and pre["image_size"] == 224
    clip, _ = hub.load_clip("hybridtower-tiny", device="meta")
    assert type(clip) is cb.ClipBackbone


def test_config_files_equal_open_clip_configs():
    hub._register_package_archs()
    supported = 0
    # every config file of open_clip and of this package (other tests register more archs at run time)
    names = set().union(*(hub._config_names(folder) for folder in hub._config_folders()))
    assert len(names) > 100 and "hybridtower-tiny" in names and names <= set(open_clip.list_models())
    for arch in sorted(names):
        from_file = hub._config_from_file(arch)
        assert from_file == open_clip.get_model_config(arch), arch
        supported += cb.unsupported(from_file) is None
    assert supported >= 20  # the CLIP ViTs (B, L, H, g, bigG, ...)
    assert hub._config_from_file("no-such-arch") is None
    assert hub._config_from_file("hf-hub:org/name") is None and hub._config_from_file("../ViT-B-32") is None


def _forced_open_clip(monkeypatch):
    monkeypatch.setattr(hub, "unsupported", lambda cfg: "forced open_clip for the test")


def _model_outputs(model, frames, tokens):
    model.train()
    model.zero_grad()
    torch.manual_seed(123)  # the same dropout masks on both sides
    out = model(frames, tokens)
    video = out.video if out.video is not None else model.encode_video(frames)
    loss = model.score(out.text, video).sum() + (out.pseudo_query.sum() if out.pseudo_query is not None else 0)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        evals = (model.encode_text(tokens), model.encode_video(frames))
    return out, grads, evals


@pytest.mark.parametrize("preset", ["pig-tiny", "clipvip-tiny", "xpool-tiny", "meanp-tiny"])
def test_models_built_on_either_tower_are_identical(monkeypatch, preset):
    torch.manual_seed(7)
    own = hub.create_model(preset, overrides=["video.num_frames=4"])
    with monkeypatch.context() as m:
        _forced_open_clip(m)
        torch.manual_seed(7)
        ref = hub.create_model(preset, overrides=["video.num_frames=4"])
    visual = own.video_encoder.visual
    assert type(visual) is cb.VisionTransformer
    assert type(ref.video_encoder.visual).__module__.startswith("open_clip")
    a, b = own.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # the same random init: open_clip built both
    frames = torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    tokens = own.tokenize(["a red ball bounces", "two squares collide"])
    out_a, grads_a, eval_a = _model_outputs(own, frames, tokens)
    out_b, grads_b, eval_b = _model_outputs(ref, frames, tokens)
    assert torch.equal(out_a.text, out_b.text)
    assert torch.equal(out_a.video, out_b.video)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    for x, y in zip(eval_a, eval_b):
        assert torch.equal(x, y)


def test_rng_stream_is_unchanged_by_the_own_towers(monkeypatch):
    torch.manual_seed(11)
    hub.create_model("pig-tiny")
    after_own = torch.rand(4)
    with monkeypatch.context() as m:
        _forced_open_clip(m)
        torch.manual_seed(11)
        hub.create_model("pig-tiny")
        after_ref = torch.rand(4)
    assert torch.equal(after_own, after_ref)


def test_pig_on_a_gelu_layerscale_arch_equals_open_clips(monkeypatch, tmp_path):
    arch = "ht-test-backbone-ls"
    cfg = _cfg("hybridtower-tiny", quick_gelu=False, vision_cfg__ls_init_value=0.5, text_cfg__ls_init_value=0.5)
    (tmp_path / f"{arch}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    overrides = [f"backbone.arch={arch}", "backbone.quick_gelu=false", "video.num_frames=4"]
    torch.manual_seed(5)
    own = hub.create_model("pig-tiny", overrides=overrides)
    with monkeypatch.context() as m:
        _forced_open_clip(m)
        torch.manual_seed(5)
        ref = hub.create_model("pig-tiny", overrides=overrides)
    blocks = own.video_encoder.visual.transformer.resblocks
    assert type(blocks[0].ls_1) is cb.LayerScale and type(blocks[0].mlp.gelu) is torch.nn.GELU
    frames = torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    tokens = own.tokenize(["a red ball", "a blue square"])
    out_a, grads_a, eval_a = _model_outputs(own, frames, tokens)
    out_b, grads_b, eval_b = _model_outputs(ref, frames, tokens)
    assert torch.equal(out_a.video, out_b.video) and torch.equal(out_a.pseudo_query, out_b.pseudo_query)
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    for x, y in zip(eval_a, eval_b):
        assert torch.equal(x, y)


def test_checkpoint_written_before_loads_and_answers_as_before(monkeypatch):
    """The shipped demo checkpoint (written by open_clip-backed towers) loads strictly into the own towers and
    answers exactly as the same file loaded into open_clip's towers."""
    own = hub.load_model(DEMO_CKPT)
    assert type(own.video_encoder.visual) is cb.VisionTransformer and not hub._meta_tensors(own)
    with monkeypatch.context() as m:
        _forced_open_clip(m)
        ref = hub.load_model(DEMO_CKPT)
    assert type(ref.video_encoder.visual).__module__.startswith("open_clip")
    a, b = own.state_dict(), ref.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert own.preprocess_config() == ref.preprocess_config()
    frames = torch.randn(2, own.cfg.video.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    tokens = own.tokenize(["a red ball bounces", "a green square"])
    with torch.no_grad():
        assert torch.equal(own.encode_text(tokens), ref.encode_text(tokens))
        assert torch.equal(own.encode_video(frames), ref.encode_video(frames))


def test_meta_build_and_config_lookup_import_no_open_clip_nor_dynamo():
    code = ("import sys, json; from hybridtower import hub; "
            "cfg = hub.open_clip_config('ViT-B-32'); m = hub.create_model('pig-tiny', device='meta'); "
            "clip, pre = hub.load_clip('hybridtower-tiny', device='meta'); "
            "print(json.dumps({'cfg': cfg, 'pre': pre, 'type': type(clip).__name__, 'mods': [n for n in sys.modules "
            "if n.split('.')[0] in ('open_clip', 'torchvision', 'timm', 'sympy') or n.startswith('torch._dynamo')]}))")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mods"] == [] and report["type"] == "ClipBackbone"
    assert report["cfg"] == open_clip.get_model_config("ViT-B-32")
    hub._register_package_archs()
    clip = hub._open_clip_model("hybridtower-tiny", None, True, "meta")
    ref_pre = clip.visual.preprocess_cfg
    assert report["pre"]["image_size"] == 64
    assert report["pre"]["mean"] == list(ref_pre["mean"]) and report["pre"]["std"] == list(ref_pre["std"])


def test_weights_hash_is_the_documented_one():
    """index/identity.weights_sha256 hashes without copying: the same digest as the plain formula."""
    import hashlib

    from hybridtower.index.identity import weights_sha256

    model = hub.load_model(DEMO_CKPT)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    assert weights_sha256(model) == h.hexdigest()


def test_valueless_meta_skips_only_meta_initialisers():
    """hub._ValuelessMeta (used while building on the meta device) turns initialisers of meta tensors into no-ops
    with the right shapes, and leaves every CPU tensor's values and the RNG stream alone."""
    torch.manual_seed(3)
    expected = torch.randn(4)
    torch.manual_seed(3)
    with hub._ValuelessMeta():
        cpu = torch.randn(4)  # not meta: a real draw
        with torch.device("meta"):
            shapes = [torch.randn(2, 3).shape, torch.randn((4, 5)).shape, torch.randn(size=(6,)).shape,
                      torch.rand(2, dtype=torch.float64).dtype]
            lin = torch.nn.Linear(3, 4)
            torch.nn.init.eye_(lin.weight[:, :3][:3])
    assert torch.equal(cpu, expected)
    assert shapes == [(2, 3), (4, 5), (6,), torch.float64] and lin.weight.is_meta and lin.weight.shape == (4, 3)
    with hub._ValuelessMeta():
        w = torch.empty(3, 3)
        torch.nn.init.eye_(w)  # CPU: filled as usual
    assert torch.equal(w, torch.eye(3))
