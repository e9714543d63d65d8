"""`hybridtower train` then `hybridtower evaluate` on a tiny synthetic set, from the command line."""

import json

import pytest

from hybridtower import hub
from hybridtower.cli.main import build_parser, main
from hybridtower.data import list_formats
from hybridtower.data.synthetic import SynthConfig, generate
from hybridtower.models import list_presets


def test_help_lists_every_preset_and_format():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["train"].format_help()
    frameworks, sizes = {p.split("-", 1)[0] for p in list_presets()}, {p.split("-", 1)[1] for p in list_presets()}
    assert "{" + ",".join(sorted(frameworks, key=text.index)) + "}" in text
    assert all(s in text for s in sizes)
    assert all(f in text for f in list_formats())
    assert "pretrain-clip" in sub.choices


def test_train_then_evaluate(tmp_path, capsys):
    root = tmp_path / "synth"
    generate(root, SynthConfig(videos=12, images=0, workers=0), progress=False)
    run = tmp_path / "run"
    rc = main(["train", "--model", "meanp-tiny", "--data", f"msrvtt:{root}", "--steps", "2", "--batch-size", "4",
               "--seed", "1", "--output-dir", str(run), "--set", "num_workers=0", "--set", "eval_batch_size=4",
               "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == {"stage2": 2} and summary["model_file"].startswith("best t2v/R@1 on val")
    for name in ("model.safetensors", "last.safetensors", "train_state.pt", "config.yaml", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert hub.load_model(run).cfg.name == "meanp-tiny"
    rc = main(["evaluate", "--checkpoint", str(run), "--data", f"msrvtt:{root}", "--split", "test-3k", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_videos"] == 2 and result["num_captions"] == 10
    assert 0 <= result["t2v"]["R@1"] <= 100
    # an existing run is not overwritten; the saved config resumes (nothing left to do)
    assert main(["train", "--model", "meanp-tiny", "--data", f"msrvtt:{root}", "--output-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(run), "--resume", "--no-progress"]) == 0


def test_stage1_is_skipped_for_baselines_and_runs_on_images(tmp_path, capsys):
    root = tmp_path / "synth"
    generate(root, SynthConfig(videos=12, images=8, workers=0), progress=False)
    run = tmp_path / "pig"
    rc = main(["train", "--model", "pig-tiny", "--data", f"msrvtt:{root}", "--steps", "1", "--batch-size", "4",
               "--output-dir", str(run), "--set", "num_workers=0", "--set", "val_split=none", "--set", "stage1_steps=1",
               "--set", f"stage1_data=images:{root}/images.jsonl", "--no-progress", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["steps"] == {"stage1": 1, "stage2": 1}
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stage1 = [r for r in recs if r.get("event") == "train" and r["stage"] == "stage1"]
    assert stage1 and set(stage1[0]) >= {"recon"} and "contrastive" not in stage1[0]
    rc = main(["train", "--model", "xpool-tiny", "--data", f"msrvtt:{root}", "--steps", "1", "--batch-size", "4",
               "--output-dir", str(tmp_path / "xp"), "--set", "num_workers=0", "--set", "val_split=none",
               "--set", "stage1_steps=5", "--no-progress", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["steps"] == {"stage2": 1}


def test_errors_are_user_errors(tmp_path, capsys):
    assert main(["train", "--model", "pig-tiny", "--output-dir", str(tmp_path / "r")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--model", "nope-tiny", "--data", f"msrvtt:{tmp_path}", "--output-dir", str(tmp_path / "r")]) == 2
    assert "unknown" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", "x:y"])  # --output-dir is required
