"""`clip:ARCH` for every open_clip architecture: the ones hybridtower's own towers cannot take are wrapped
whole (framework "openclip"). Tiny random-weight variants of each kind of architecture are registered from a
temporary folder (a timm image tower, a custom non-causal text tower read at its last token, CoCa, a Hugging
Face text tower with a Hugging Face tokenizer); each is built, saved, loaded and run, and one goes through
`hybridtower index` (a fresh process that has never heard of the architecture) and `search`. No network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from hybridtower import checkpoints, hub
from hybridtower.core.errors import CheckpointError, ConfigError

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY = {
    # a timm image tower (convnext_*, swin, ViTamin, EVA, SigLIP's ...) with CLIP's own text transformer; the
    # attention-pool head without projection of SigLIP's timm towers
    "ht-test-timm": {"embed_dim": 64, "text_cfg": dict(TEXT, width=64), "vision_cfg": {
        "timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none",
        "image_size": 160}},
    # SigLIP / MobileCLIP / CLIPA style text: custom text tower, no causal mask, feature read at the LAST
    # token, a logit bias (named without "siglip", which would make open_clip pick SigLIP's Hugging Face
    # tokenizer by name)
    "ht-test-custom": {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True, "vision_cfg": {
        "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16, "pool_type": "avg",
        "no_ln_pre": True, "final_ln_after_pool": True}, "text_cfg": {
        "context_length": 16, "vocab_size": 49408, "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32,
        "heads": 2, "layers": 1, "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
        "norm_kwargs": {"eps": 1e-06}}},
    # CoCa: attentional pooler image tower, CLS-embedded text, a caption decoder
    "ht-test-coca": {"embed_dim": 32, "custom_text": True, "vision_cfg": {
        "image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16, "attentional_pool": True,
        "attn_pooler_heads": 2, "output_tokens": True}, "text_cfg": {
        "context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "embed_cls": True,
        "output_tokens": True}, "multimodal_cfg": {
        "context_length": 76, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "attn_pooler_heads": 2}},
}
FRAMES = 3
CAPTIONS = ["a red ball bounces on the floor", "a dog", "two cats sleep next to a window in the sun"]


@pytest.fixture(scope="module")
def archs(tmp_path_factory):
    """The tiny architectures registered with open_clip (only in this process) from a temporary folder."""
    import open_clip

    folder = tmp_path_factory.mktemp("archs")
    for name, cfg in TINY.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return folder


def _frames(model, seed=0, batch=2):
    s = int(model.preprocess_config()["image_size"])
    return torch.rand(batch, FRAMES, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _run(model, seed=0):
    with torch.no_grad():
        return model.encode_text(model.tokenize(CAPTIONS)), model.encode_video(_frames(model, seed))


@pytest.fixture(scope="module")
def saved(archs, tmp_path_factory):
    """{arch: (model, checkpoint path)}: each tiny architecture built with random weights and saved."""
    out = {}
    folder = tmp_path_factory.mktemp("ckpt")
    for i, name in enumerate(TINY):
        torch.manual_seed(i)
        model = hub.create_model(f"clip:{name}", overrides=[f"video.num_frames={FRAMES}"]).eval()
        out[name] = (model, hub.save_model(model, folder / f"{name}.safetensors"))
    return out


# ----- routing: every open_clip architecture, none refused -----

def test_every_open_clip_architecture_takes_one_of_the_two_paths():
    import open_clip

    archs = hub.list_clip_archs()
    builtin = [a for a in open_clip.list_models() if not a.startswith(("hybridtower-config-", "ht-test-"))]
    assert set(builtin) <= set(archs)
    own, wrapped = hub.list_clip_archs("meanp"), hub.list_clip_archs("openclip")
    assert sorted(own + wrapped) == sorted(archs) and not set(own) & set(wrapped)
    for arch in archs:
        oc = open_clip.get_model_config(arch)
        cfg = hub.resolve_config(f"clip:{arch}")  # never refused
        assert cfg.framework == ("meanp" if hub.backbone_problem(oc) is None else "openclip"), arch
        assert cfg.text_context_length == oc["text_cfg"].get("context_length", 77)
        assert cfg.backbone.quick_gelu == bool(oc.get("quick_gelu", False))
        assert cfg.backbone.open_clip == (oc if cfg.framework == "openclip" else {})
    # the kinds the issue names land on the wrapped path; CLIP's ViTs and ResNets stay on our own towers
    for arch in ("ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP2", "coca_ViT-B-32", "convnext_base", "EVA02-B-16",
                 "MobileCLIP-S1", "roberta-ViT-B-32", "xlm-roberta-base-ViT-B-32", "ViT-H-14-CLIPA", "PE-Core-B-16"):
        assert arch in wrapped
    for arch in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "ViT-bigG-14", "hybridtower-tiny"):
        assert arch in own
    print(f"\nopen_clip {open_clip.__version__}: {len(archs)} architectures, {len(own)} on hybridtower's towers, "
          f"{len(wrapped)} wrapped; {sum(1 for a in wrapped if hub.hub_names(open_clip.get_model_config(a)))} "
          "take a tokenizer or text-tower config from the Hugging Face hub")


def test_the_wrapped_path_can_be_asked_for_and_our_towers_cannot_take_the_others(archs):
    cfg = hub.resolve_config("clip:hybridtower-tiny", ["framework=openclip"])
    assert cfg.framework == "openclip" and cfg.backbone.open_clip["embed_dim"] == 128
    with pytest.raises(ConfigError, match="cannot be a pig model: its image tower is a timm model"):
        hub.resolve_config("clip:convnext_tiny", ["framework=pig"])
    with pytest.raises(ConfigError, match="close: ViT-B-32"):
        hub.create_model("clip:ViT-B-23")
    with pytest.raises(ConfigError, match="exceeds the 16 tokens"):
        hub.open_clip_tokenizer(hub.resolve_config("clip:ht-test-custom", ["text_context_length=20"]))


def test_the_wrapper_gives_our_towers_vectors_on_a_clip_architecture(tmp_path):
    """Same weights, same frames: open_clip's encode_image / encode_text through the wrapper == our towers."""
    import open_clip

    hub._register_package_archs()
    torch.manual_seed(3)
    clip = open_clip.create_model("hybridtower-tiny", pretrained=None, force_quick_gelu=True)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    ours = hub.create_model("clip:hybridtower-tiny", pretrained=str(path),
                            overrides=[f"video.num_frames={FRAMES}"]).eval()
    wrapped = hub.create_model("clip:hybridtower-tiny", pretrained=str(path),
                               overrides=[f"video.num_frames={FRAMES}", "framework=openclip"]).eval()
    assert ours.cfg.framework == "meanp" and wrapped.cfg.framework == "openclip"
    assert wrapped.embed_dim == ours.embed_dim == 128
    (t1, v1), (t2, v2) = _run(ours), _run(wrapped)
    assert torch.allclose(v1, v2, atol=1e-5) and torch.allclose(t1, t2, atol=1e-5)
    # the preprocessing is open_clip's for that file (resize the short side + centre crop); ours squashes
    assert wrapped.preprocess_config()["resize_mode"] == "shortest" and ours.preprocess_config()["resize_mode"] == "squash"


