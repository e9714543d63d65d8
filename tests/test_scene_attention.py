"""The scene-attention investigation: scene shares of the fusion attention, on a tiny bold-scenes set."""

import numpy as np
import pytest
import torch

from hybridtower import hub
from hybridtower.data.synthetic import SynthConfig, generate
from hybridtower.experiments.scene_attention import frame_scenes, scene_attention, scene_masses


def test_frame_scenes_and_masses():
    assert frame_scenes([0, 1, 3, 4, 7, 8, 11], 4) == [0, 0, 0, 1, 1, 2, 2]
    share = scene_masses(np.array([0.1, 0.1, 0.2, 0.6]), [0, 0, 1, 1], 2)
    assert share == pytest.approx([0.2, 0.8])


def test_scene_attention_runs_on_a_pig_m_checkpoint(tmp_path):
    synth = tmp_path / "synth"
    generate(synth, SynthConfig(kind="scenes", scene_style="bold", scenes_min=2, scenes_max=3, frames_per_scene=4,
                                videos=6, images=0, workers=0, formats=("mp4",)), progress=False)
    torch.manual_seed(0)
    run = hub.save_model(hub.create_model("pig-m4-tiny"), tmp_path / "m.safetensors")
    res = scene_attention(run, synth, split="test-3k")
    n = res["all"]["captions"]
    assert n == 5 and n == res["ranks_when_top"]["captions"] + res["ranks_otherwise"]["captions"]
    assert res["pseudo_queries"] == 4
    assert 0.0 <= res["mean_mass_on_caption_scene"] <= 1.0 and 1 / 3 <= res["mean_uniform_share"] <= 1 / 2
    with pytest.raises(ValueError):
        scene_attention(hub.save_model(hub.create_model("meanp-tiny"), tmp_path / "mp.safetensors"), synth)
