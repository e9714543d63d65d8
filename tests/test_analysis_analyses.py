"""``hybridtower analyze``: oracle, pseudo-query, ITS sweep and ITS patches on a tiny synthetic split."""

import json

import pytest
import torch

from hybridtower import hub
from hybridtower.analysis.common import AnalysisError, collect_pig_features, subset_split
from hybridtower.analysis.its_sweep import its_capacity, its_sweep_analysis, parse_ks
from hybridtower.analysis.its_visual import its_patches, position_to_patch
from hybridtower.analysis.oracle import oracle_analysis
from hybridtower.analysis.pseudo_query import auc, own_other_cosines, pca_2d, pseudo_query_analysis
from hybridtower.cli.main import main
from hybridtower.data import load_split
from hybridtower.eval import evaluate, ranks_t2v, retrieval_metrics


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(videos=12, images=0, frames=8, test_fraction=0.5, val_fraction=0.1, captions_per_video=2,
                      workers=0, formats=("mp4",))
    generate(root, cfg, overwrite=True, progress=False)
    return root


@pytest.fixture(scope="module")
def split(synth):
    s = load_split(f"jsonl:{synth}/captions.jsonl", "test")
    assert len(s.videos) >= 4
    return s


@pytest.fixture(scope="module")
def pig_ckpt(tiny_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "pig.safetensors"
    hub.save_model(tiny_models["pig"], path)
    return path


# ----- oracle


def test_oracle_rows_agree_with_evaluate_and_direct_fusion(tiny_models, split, tmp_path):
    pig, xpool = tiny_models["pig"], tiny_models["xpool"]
    split = subset_split(split, 4)
    res = oracle_analysis(pig, split, tmp_path, xpool_model=xpool, batch_size=3, progress=False)
    # PIG's row is exactly what `hybridtower evaluate` reports for the same checkpoint and split
    assert res["results"]["pig"]["t2v"] == evaluate(pig, split, progress=False)["t2v"]
    assert set(res["results"]) == {"pig", "oracle", "video_cls", "xpool"}
    assert set(res["results"]["xpool"]["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    # the oracle row: PIG's own fusion queried by each caption, scored pair by pair
    feats = collect_pig_features(pig, split, progress=False)
    from hybridtower.encode import encode_texts

    t = encode_texts(pig, [c.text for c in split.captions])
    with torch.no_grad():
        direct = pig.fusion.score_pairs(t, feats.fusion_tokens)
    gt = torch.tensor(split.caption_video_indices())
    assert feats.indices.tolist() == list(range(len(split.videos)))
    assert res["results"]["oracle"]["t2v"] == retrieval_metrics(ranks_t2v(direct, gt))
    saved = json.loads((tmp_path / "oracle.json").read_text())
    assert saved["results"]["oracle"] == res["results"]["oracle"]
    assert "Oracle: PIG fusion queried by the real caption" in (tmp_path / "oracle.md").read_text()


def test_oracle_counts_an_unreadable_video_as_a_miss(tiny_models, split, tmp_path):
    vid = split.videos[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    import dataclasses

    videos = [dataclasses.replace(vid, path=broken)] + list(split.videos[1:])
    bad = dataclasses.replace(split, videos=videos)
    res = oracle_analysis(tiny_models["pig"], bad, None, progress=False)
    assert [s["video_id"] for s in res["skipped_videos"]] == [vid.video_id]
    own = sum(1 for c in bad.captions if c.video_id == vid.video_id)
    # every caption of the broken video ranks after all decoded videos (rank 6 here), in every row
    assert len(bad.videos) - 1 >= 5
    for row in ("pig", "oracle", "video_cls"):
        assert res["results"][row]["t2v"]["R@5"] <= 100.0 * (len(bad.captions) - own) / len(bad.captions) + 1e-9


def test_oracle_refuses_a_non_pig_model(tiny_models, split):
    with pytest.raises(AnalysisError, match="needs a PIG checkpoint"):
        oracle_analysis(tiny_models["meanp"], split, None, progress=False)


# ----- pseudo-query closeness


def test_own_other_cosines_and_auc_by_hand():
    pseudo = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    own, other = own_other_cosines(pseudo, text, torch.tensor([0, 0, 1]))
    s = 2**-0.5
    assert torch.allclose(own, torch.tensor([1.0, s, 1.0]))
    assert torch.allclose(other.sort().values, torch.tensor([0.0, 0.0, s]))
    # a caption whose video was not decoded (-1) is left out
    own2, other2 = own_other_cosines(pseudo, text, torch.tensor([0, -1, 1]))
    assert own2.numel() == 2 and other2.numel() == 2
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0]), torch.tensor([2.0])) == 0.0
    assert auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5


def test_pca_of_points_on_a_line_has_one_component():
    d = torch.nn.functional.normalize(torch.randn(8), dim=0)
    x = torch.arange(10.0)[:, None] * d[None] + 3.0
    xy, ratio = pca_2d(x)
    assert ratio[0] == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(xy[:, 0].abs(), (torch.arange(10.0) - 4.5).abs(), atol=1e-4)


def test_pseudo_query_analysis_outputs(tiny_models, split, tmp_path):
    pig = tiny_models["pig"]
    res = pseudo_query_analysis(pig, split, tmp_path, batch_size=4, progress=False)
    n_caps = len(split.captions)
    assert res["cos_own"]["n"] == n_caps
    assert res["cos_other"]["n"] == n_caps * (len(split.videos) - 1)
    # t_p used as a stored vector: the same ranks as scoring captions against normalised t_p by hand
    feats = collect_pig_features(pig, split, progress=False)
    from hybridtower.encode import encode_texts

    t = encode_texts(pig, [c.text for c in split.captions])
    by_hand = retrieval_metrics(ranks_t2v(t @ torch.nn.functional.normalize(feats.pseudo_query, dim=-1).T,
                                          split.caption_video_indices()))
    assert res["pseudo_query_as_video_vector"]["t2v"] == by_hand
    for name in ("pseudo_query_cosines.png", "pseudo_query_pca.png", "pseudo_query.md", "pseudo_query.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "pseudo_query_pca.png").read_bytes()[:4] == b"\x89PNG"


# ----- ITS k sweep


def test_its_capacity_and_k_parsing(tiny_models):
    cap = its_capacity(tiny_models["pig"])
    # tiny: 64 px / patch 16 -> 4x4 patches, 8 frames; generator input = 4 global + 8 frame CLS + BOS + EOS
    assert cap["patches"] == 128 and cap["grid"] == 4
    assert cap["fixed_tokens"] == 14 and cap["max_k"] == 77 - 14
    assert parse_ks("0, 4,all,max") == [0, 4, "all", "max"]
    with pytest.raises(AnalysisError):
        parse_ks("4,-1")
    with pytest.raises(AnalysisError):
        parse_ks("four")


def test_its_sweep_rows(tiny_models, split, tmp_path):
    pig = tiny_models["pig"]
    small = subset_split(split, 4)
    res = its_sweep_analysis(pig, small, tmp_path, ks="0,8,all", batch_size=4, progress=False, cost_repeats=0)
    rows = {r["k"]: r for r in res["rows"]}
    assert list(rows) == ["0", "8", "all (128)", "max (63)"]
    assert "exceed the generator's 77 positions" in rows["all (128)"]["skipped"]
    assert rows["8"]["trained_k"] and not rows["0"]["trained_k"]
    # the row at the trained k is the checkpoint's normal evaluation
    assert rows["8"]["t2v"] == evaluate(pig, small, progress=False)["t2v"]
    # more tokens into the generator cost more, by exactly the generator's share
    g = [rows[k]["generator_gflops"] for k in ("0", "8", "max (63)")]
    assert g[0] < g[1] < g[2]
    assert [rows[k]["generator_tokens"] for k in ("0", "8", "max (63)")] == [14, 22, 77]
    assert (tmp_path / "its_sweep.png").exists() and (tmp_path / "its_sweep.json").exists()


# ----- ITS patches


def test_position_to_patch():
    # 4 global tokens, frames of 1 CLS + 4x4 patches
    assert position_to_patch(5, 4, 17, True, 4) == (0, 0, 0)
    assert position_to_patch(4 + 17 + 1 + 5, 4, 17, True, 4) == (1, 1, 1)
    assert position_to_patch(4 + 2 * 16 + 15, 4, 16, False, 4) == (2, 3, 3)
    with pytest.raises(ValueError):
        position_to_patch(4 + 17, 4, 17, True, 4)  # frame 1's CLS
    with pytest.raises(ValueError):
        position_to_patch(2, 4, 17, True, 4)


def test_its_patches_follow_the_scores(tiny_models):
    from conftest import random_frames

    sel = its_patches(tiny_models["pig"], random_frames(1)[0], k=6)
    picked = sel["selected"]
    assert len(picked) == 6 and [s["rank"] for s in picked] == list(range(1, 7))
    scores = [s["score"] for s in picked]
    assert scores == sorted(scores, reverse=True)
    heat = sel["heat"]  # [T, grid, grid] ITS score of every patch
    for s in picked:
        assert heat[s["frame"], s["row"], s["col"]].item() == pytest.approx(s["score"])
    # nothing left unselected scores above the 6th pick
    assert (heat > scores[-1] + 1e-12).sum().item() <= 5


def test_cli_its_patches_and_errors(pig_ckpt, synth, tmp_path, capsys):
    data = f"jsonl:{synth}/captions.jsonl"
    rc = main(["analyze", "its-patches", "--checkpoint", str(pig_ckpt), "--data", data, "--split", "test",
               "--video", "1", "--out", str(tmp_path), "--device", "cpu", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["video_index"] == 1 and len(out["selected"]) == out["k"] == 8
    assert sum(out["selected_per_frame"]) == 8
    assert (tmp_path / "its_patches.png").read_bytes()[:4] == b"\x89PNG"
    rc = main(["analyze", "its-patches", "--checkpoint", str(pig_ckpt), "--data", data, "--split", "test",
               "--video", "no-such-video", "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 2 and "no video 'no-such-video'" in capsys.readouterr().err


def test_markdown_table_formats_recalls_with_one_decimal_and_small_values_with_three():
    from hybridtower.analysis.common import markdown_table

    md = markdown_table(["a", "b", "c", "d", "e"], [[7.1, 24.5, 0.2183, float("nan"), None]])
    assert md.splitlines()[-1] == "| 7.1 | 24.5 | 0.218 | - | - |"
