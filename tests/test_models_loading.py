"""Real-weight loading through the user-facing path, and our own checkpoints."""

import json

import pytest
import torch

from hybridtower import hub
from hybridtower.core.errors import CheckpointError
from hybridtower.models.generator import EOT_TOKEN_ID, SOT_TOKEN_ID


@pytest.fixture(scope="module")
def vit_b_32_checkpoint(tmp_path_factory):
    """An open_clip ViT-B-32 checkpoint with random weights, written the way open_clip writes them."""
    import open_clip

    torch.manual_seed(123)
    clip = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    with torch.no_grad():  # make every tensor distinctive, including LayerNorms and the logit scale
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path_factory.mktemp("clip") / "vit-b-32-random.pt"
    torch.save({"epoch": 1, "name": "random", "state_dict": clip.state_dict()}, path)
    return path, clip.state_dict()


def test_open_clip_checkpoint_loads_into_pig(vit_b_32_checkpoint):
    path, ref = vit_b_32_checkpoint
    m = hub.create_model("pig-vit-b-32", pretrained=str(path))
    # every backbone tensor matches the file
    own = {**{f"visual.{k}": v for k, v in m.video_encoder.visual.state_dict().items()}}
    te = m.text_encoder
    own.update({
        "token_embedding.weight": te.token_embedding.weight,
        "positional_embedding": te.positional_embedding,
        "text_projection": te.text_projection,
        **{f"transformer.{k}": v for k, v in te.transformer.state_dict().items()},
        **{f"ln_final.{k}": v for k, v in te.ln_final.state_dict().items()},
    })
    backbone_keys = [k for k in ref if k not in ("logit_scale", "attn_mask")]
    for k in backbone_keys:
        assert torch.equal(own[k], ref[k]), k
    # PIG-specific parameters initialised as specified
    enc = m.video_encoder
    assert torch.equal(enc.frame_cls, ref["visual.class_embedding"])
    assert torch.equal(enc.temporal_embedding, torch.zeros_like(enc.temporal_embedding))
    assert enc.proxy_tokens.shape == (3, 768)
    g = m.generator
    for k, v in g.transformer.state_dict().items():
        assert torch.equal(v, ref[f"transformer.{k}"]), k
    assert torch.equal(g.bos, ref["token_embedding.weight"][SOT_TOKEN_ID])
    assert torch.equal(g.eos, ref["token_embedding.weight"][EOT_TOKEN_ID])
    assert torch.equal(g.text_projection, ref["text_projection"])
    assert torch.equal(m.fusion.q_proj.weight, torch.eye(512))
    assert m.logit_scale.item() == pytest.approx(4.6052)


def test_plain_state_dict_and_safetensors_load_the_same(tmp_path, vit_b_32_checkpoint):
    from safetensors.torch import save_file

    path, ref = vit_b_32_checkpoint
    plain = tmp_path / "plain.pt"
    torch.save(ref, plain)  # OpenAI-style: a bare state dict with the same key names
    st = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.items()}, str(st))
    for p in (plain, st):
        m = hub.create_model("meanp-vit-b-32", pretrained=str(p))
        assert torch.equal(m.video_encoder.visual.conv1.weight, ref["visual.conv1.weight"])


def test_torchscript_archive_loads(tmp_path):
    """OpenAI's original release format (a TorchScript archive), on the tiny architecture."""
    import open_clip

    hub._register_package_archs()
    torch.manual_seed(5)
    clip = open_clip.create_model("hybridtower-tiny", pretrained=None)
    scripted = torch.jit.script(clip)
    path = tmp_path / "tiny-openai.pt"
    scripted.save(str(path))
    assert hub._is_torchscript(str(path))
    m = hub.create_model("clipvip-tiny", pretrained=str(path))
    assert torch.equal(m.video_encoder.visual.proj, clip.visual.proj)
    assert torch.equal(m.text_encoder.token_embedding.weight, clip.token_embedding.weight)


def test_wrong_architecture_checkpoint_is_refused(vit_b_32_checkpoint):
    path, _ = vit_b_32_checkpoint
    with pytest.raises(CheckpointError, match="cannot load CLIP weights"):
        hub.create_model("pig-tiny", pretrained=str(path))
    with pytest.raises(CheckpointError, match="neither a file nor an open_clip tag"):
        hub.create_model("pig-tiny", pretrained="no-such-file.pt")


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = hub.create_model("pig-tiny", overrides=["its.k=4"])
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    path = hub.save_model(m, tmp_path / "run" / "model.safetensors", metadata={"step": 7})
    back = hub.load_model(tmp_path / "run")
    assert back.cfg == m.cfg and back.cfg.its.k == 4
    a, b = m.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads(hub.read_checkpoint_metadata(path)["step"]) == 7


def test_mismatched_or_foreign_checkpoints_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    m = hub.create_model("meanp-tiny")
    path = hub.save_model(m, tmp_path / "m.safetensors")
    meta = hub.read_checkpoint_metadata(path)
    state = load_file(str(path))
    state.pop(next(iter(state)))
    save_file(state, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="missing tensor"):
        hub.load_model(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a hybridtower checkpoint"):
        hub.load_model(tmp_path / "foreign.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        hub.load_model(tmp_path / "garbage.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        hub.load_model(tmp_path / "nope.safetensors")


def test_loaded_model_keeps_the_recorded_preprocessing(tmp_path):
    """A checkpoint's recorded frame preprocessing (e.g. weights normalised with mean = std = 0.5, as
    ViT-L-14 laion2b_s32b_b82k) survives the reload instead of falling back to OpenAI's constants; a
    recording for another image size is ignored."""
    from safetensors.torch import load_file, save_file

    m = hub.create_model("meanp-tiny")
    default = dict(m._preprocess)
    m._preprocess = dict(default, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    path = hub.save_model(m, tmp_path / "m.safetensors")
    back = hub.load_model(path)
    assert back.preprocess_config()["mean"] == [0.5, 0.5, 0.5] and back.preprocess_config()["std"] == [0.5] * 3
    meta = hub.read_checkpoint_metadata(path)
    meta[hub.PREPROCESS_KEY] = json.dumps(dict(default, image_size=999, mean=[0.1, 0.1, 0.1]))
    save_file(load_file(str(path)), str(tmp_path / "other.safetensors"), metadata=meta)
    assert hub.load_model(tmp_path / "other.safetensors").preprocess_config()["mean"] == default["mean"]
