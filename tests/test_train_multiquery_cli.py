"""PIG-M end to end: `hybridtower train --model pig-m4-tiny` on tiny synthetic data, then evaluation
(scores = max over each video's 4 vectors, checked against a brute-force loop)."""

import json

import torch

from hybridtower import hub


def test_evaluate_and_train_cli_end_to_end(tmp_path, capsys):
    from hybridtower.cli.main import main
    from hybridtower.data import load_split
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.encode import encode_texts
    from hybridtower.eval import evaluate, ranks_t2v, retrieval_metrics, score_split

    root = tmp_path / "synth"
    generate(root, SynthConfig(videos=12, images=0, workers=0), progress=False)
    run = tmp_path / "run"
    rc = main(["train", "--model", "pig-m4-tiny", "--data", f"msrvtt:{root}", "--steps", "2", "--batch-size", "4",
               "--seed", "1", "--output-dir", str(run), "--set", "num_workers=0", "--set", "eval_batch_size=4",
               "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == {"stage2": 2}
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "val" for r in recs)
    model = hub.load_model(run)
    assert model.cfg.num_pseudo_queries == 4
    split = load_split(f"msrvtt:{root}", "test-3k")
    scores, gt, info = score_split(model, split, batch_size=2, progress=False)
    from hybridtower.data.datasets import VideoFrames
    from hybridtower.encode import encode_videos, eval_sample_mode, preprocess_for

    vids = encode_videos(model, VideoFrames(split, num_frames=8, preprocess=preprocess_for(model),
                                            sample_mode=eval_sample_mode(model)), progress=False).features
    assert vids.shape[1:] == (4, model.embed_dim)
    t = encode_texts(model, [c.text for c in split.captions])
    brute = torch.stack([torch.stack([max(t[i] @ vids[j, m] for m in range(4)) for j in range(len(vids))])
                         for i in range(len(t))])
    torch.testing.assert_close(scores, brute, rtol=1e-5, atol=1e-6)
    res = evaluate(model, split, batch_size=2, progress=False)
    assert res["t2v"] == retrieval_metrics(ranks_t2v(scores, gt))
    assert "4 vectors" in res["protocol"]["scoring"]
    assert main(["evaluate", "--checkpoint", str(run), "--data", f"msrvtt:{root}", "--split", "test-3k", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_videos"] == len(split.videos)
