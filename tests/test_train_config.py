"""TrainConfig loading, --set routing, shipped recipes, sharding of global batches."""

from pathlib import Path

import pytest

from hybridtower.core.errors import ConfigError
from hybridtower.models import list_presets, preset_config
from hybridtower.train.config import TrainConfig, load_train_config
from hybridtower.train.sampler import GlobalBatchSampler, check_batch_layout

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BENCHMARKS = ("msrvtt-1ka", "msrvtt-3k", "msvd", "vatex", "didemo")


def test_set_routes_model_keys_and_validates(tmp_path):
    cfg = load_train_config(None, ["lr=1e-4", "model.its.k=4", "betas=[0.8, 0.9]"], model="pig-tiny", seed=None)
    assert cfg.lr == 1e-4 and cfg.model_overrides == ["its.k=4"] and cfg.betas == [0.8, 0.9] and cfg.seed == 42
    assert preset_config(cfg.model, cfg.model_overrides).its.k == 4
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(None, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="precision"):
        load_train_config(None, ["precision=fp8"])
    path = tmp_path / "c.yaml"
    path.write_text("model: xpool-tiny\nstage2_epochs: 3\n")
    cfg = load_train_config(path, ["stage2_epochs=4"], stage2_epochs=2, data="jsonl:x.jsonl")
    assert (cfg.model, cfg.stage2_epochs, cfg.data) == ("xpool-tiny", 4, "jsonl:x.jsonl")  # file < options < --set


@pytest.mark.parametrize("bench", BENCHMARKS)
@pytest.mark.parametrize("framework", ["pig", "meanp", "clipvip", "xpool"])
def test_shipped_recipes(bench, framework):
    for size in ("vit-b-32", "vit-b-16"):
        cfg = load_train_config(CONFIGS / f"{bench}-{framework}-{size}.yaml")
        model = preset_config(cfg.model, cfg.model_overrides)
        assert (model.framework, model.video.num_frames, model.text_context_length) == (framework, 12, 50)
        assert model.backbone.arch == ("ViT-B-32" if size == "vit-b-32" else "ViT-B-16")
        assert (cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps) == (3e-6, 0.2, [0.9, 0.98], 1e-6)
        assert (cfg.warmup_ratio, cfg.schedule, cfg.grad_clip, cfg.batch_size) == (0.01, "cosine", 1.0, 128)
        assert cfg.data.split(":")[0] == bench.split("-")[0]
        assert "test" not in cfg.val_split  # never select on test


def test_synthetic_recipes_are_the_comparison_recipe():
    from hybridtower.experiments.comparison import PRESETS, RECIPE

    for fw in ("pig", "meanp", "clipvip", "xpool"):  # the shipped synthetic-*.yaml files
        cfg = load_train_config(CONFIGS / f"synthetic-{fw}-tiny.yaml")
        assert cfg.model == PRESETS[fw] == f"{fw}-tiny" and cfg.model in list_presets()
        assert {k: getattr(cfg, k) for k in RECIPE} == RECIPE  # one budget for every framework


def test_global_batches_shard_exactly():
    one = list(GlobalBatchSampler(10, 4, seed=3, epoch=1))
    ranks = [list(GlobalBatchSampler(10, 4, rank=r, world_size=2, seed=3, epoch=1)) for r in (0, 1)]
    assert len(one) == 2 and all(len(b) == 4 for b in one)
    assert [a + b for a, b in zip(*ranks)] == one  # rank order rebuilds the global batch
    assert list(GlobalBatchSampler(10, 4, seed=3, epoch=1, start_step=1)) == one[1:]
    assert one != list(GlobalBatchSampler(10, 4, seed=3, epoch=2))
    assert check_batch_layout(128, 4, 2) == 16
    with pytest.raises(ConfigError, match="divisible"):
        check_batch_layout(10, 4, 1)
    with pytest.raises(ConfigError, match="exceeds"):
        GlobalBatchSampler(3, 4)


def test_defaults_are_the_release_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.batch_size, cfg.stage1_epochs, cfg.lambda_recon, cfg.new_module_lr_mult) == (3e-6, 128, 0, 1.0, 1.0)