# ----- each kind: build, save, load, run -----

@pytest.mark.parametrize("name", list(TINY))
def test_tiny_architecture_builds_saves_loads_and_runs(saved, name):
    model, path = saved[name]
    assert model.cfg.framework == "openclip" and model.cfg.name == f"clip:{name}"
    assert model.cfg.backbone.open_clip == TINY[name]
    text, video = _run(model)
    assert text.shape == (len(CAPTIONS), TINY[name]["embed_dim"]) and video.shape == (2, TINY[name]["embed_dim"])
    assert torch.allclose(text.norm(dim=-1), torch.ones(len(CAPTIONS))) and torch.allclose(video.norm(dim=-1), torch.ones(2))
    assert model.score(text, video).shape == (len(CAPTIONS), 2)
    pre = model.preprocess_config()
    assert pre["image_size"] == TINY[name]["vision_cfg"]["image_size"] and pre["num_frames"] == FRAMES
    assert model.cfg.backbone.preprocess == {k: v for k, v in pre.items() if k != "num_frames"}
    counts = model.parameter_counts()
    assert counts["video_encoder"] > 0 and counts["text_encoder"] > 0

    back = hub.load_model(path)
    assert back.cfg == model.cfg and back.preprocess_config() == pre
    t2, v2 = _run(back)
    assert torch.allclose(text, t2, atol=1e-6) and torch.allclose(video, v2, atol=1e-6)
    # the video vector is CLIP4Clip meanP over open_clip's normalised frame features
    frames = _frames(back)
    with torch.no_grad():
        per_frame = torch.nn.functional.normalize(back.clip.encode_image(frames.flatten(0, 1)), dim=-1)
        expect = torch.nn.functional.normalize(per_frame.view(2, FRAMES, -1).mean(1), dim=-1)
    assert torch.allclose(v2, expect, atol=1e-6)


