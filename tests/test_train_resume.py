"""A run interrupted after step n and resumed gives the uninterrupted run's loss at step n+1 exactly."""

import json

import pytest
import torch

from hybridtower import hub
from hybridtower.data.synthetic import SynthConfig, generate
from hybridtower.train import TrainConfig, TrainError, Trainer


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(videos=12, images=0, workers=0), progress=False)  # 9 train / 1 val / 2 test
    return f"msrvtt:{root}"


def _cfg(data, **kw):
    base = dict(model="pig-tiny", data=data, batch_size=4, lr=1e-4, num_workers=0, log_every=1,
                stage1_steps=1, stage2_steps=4, eval_every=0, eval_batch_size=4, warmup_ratio=0.25)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r.get("event") == "train"}, recs


def test_resume_reproduces_the_next_losses(synth, tmp_path, monkeypatch):
    full = tmp_path / "full"
    Trainer(_cfg(synth), full, progress=False).run()
    ref, _ = _losses(full)
    assert sorted(ref) == [1, 2, 3, 4, 5]

    # same run, checkpointing every 2 steps, crashing inside step 3 (step 1 = stage 1; the checkpoint at
    # step 2 is in the middle of stage 2's first epoch: 9 train videos / batch 4 = 2 steps per epoch)
    part = tmp_path / "part"
    cfg = _cfg(synth, save_every=2)
    calls = {"n": 0}
    original = Trainer.train_step

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg, part, progress=False).run()
    monkeypatch.setattr(Trainer, "train_step", original)
    state = torch.load(part / "train_state.pt", weights_only=False)
    assert state["progress"]["global_step"] == 2 and state["progress"]["step_in_epoch"] == 1

    with pytest.raises(TrainError, match="--resume"):
        Trainer(cfg, part, progress=False).run()  # refuses to overwrite a run
    summary = Trainer(cfg, part, resume=True, progress=False).run()
    got, recs = _losses(part)
    for step in (3, 4, 5):  # bit-exact: weights, Adam moments, LR schedule, dropout RNG, data order
        assert got[step] == ref[step], step
    assert sorted(got) == [1, 2, 3, 4, 5]  # the log has no duplicate lines after the resume
    assert summary["steps"] == {"stage1": 1, "stage2": 4}
    # model.safetensors = best on val (the split is there), last.safetensors = the final weights
    final = hub.load_model(full / "last.safetensors").state_dict()
    resumed = hub.load_model(part / "last.safetensors").state_dict()
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    assert hub.read_checkpoint_metadata(part)["hybridtower.selection"] == "best t2v/R@1 on val"
    assert any(r.get("event") == "val" and r["split"] == "val" for r in recs)


def test_resume_refuses_a_changed_config(synth, tmp_path):
    run = tmp_path / "run"
    Trainer(_cfg(synth, stage1_steps=0, stage2_steps=1, val_split="none"), run, progress=False).run()
    assert hub.read_checkpoint_metadata(run)["hybridtower.selection"] == "final"
    with pytest.raises(TrainError, match="lr"):
        Trainer(_cfg(synth, stage1_steps=0, stage2_steps=1, val_split="none", lr=1e-3), run, resume=True,
                progress=False).run()


def test_an_undecodable_video_is_skipped_not_fatal(synth, tmp_path):
    from hybridtower.data import load_split

    root = tmp_path / "broken"
    import shutil

    shutil.copytree(synth.split(":", 1)[1], root)
    victim = load_split(f"msrvtt:{root}", "train-9k").videos[0].path
    victim.write_bytes(b"not a video")
    cfg = _cfg(f"msrvtt:{root}", batch_size=9, stage1_steps=0, stage2_steps=1, val_split="none")
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()  # the batch holds all 9 train videos
    assert summary["steps"] == {"stage2": 1}
    losses, _ = _losses(tmp_path / "run")
    assert list(losses) == [1] and losses[1] > 0


def test_frame_cache_serves_the_same_items(synth):
    from hybridtower.data import PreprocessConfig, load_split
    from hybridtower.data.datasets import TrainPairs
    from hybridtower.train.frame_cache import CachedTrainPairs

    base = TrainPairs(load_split(synth, "train-9k"), 8, PreprocessConfig(image_size=64), sample_mode="jitter", seed=5)
    cached = CachedTrainPairs(base)
    for epoch in (0, 3):
        cached.set_epoch(epoch)
        for i in range(len(base)):
            a, b = base[i], cached[i]
            assert a["text"] == b["text"] and a["video_id"] == b["video_id"]
            torch.testing.assert_close(b["frames"], a["frames"], atol=1e-5, rtol=0)
