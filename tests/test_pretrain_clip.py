"""``pretrain-clip`` writes open_clip checkpoints that ``hub.create_model`` loads like OpenAI's weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hybridtower import hub
from hybridtower.cli.main import main
from hybridtower.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_img")
    generate(root, SynthConfig(videos=3, images=24, workers=0), progress=False)  # 23 train / 1 val images
    out = tmp_path_factory.mktemp("clip")
    rc = main(["pretrain-clip", "--data", f"images:{root}/images.jsonl", "--output-dir", str(out), "--steps", "3",
               "--batch-size", "8", "--num-workers", "0", "--no-progress", "--lr", "1e-3"])
    assert rc == 0
    return root, out


def test_outputs_and_loss_log(pretrained):
    _, out = pretrained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["arch"] == "hybridtower-tiny"
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)  # steps 1 and 3
    assert summary["val"]["pairs"] == 2  # the val image's 2 captions


@pytest.mark.parametrize("name", ["open_clip_model.safetensors", "checkpoint.pt"])
def test_hub_loads_it_through_the_open_clip_path(pretrained, name):
    _, out = pretrained
    state = load_file(str(out / "open_clip_model.safetensors"))
    fresh = hub.create_model("meanp-tiny")  # random weights differ from the pretrained ones
    assert not torch.equal(fresh.text_encoder.token_embedding.weight, state["token_embedding.weight"])
    model = hub.create_model("pig-tiny", pretrained=str(out / name))
    assert torch.equal(model.text_encoder.token_embedding.weight, state["token_embedding.weight"])
    assert torch.equal(model.video_encoder.visual.conv1.weight, state["visual.conv1.weight"])
    assert torch.equal(model.logit_scale.detach(), torch.tensor(4.6052))  # the retrieval model's own init
    # the generator is a copy of the (pretrained) text tower
    assert torch.equal(model.generator.transformer.resblocks[0].attn.in_proj_weight,
                       state["transformer.resblocks.0.attn.in_proj_weight"])
    assert torch.load(out / "checkpoint.pt", weights_only=True)["arch"] == "hybridtower-tiny"


def test_train_accepts_the_output_folder(pretrained):
    from hybridtower.train.trainer import resolve_pretrained

    _, out = pretrained
    assert resolve_pretrained(str(out)) == str(out / "open_clip_model.safetensors")


def test_video_data_uses_one_frame_per_caption(pretrained, tmp_path):
    root, _ = pretrained
    rc = main(["pretrain-clip", "--data", f"msrvtt:{root}", "--split", "train-9k", "--output-dir", str(tmp_path),
               "--steps", "1", "--batch-size", "2", "--num-workers", "0", "--no-progress", "--set", "val_split=none"])
    assert rc == 0
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 1


def test_temperature_can_start_from_the_clip(pretrained):
    from hybridtower.train import TrainConfig
    from hybridtower.train.trainer import build_model

    _, out = pretrained
    stored = float(load_file(str(out / "open_clip_model.safetensors"))["logit_scale"])
    assert stored != pytest.approx(4.6052, abs=1e-3)  # pretraining starts at ln(1/0.07) = 2.659
    model = build_model(TrainConfig(model="meanp-tiny", pretrained=str(out), logit_scale_from_clip=True))
    assert model.logit_scale.item() == pytest.approx(stored)
    assert build_model(TrainConfig(model="meanp-tiny", pretrained=str(out))).logit_scale.item() == pytest.approx(4.6052)