def test_the_search_path_does_not_trim_a_non_causal_text_towers_tokens(saved):
    """The search path cuts a batch's tokens after the highest id (CLIP's EOT) only for causal towers: a
    last-token / bidirectional tower says so (causal_text = False) and gets its tokens whole."""
    model, _ = saved["ht-test-custom"]
    assert model.causal_text is False
    tokens = model.tokenize(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), model.cfg.text_context_length)
    trimmed = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
    if trimmed.shape[1] < tokens.shape[1]:  # what trimming would have done: a different input
        with torch.no_grad():
            full = model.encode_text(tokens)
        assert full.shape[0] == len(CAPTIONS)
    assert model.tokenizer.num_tokens("a dog") == 4 and not model.tokenizer.is_truncated("a dog")
    assert model.tokenizer.is_truncated(" ".join(["word"] * 20))


def test_weights_from_a_file_and_a_local_dir_with_their_preprocessing(saved, tmp_path):
    import open_clip

    model, _ = saved["ht-test-timm"]
    state = model.clip.state_dict()
    path = tmp_path / "timm.pt"
    torch.save({"state_dict": state}, path)
    from_file = hub.create_model("clip:ht-test-timm", pretrained=str(path), overrides=[f"video.num_frames={FRAMES}"])
    assert all(torch.equal(from_file.clip.state_dict()[k], v) for k, v in state.items())
    folder = tmp_path / "timm-dir"
    folder.mkdir()
    pre = {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash", "interpolation": "bilinear"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": open_clip.get_model_config("ht-test-timm"),
                                                               "preprocess_cfg": pre}))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    m = hub.create_model("clip:ht-test-timm", pretrained=f"local-dir:{folder}", overrides=[f"video.num_frames={FRAMES}"])
    got = m.preprocess_config()
    assert (got["mean"], got["std"], got["resize_mode"], got["interpolation"]) == ([0.5] * 3, [0.5] * 3, "squash", "bilinear")
    back = hub.load_model(hub.save_model(m, tmp_path / "m.safetensors"))
    assert back.preprocess_config() == got  # recorded in the config, not re-derived from the architecture
    from hybridtower.encode import preprocess_for

    assert preprocess_for(back).resize_mode == "squash" and preprocess_for(back).mean == (0.5, 0.5, 0.5)


# ----- Hugging Face tokenizers and text towers -----

@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """huggingface_hub as without network: an endpoint that refuses connections, an empty cache."""
    from huggingface_hub import constants

    from hybridtower import clip_sources

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(clip_sources, "_probe_cache", {})


def _with_hf_names(tmp_path, tokenizer=None, text_model=None):
    import open_clip

    cfg = json.loads(json.dumps(TINY["ht-test-custom"]))
    cfg["text_cfg"].pop("tokenizer_kwargs")
    if tokenizer:
        cfg["text_cfg"]["hf_tokenizer_name"] = tokenizer
    if text_model:
        cfg["text_cfg"] = {"hf_model_name": text_model, "hf_tokenizer_name": tokenizer or text_model,
                           "hf_pooler_type": "cls_pooler", "hf_proj_type": "linear"}
    name = f"ht-test-hub-{len(os.listdir(tmp_path))}"
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    return name


def test_a_hub_tokenizer_without_network_fails_fast_in_one_line(no_hub, tmp_path):
    name = _with_hf_names(tmp_path, tokenizer="someorg/not-cached-tokenizer")
    assert hub.hub_names(hub.resolve_config(f"clip:{name}").backbone.open_clip) == {"tokenizer": "someorg/not-cached-tokenizer"}
    t0 = time.monotonic()
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="Hugging Face tokenizer: pip install transformers"):
            hub.create_model(f"clip:{name}")
    else:
        with pytest.raises(CheckpointError) as info:
            hub.create_model(f"clip:{name}")
        msg = str(info.value)
        assert "\n" not in msg and "no network?" in msg and "someorg/not-cached-tokenizer" in msg and "cache" in msg
    assert time.monotonic() - t0 < 10


