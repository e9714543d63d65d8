"""``hybridtower bench efficiency`` end to end on the tiny model, and the X-Pool scorer it times."""

import json

import pytest
import torch

from hybridtower.analysis.xpool_fast import FoldedXPool
from hybridtower.cli.main import main


@pytest.mark.parametrize("heads", [1, 2])
def test_folded_xpool_gives_xpool_scores(heads):
    from hybridtower import hub

    model = hub.create_model("xpool-tiny", overrides=[f"fusion.num_heads={heads}"]).eval()
    g = torch.Generator().manual_seed(heads)
    with torch.no_grad():  # move every fusion weight away from its identity / default init
        for p in model.fusion.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    text = torch.nn.functional.normalize(torch.randn(3, 128, generator=g), dim=-1)
    frames = torch.randn(40, 8, 128, generator=g)
    expected = model.score(text, frames)
    fx = FoldedXPool(model.fusion)
    got = fx.scores(text, fx.store(frames), chunk=16)
    assert got.shape == (3, 40)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(got.argsort(dim=1, descending=True)[:, :5], expected.argsort(dim=1, descending=True)[:, :5])


def test_bench_efficiency_runs_end_to_end(tmp_path, capsys):
    out, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "lat.png"
    threads_before = torch.get_num_threads()
    rc = main([
        "bench", "efficiency", "--quick", "--sizes", "64,256", "--repeats", "1", "--offline-repeats", "1",
        "--bandwidth-mb", "8", "--max-gallery-gb", "0.0005", "--min-seconds", "0", "--threads", "1", "--no-progress",
        "--out", str(out), "--markdown", str(md), "--plot", str(png),
    ])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["config"]["model_size"] == "tiny"
    d = report["offline"]["pig"]["embed_dim"]
    t = report["offline"]["xpool"]["frames"]

    # offline: storage, and PIG's total is the sum of its parts
    off = report["offline"]
    assert off["pig"]["storage_bytes_fp32"] == off["meanp"]["storage_bytes_fp32"] == 4 * d
    assert off["xpool"]["storage_bytes_fp32"] == 4 * t * d
    parts = off["pig"]["parts"]
    assert sum(parts[p]["gflops"] for p in ("encoder", "its", "generator", "fusion")) == pytest.approx(
        off["pig"]["gflops"], rel=1e-9)
    assert off["pig"]["gflops"] > off["clipvip"]["gflops"] > 0  # PIG = CLIP-ViP's encoder + generator + fusion
    assert all(off[fw]["ms"] > 0 for fw in off)

    # online: exact FLOPs of the search, a ratio at each N, the floor from the measured bandwidth
    rows = {r["n"]: r for r in report["online"]["rows"]}
    assert set(rows) == {64, 256}
    text_gflops = report["online"]["text_encoder"]["pig"]["gflops"]
    bandwidth = report["bandwidth"]
    assert bandwidth["floor_from"] == "read" and bandwidth["best_gbps"] == bandwidth["read"]["best_gbps"] > 0
    assert bandwidth["copy"]["best_gbps"] > 0 and bandwidth["read"]["array_bytes"] == 2 * bandwidth["copy"]["array_bytes"]
    bw = bandwidth["best_gbps"] * 1e9
    for n, r in rows.items():
        assert r["pig"]["search_gflops"] * 1e9 == pytest.approx(2 * n * d)
        assert r["pig"]["gflops"] == pytest.approx(text_gflops + 2 * n * d / 1e9)
        per_pair = 2 * t * d + 2 * d * d + d  # one head
        assert r["xpool"]["search_gflops"] * 1e9 == pytest.approx(2 * (n * per_pair + 2 * d * d))
        assert r["ratio_pig_two_tower"] > 0 and r["ratio_xpool_pig"] > 0
        assert r["floor_ms"]["pig"] == pytest.approx(n * d * 4 / bw * 1e3)
        assert r["pig"]["search_faiss_ms"] > 0 and r["faiss"]["chosen"] in r["faiss"]["thresholds"]
        assert r["pig"]["search_searcher_ms"] > 0 and r["pig"]["searcher_kernel"] == r["searcher_calibration"]["kernel"]
    # the 256-video X-Pool store (1 MB) is over the 0.5 MB limit: extrapolated, and labelled so
    assert rows[64]["xpool"]["extrapolated"] is False
    assert rows[256]["xpool"]["extrapolated"] is True and rows[256]["xpool"]["extrapolated_from"] == 64
    table = md.read_text()
    assert "(extrapolated)" in table and "| 256 |" in table and "read-only scan (the floor)" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["online"]["xpool_folded_check"]["max_abs_score_difference"] < 1e-5
    assert "PIG / Two-Tower" in capsys.readouterr().out
    assert torch.get_num_threads() == threads_before  # --threads is restored afterwards

    # PIG-M, cost per M: stored bytes, FLOPs that grow with M, search FLOPs 2*M*N*D, extrapolation past the limit
    mv = report["multi_vector"]
    assert mv["m_values"] == [1, 2, 4, 8]
    off_m = {r["m"]: r for r in mv["offline"]}
    for m, r in off_m.items():
        assert r["storage_bytes_fp32"] == 4 * m * d and r["vectors_per_video"] == m and r["ms"] > 0
    assert off_m[1]["gflops"] == pytest.approx(off["pig"]["gflops"], rel=1e-9)  # M = 1 is PIG
    assert off_m[1]["gflops"] < off_m[2]["gflops"] < off_m[4]["gflops"] < off_m[8]["gflops"]
    assert 0 < off_m[1]["gflops_after_encoder"] < off_m[8]["gflops_after_encoder"] < off_m[8]["gflops"]
    mrows = {r["n"]: r["per_m"] for r in mv["rows"]}
    assert set(mrows) == {64, 256}
    for n, per in mrows.items():
        for m in (1, 2, 4, 8):
            c = per[str(m)]
            assert c["search_gflops"] * 1e9 == pytest.approx(2 * m * n * d)
            assert c["floor_ms"] == pytest.approx(4 * m * n * d / bw * 1e3)
            assert c["search_ms"] > 0 and c["total_ms"] == pytest.approx(mv["text_ms"] + c["search_ms"])
    # limit 0.5 MB: at N = 256 the M = 4 (512 KiB) and M = 8 galleries are scaled from N = 64, the others measured
    assert [mrows[256][str(m)]["extrapolated"] for m in (1, 2, 4, 8)] == [False, False, True, True]
    assert mrows[256]["8"]["extrapolated_from"] == 64
    assert mrows[256]["8"]["search_ms"] == pytest.approx(mrows[64]["8"]["search_ms"] * 4)
    assert report["devices_used"] == ["cpu"] and mv["devices_used"] == ["cpu"]
    assert "PIG-M: cost per M" in table and "| PIG-M, M = 8 |" in table


