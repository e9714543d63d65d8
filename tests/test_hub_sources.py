"""CLIP weights from every source open_clip knows (files, local-dir:, hf-hub:, tags), `clip:ARCH` models,
and downloads that fail fast and in one line without a network. No test touches the network: the hub
endpoint is pointed at a closed local port, or a Hugging Face cache is laid out on disk."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from hybridtower import hub
from hybridtower.core.errors import CheckpointError, ConfigError
from hybridtower import clip_sources

TINY = "hybridtower-tiny"
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


@pytest.fixture(scope="module")
def tiny_clip():
    """A tiny open_clip model with distinctive random weights and its open_clip config."""
    import open_clip

    hub._register_package_archs()
    torch.manual_seed(11)
    clip = open_clip.create_model(TINY, pretrained=None)
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return clip.state_dict(), open_clip.get_model_config(TINY)


def _save_safetensors(state, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _open_clip_folder(folder, state, model_cfg, preprocess_cfg=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}))
    if state is not None:
        _save_safetensors(state, folder / "open_clip_model.safetensors")
    return folder


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """huggingface_hub as on a machine without network: nothing cached, the endpoint refuses connections,
    and offline mode NOT set (so the fast failure is our doing, not HF_HUB_OFFLINE's)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", CLOSED_ENDPOINT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(clip_sources, "_probe_cache", {})
    return tmp_path / "hf-cache"


def _assert_same_backbone(model, state):
    assert torch.equal(model.video_encoder.visual.conv1.weight, state["visual.conv1.weight"])
    assert torch.equal(model.video_encoder.visual.proj, state["visual.proj"])
    assert torch.equal(model.text_encoder.token_embedding.weight, state["token_embedding.weight"])
    assert torch.equal(model.text_encoder.text_projection, state["text_projection"])


# ----- clip:ARCH -----

def test_clip_model_from_a_file_round_trips(tmp_path, tiny_clip):
    state, model_cfg = tiny_clip
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": state}, path)  # open_clip's own checkpoint layout
    m = hub.create_model(f"clip:{TINY}", pretrained=str(path)).eval()
    assert m.cfg.framework == "meanp" and m.cfg.name == f"clip:{TINY}"
    assert m.cfg.text_context_length == model_cfg["text_cfg"]["context_length"] == 77
    assert m.cfg.backbone.quick_gelu is True  # the open_clip config says so
    assert m.embed_dim == model_cfg["embed_dim"]
    assert m.preprocess_config()["image_size"] == model_cfg["vision_cfg"]["image_size"]
    _assert_same_backbone(m, state)
    frames = torch.randn(2, m.cfg.video.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = m.tokenize(["a red ball", "a blue cube"])
    with torch.no_grad():
        before = m.score(m.encode_text(tokens), m.encode_video(frames))
    saved = hub.save_model(m, tmp_path / "run" / "model.safetensors")
    back = hub.load_model(saved)
    assert back.cfg == m.cfg
    with torch.no_grad():
        assert torch.equal(back.score(back.encode_text(tokens), back.encode_video(frames)), before)


def test_clip_config_follows_every_supported_open_clip_architecture():
    import open_clip

    archs = hub.list_clip_archs("meanp")  # hybridtower's own towers (the others: tests/test_openclip_archs.py)
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", TINY} <= set(archs)
    for arch in archs:
        cfg = hub.resolve_config(f"clip:{arch}")
        oc = open_clip.get_model_config(arch)
        assert cfg.backbone.arch == arch and cfg.framework == "meanp"
        assert cfg.text_context_length == oc["text_cfg"].get("context_length", 77)
        assert cfg.backbone.quick_gelu == bool(oc.get("quick_gelu", False))


def test_clip_names_that_cannot_work_say_why():
    with pytest.raises(ConfigError, match="close: ViT-B-32"):
        hub.create_model("clip:ViT-B-23")
    # every open_clip architecture builds as clip:ARCH; only our own towers cannot take every one
    with pytest.raises(ConfigError, match="cannot be a meanp model: .*tokenizer|cannot be a meanp model: .*text tower"):
        hub.create_model("clip:ViT-B-16-SigLIP", overrides=["framework=meanp"])
    with pytest.raises(ConfigError, match="cannot be a pig model: its image tower is a timm model"):
        hub.create_model("clip:convnext_tiny", overrides=["framework=pig"])


def test_clip_model_builds_on_a_resnet_backbone():
    m = hub.create_model("clip:RN50", overrides=["video.num_frames=2"]).eval()
    with torch.no_grad():
        v = m.encode_video(torch.randn(1, 2, 3, 224, 224))
    assert v.shape == (1, 1024) and torch.allclose(v.norm(dim=-1), torch.ones(1))


# ----- local-dir: and hf-hub: -----

def test_local_dir_folder_loads_weights_and_preprocessing(tmp_path, tiny_clip):
    state, model_cfg = tiny_clip
    folder = _open_clip_folder(tmp_path / "my-clip", state, model_cfg, {"mean": [0.5] * 3, "std": [0.25] * 3})
    for preset in (f"clip:{TINY}", "pig-tiny"):
        m = hub.create_model(preset, pretrained=f"local-dir:{folder}")
        _assert_same_backbone(m, state)
        assert m.preprocess_config()["mean"] == [0.5] * 3 and m.preprocess_config()["std"] == [0.25] * 3


def test_local_dir_problems_are_one_clear_error(tmp_path, tiny_clip):
    import open_clip

    state, model_cfg = tiny_clip
    with pytest.raises(CheckpointError, match="no such folder"):
        hub.create_model(f"clip:{TINY}", pretrained=f"local-dir:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no open_clip_config.json"):
        hub.create_model(f"clip:{TINY}", pretrained=f"local-dir:{tmp_path / 'empty'}")
    weightless = _open_clip_folder(tmp_path / "weightless", None, model_cfg)
    with pytest.raises(CheckpointError, match="holds no weights file"):
        hub.create_model(f"clip:{TINY}", pretrained=f"local-dir:{weightless}")
    # a folder of another architecture is refused by its config, naming the architecture it is
    b32 = _open_clip_folder(tmp_path / "b32", None, open_clip.get_model_config("ViT-B-32"))
    with pytest.raises(CheckpointError, match="does not fit architecture hybridtower-tiny: it is a ViT-B-32 model"):
        hub.create_model(f"clip:{TINY}", pretrained=f"local-dir:{b32}")


def _hf_cache_repo(cache, repo, files: dict):
    """Lay out ``repo`` in a Hugging Face hub cache as huggingface_hub leaves it after a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, write in files.items():
        write(snap / name)


def test_hf_hub_name_loads_from_the_hub_cache_without_network(no_hub, tiny_clip, tmp_path):
    state, model_cfg = tiny_clip
    gelu_cfg = dict(model_cfg, quick_gelu=False)  # weights trained with plain GELU (like LAION's)
    config = {"model_cfg": gelu_cfg, "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    _hf_cache_repo(no_hub, "someorg/tiny-clip", {
        "open_clip_config.json": lambda p: p.write_text(json.dumps(config)),
        "open_clip_model.safetensors": lambda p: _save_safetensors(state, p),
    })
    t0 = time.monotonic()
    m = hub.create_model(f"clip:{TINY}", pretrained="hf-hub:someorg/tiny-clip")
    assert time.monotonic() - t0 < 10
    _assert_same_backbone(m, state)
    assert m.cfg.backbone.quick_gelu is False  # the activation the weights were trained with, recorded
    assert m.preprocess_config()["mean"] == [0.1, 0.2, 0.3]
    back = hub.load_model(hub.save_model(m, tmp_path / "m.safetensors"))
    assert back.cfg.backbone.quick_gelu is False
    assert torch.equal(back.video_encoder.visual.proj, state["visual.proj"])


# ----- no network: fast, one line, says what to do -----

def _one_line_fast(call, budget_s=10.0):
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        call()
    took = time.monotonic() - t0
    message = str(info.value)
    assert took < budget_s, took
    assert "\n" not in message
    return message


def test_tag_without_network_fails_fast_in_one_line(no_hub):
    msg = _one_line_fast(lambda: hub.create_model("clip:ViT-B-32", pretrained="openai"))
    assert "cannot download the 'openai' weights of ViT-B-32" in msg
    assert "no network?" in msg and "127.0.0.1 is unreachable" in msg
    assert "vit_base_patch32_clip_224.openai" in msg
    assert "--pretrained path/to/open_clip_model.safetensors" in msg
    msg = _one_line_fast(lambda: hub.create_model("meanp-vit-b-32", pretrained="laion2b_s34b_b79k"))
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg and "--pretrained path/to/" in msg


def test_hf_hub_without_network_points_to_local_dir(no_hub):
    msg = _one_line_fast(lambda: hub.create_model("clip:ViT-B-32", pretrained="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"))
    assert "cannot download hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in msg
    assert "open_clip_config.json" in msg and "--pretrained local-dir:" in msg


def test_a_failed_download_with_network_gives_the_reason(no_hub, monkeypatch):
    import open_clip

    def refuse(*args, **kwargs):
        raise ConnectionError("connection reset by peer\nsecond line of a long report")

    monkeypatch.setattr(clip_sources, "_reachable", lambda host, port=443, timeout=0: True)
    monkeypatch.setattr(open_clip, "download_pretrained", refuse)
    msg = _one_line_fast(lambda: hub.create_model("clip:ViT-B-32", pretrained="openai"))
    assert "(connection reset by peer second line of a long report)" in msg and "no network" not in msg


def test_cli_process_without_network_prints_no_retry_lines(tmp_path):
    """The whole path in a fresh process: no HF_HUB_OFFLINE, an endpoint that refuses connections."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=CLOSED_ENDPOINT, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "home"))
    code = (
        "import time, sys\n"
        "import open_clip  # its import (seconds on a busy machine) is not what is timed\n"
        "from hybridtower import hub\n"
        "from hybridtower.core.errors import CheckpointError\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    hub.create_model('meanp-vit-b-32', pretrained='openai')\n"
        "except CheckpointError as exc:\n"
        "    print(f'{time.monotonic() - t0:.2f}')\n"
        "    print(exc, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 10
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Retrying" not in out.stderr and "--pretrained path/to/" in lines[0]
