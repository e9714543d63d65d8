"""evaluate() end to end on a tiny synthetic set, the index vector path, skipped videos, and the CLI."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from hybridtower import hub
from hybridtower.data import load_split
from hybridtower.data.datasets import VideoFrames
from hybridtower.encode import encode_texts, encode_videos, eval_sample_mode, preprocess_for
from hybridtower.eval import evaluate, ranks_t2v, ranks_v2t, retrieval_metrics, score_split
from hybridtower.eval.runner import EvaluationError

KEYS = {"R@1", "R@5", "R@10", "MdR", "MnR"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(videos=10, images=2, frames=8, test_fraction=0.5, val_fraction=0.1,
                      captions_per_video=3, workers=0)
    generate(root, cfg, overwrite=True, progress=False)
    return root


@pytest.fixture(scope="module")
def split(synth):
    s = load_split(f"jsonl:{synth}/captions.jsonl", "test")
    assert len(s.videos) >= 4 and len(s.captions) == 3 * len(s.videos)  # multi-caption split
    return s


@pytest.mark.parametrize("fw", ["pig", "meanp"])
def test_query_independent_scores_are_the_index_vectors(tiny_models, split, fw):
    model = tiny_models[fw]
    scores, gt, info = score_split(model, split, batch_size=3, progress=False)
    frames = VideoFrames(split, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                         sample_mode=eval_sample_mode(model))
    assert info["sample_mode"] == {"pig": "linspace", "meanp": "uniform"}[fw]
    v = encode_videos(model, frames, batch_size=3, progress=False)
    t = encode_texts(model, [c.text for c in split.captions])
    assert torch.equal(scores, t @ v.features.T)
    assert gt.tolist() == split.caption_video_indices()
    assert not info["absent"].any() and info["skipped_videos"] == []


def test_xpool_scored_by_pairwise_fusion(tiny_models, split):
    model = tiny_models["xpool"]
    scores, gt, _ = score_split(model, split, batch_size=4, progress=False, pair_text_chunk=5, pair_video_chunk=2)
    frames = VideoFrames(split, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model))
    feats = encode_videos(model, frames, progress=False).features
    assert feats.dim() == 3  # per-frame features, not one vector
    t = encode_texts(model, [c.text for c in split.captions])
    with torch.no_grad():
        ref = model.score(t, feats)
    torch.testing.assert_close(scores, ref, rtol=1e-5, atol=1e-5)
    # and it is not the plain dot product of pooled features
    assert not torch.allclose(scores, t @ torch.nn.functional.normalize(feats.mean(1), dim=-1).T, atol=1e-3)


def test_evaluate_end_to_end(tiny_models, split):
    model = tiny_models["pig"]
    model.train()  # evaluate must switch to eval and restore the caller's mode
    res = evaluate(model, split, batch_size=4, progress=False, dsl=True, return_ranks=True)
    assert model.training
    model.eval()
    assert set(res["t2v"]) == KEYS and set(res["v2t"]) == KEYS
    assert res["num_videos"] == len(split.videos) and res["num_captions"] == len(split.captions)
    assert res["model"] == "pig-tiny" and res["split"] == "test" and res["data"].startswith("jsonl:")
    assert res["skipped_videos"] == [] and res["protocol"]["t2v_queries_with_ties"] == 0
    scores, gt, _ = score_split(model, split, batch_size=4, progress=False)
    assert res["t2v"] == retrieval_metrics(ranks_t2v(scores, gt))
    assert res["v2t"] == retrieval_metrics(ranks_v2t(scores, gt))
    assert len(res["ranks"]["t2v"]) == len(split.captions) and len(res["ranks"]["v2t"]) == len(split.videos)
    # DSL is present only on request and labelled; the plain numbers do not change with it
    assert set(res["dsl"]) == {"t2v", "v2t", "note"} and "not comparable" in res["dsl"]["note"]
    plain = evaluate(model, split, batch_size=4, progress=False)
    assert "dsl" not in plain and plain["t2v"] == res["t2v"]


def test_missing_and_broken_videos_count_as_failures(tiny_models, split, tmp_path, caplog):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    videos = list(split.videos)
    videos[0] = dataclasses.replace(videos[0], path=None)  # file not found
    videos[2] = dataclasses.replace(videos[2], path=broken)  # undecodable
    damaged = dataclasses.replace(split, videos=videos)
    model = tiny_models["meanp"]
    with caplog.at_level("WARNING"):
        res = evaluate(model, damaged, batch_size=2, progress=False, return_ranks=True)
    assert "scored as failures" in caplog.text
    assert [s["video_id"] for s in res["skipped_videos"]] == [videos[0].video_id, videos[2].video_id]
    assert res["num_videos"] == len(videos) and res["num_captions"] == len(split.captions)  # full denominators
    gt = np.array(split.caption_video_indices())
    n_ok = len(videos) - 2
    t2v = res["ranks"]["t2v"]
    assert (t2v[np.isin(gt, [0, 2])] == n_ok + 1).all()
    assert (t2v[~np.isin(gt, [0, 2])] <= n_ok).all()
    v2t = res["ranks"]["v2t"]
    assert v2t[0] == v2t[2] == len(videos) + 1 and (np.delete(v2t, [0, 2]) <= len(videos)).all()
    # the surviving videos are ranked exactly as on the intact split restricted to them
    full_scores, _, _ = score_split(model, split, batch_size=2, progress=False)
    keep = [i for i in range(len(videos)) if i not in (0, 2)]
    rows = ~np.isin(gt, [0, 2])
    sub_gt = np.searchsorted(keep, gt[rows])
    np.testing.assert_array_equal(t2v[rows], ranks_t2v(full_scores[rows][:, keep], sub_gt))


def test_nothing_decodable_is_an_error(tiny_models, split):
    gone = dataclasses.replace(split, videos=[dataclasses.replace(v, path=None) for v in split.videos])
    with pytest.raises(EvaluationError, match="none of the"):
        evaluate(tiny_models["meanp"], gone, progress=False)


def test_cli_evaluate_json_and_table(tiny_models, synth, split, tmp_path, capsys):
    from hybridtower.cli.main import main

    run = tmp_path / "run"
    hub.save_model(tiny_models["meanp"], run / "model.safetensors")
    data = f"jsonl:{synth}/captions.jsonl"
    out_file = tmp_path / "metrics.json"
    rc = main(["evaluate", "--checkpoint", str(run), "--data", data, "--json", "--no-progress",
               "--batch-size", "4", "--output", str(out_file)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert {"t2v", "v2t", "num_videos", "num_captions", "model", "data"} <= set(res)
    assert set(res["t2v"]) == KEYS and res["data"] == data and res["model"] == "meanp-tiny"
    assert res["split"] == "test"  # default split
    from hybridtower.cli.commands.evaluate import rounded

    stored = json.loads(out_file.read_text())  # --output keeps full precision; stdout is rounded for display
    assert rounded(stored["t2v"]) == res["t2v"]
    assert all(round(v, 4) == v for v in res["t2v"].values())
    lib = evaluate(hub.load_model(run), split, batch_size=4, progress=False)
    assert stored["t2v"] == lib["t2v"] and stored["v2t"] == lib["v2t"]

    assert main(["evaluate", "--checkpoint", str(run), "--data", data, "--no-progress", "--dsl"]) == 0
    text = capsys.readouterr().out
    assert "t2v" in text and "v2t" in text and "DSL (extra" in text

    assert main(["evaluate", "--checkpoint", str(run), "--data", data, "--split", "nope", "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "absent"), "--data", data]) == 2


def test_tied_scores_are_reported(tiny_models, split, monkeypatch):
    """A collapsed model (every score equal) gets the worst rank everywhere (pessimistic ties), R@1 = 0, and
    the result warns about it."""
    import hybridtower.eval.runner as runner

    real = runner.score_split

    def constant(*args, **kwargs):
        scores, gt, info = real(*args, **kwargs)
        return torch.zeros_like(scores), gt, info

    monkeypatch.setattr(runner, "score_split", constant)
    res = evaluate(tiny_models["meanp"], split, batch_size=4, progress=False)
    assert res["t2v"]["R@1"] == 0.0 and res["v2t"]["R@1"] == 0.0
    assert res["t2v"]["MnR"] == len(split.videos)
    assert res["protocol"]["t2v_queries_with_ties"] == len(split.captions)
    assert res["ties"] == {"t2v_queries": len(split.captions), "fraction": 1.0, "warning": True}
    assert "WARNING" in runner.format_table(res) and "tie exactly" in runner.format_table(res)