@pytest.mark.parametrize("m", [1, 3])
def test_multi_vector_topk_is_the_max_over_each_videos_rows(m):
    from hybridtower.analysis.efficiency_multi import multi_vector_topk

    g = torch.Generator().manual_seed(m)
    n, d = 50, 16
    rows = torch.nn.functional.normalize(torch.randn(n * m + 7, d, generator=g), dim=-1)  # 7 spare rows: a prefix view
    q = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=-1)
    scores, ids = multi_vector_topk(q, rows, n, m, 5)
    expected = torch.tensor([max(float(rows[i * m + j] @ q[0]) for j in range(m)) for i in range(n)])
    top = expected.topk(5)
    assert torch.equal(ids, top.indices)
    assert torch.allclose(scores, top.values, atol=1e-6)


def test_bench_m_values_are_checked_before_measuring(capsys):
    from hybridtower.core.errors import ConfigError

    with pytest.raises(SystemExit):
        main(["bench", "efficiency", "--m-values", "1,x"])
    assert "bad --m-values" in capsys.readouterr().err
    # pig-tiny has 8 frames: 9 pseudo-queries cannot each get a segment; refused at once, not after the benchmark
    from hybridtower.analysis.efficiency import EfficiencyConfig, run_efficiency

    with pytest.raises(ConfigError, match="num_pseudo_queries 9"):
        run_efficiency(EfficiencyConfig(model_size="tiny", m_values=[1, 9]), progress=False, models={})


def test_bench_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "efficiency", "--sizes", "10k,abc"])
    assert "bad gallery size" in capsys.readouterr().err


def test_multi_models_share_pigs_weights_and_match_a_built_pig_m():
    from hybridtower import hub
    from hybridtower.analysis.efficiency_multi import build_multi_models

    torch.manual_seed(0)
    pig = hub.create_model("pig-tiny").eval()
    models = build_multi_models("tiny", [1, 4], "cpu", pig=pig)
    assert models[1] is pig and pig.cfg.num_pseudo_queries == 1  # PIG itself is left as it was
    assert models[4].cfg.num_pseudo_queries == 4 and models[4].video_encoder is pig.video_encoder
    built = hub.create_model("pig-tiny", overrides=["num_pseudo_queries=4"]).eval()
    built.load_state_dict(pig.state_dict())
    frames = torch.randn(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, expected = models[4].encode_video(frames), built.encode_video(frames)
    assert got.shape == (2, 4, pig.embed_dim)
    assert torch.allclose(got, expected, atol=1e-6)