def _tiny_bert_folder(folder):
    """A Hugging Face BERT with one tiny layer and a word-level tokenizer, as local files (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted({w for c in CAPTIONS for w in c.split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", model_max_length=16).save_pretrained(folder)
    BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=32, pad_token_id=0).save_pretrained(folder)
    return str(folder)


def test_hugging_face_text_tower_and_tokenizer_round_trip(tmp_path):
    pytest.importorskip("transformers")
    bert = _tiny_bert_folder(tmp_path / "bert")
    name = _with_hf_names(tmp_path, text_model=bert)
    torch.manual_seed(5)
    model = hub.create_model(f"clip:{name}", overrides=[f"video.num_frames={FRAMES}", "text_context_length=16"]).eval()
    assert model.cfg.framework == "openclip" and hub.hub_names(model.cfg.backbone.open_clip) == {}
    text, video = _run(model)
    assert text.shape == (3, 32) and torch.allclose(text.norm(dim=-1), torch.ones(3))
    assert model.tokenizer.num_tokens("a dog") == 4  # [CLS] a dog [SEP]
    back = hub.load_model(hub.save_model(model, tmp_path / "hf.safetensors"))
    t2, v2 = _run(back)
    assert torch.allclose(text, t2, atol=1e-6) and torch.allclose(video, v2, atol=1e-6)


# ----- the real CLI: index in a fresh process, then search -----

def test_cli_index_and_search_with_a_wrapped_checkpoint(saved, tmp_path, capsys):
    from tiny_index import make_videos

    from hybridtower.cli.main import main
    from hybridtower.index.searcher import Searcher

    model, ckpt = saved["ht-test-custom"]
    videos = make_videos(tmp_path / "clips", n=3, frames=8)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "hybridtower.cli.main", "index", str(videos[0].parent),
                          "--checkpoint", str(ckpt), "--out", str(tmp_path / "idx"), "--no-progress", "--json"],
                         capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert main(["search", str(tmp_path / "idx"), "a red ball bounces", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    hits = result["hits"] if isinstance(result, dict) else result
    assert len(hits) == 3
    searcher = Searcher.open(tmp_path / "idx")
    assert searcher.model.cfg.framework == "openclip"
    with torch.no_grad():
        expect = model.encode_text(model.tokenize(["a red ball bounces"])).numpy()
    assert abs(float((searcher.encode_query("a red ball bounces") * expect).sum()) - 1.0) < 1e-5


def test_the_new_config_fields_leave_existing_model_hashes_alone():
    """backbone.open_clip / backbone.preprocess (and fusion.enabled, fusion.keys) at their defaults are left out of the
    config hash, so indexes built before they existed still match their checkpoints."""
    import hashlib

    from hybridtower.core.config import config_hash, to_dict

    for name in ("pig-tiny", "meanp-vit-b-32", "clip:ViT-B-32"):
        cfg = hub.resolve_config(name)
        data = to_dict(cfg)
        data["fusion"].pop("enabled")
        data["fusion"].pop("keys")
        data["backbone"].pop("open_clip")
        data["backbone"].pop("preprocess")
        assert config_hash(cfg) == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    wrapped = hub.resolve_config("clip:ViT-B-32", ["framework=openclip"])
    assert config_hash(wrapped) != config_hash(hub.resolve_config("clip:ViT-B-32"))


@pytest.mark.parametrize("name", ["ht-test-coca", "ht-test-custom"])
def test_loading_adopts_the_checkpoint_on_the_meta_device(saved, monkeypatch, name):
    """No random init on load: built on the meta device, tensors adopted, open_clip's causal masks (never in a
    checkpoint) rebuilt; the same vectors as the model that was saved."""
    model, path = saved[name]

    def no_normal_build(*args, **kwargs):
        raise AssertionError("load_model built the model with weights instead of on the meta device")

    monkeypatch.setattr(checkpoints, "create_model", no_normal_build)  # load_model looks it up there
    back = hub.load_model(path)
    assert not hub._meta_tensors(back)
    (t1, v1), (t2, v2) = _run(model), _run(back)
    assert torch.allclose(t1, t2, atol=1e-6) and torch.allclose(v1, v2, atol=1e-6)
