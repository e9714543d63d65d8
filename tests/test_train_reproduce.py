"""The comparison's tuning choice, aggregation, paired statistics and report (the full run is
`hybridtower reproduce synthetic`; its smoke version `--quick` takes minutes, too long for CI)."""

import pytest

from hybridtower.cli.main import main
from hybridtower.experiments import report as rep
from hybridtower.experiments import tuning
from hybridtower.experiments.comparison import BUDGETS, QUICK, VARIANTS, ComparisonOptions, resolve_budget


def _result(name, seed, r1, indexable=True, r5=None, mdr=5.0):
    side = {"R@1": r1, "R@5": r1 + 10 if r5 is None else r5, "R@10": r1 + 20, "MdR": mdr, "MnR": 9.0}
    return {"name": name, "seed": seed, "indexable": indexable, "steps": {"stage2": 10}, "t2v": side,
            "v2t": dict(side), "online_ms_per_query_1k_videos": 0.1, "train_seconds": 3.0,
            "num_videos": 200, "num_captions": 1000}


def test_mean_and_sample_std_over_seeds():
    rows = rep.aggregate([_result("meanp", 0, 10.0), _result("meanp", 1, 14.0), _result("xpool", 0, 20.0, False),
                          _result("xpool", 1, 20.0, False)], {"meanp": "Two-Tower meanP"})
    assert [r["name"] for r in rows] == ["meanp", "xpool"]
    assert rows[0]["t2v"]["R@1"]["mean"] == pytest.approx(12.0)
    assert rows[0]["t2v"]["R@1"]["std"] == pytest.approx(2 ** 0.5 * 2)  # sample std of (10, 14)
    assert rows[0]["t2v"]["per_seed_R@1"] == [10.0, 14.0]
    table = rep.markdown_table(rows, {"num_videos": 200, "num_captions": 1000, "test_split": "test-3k", "seeds": [0, 1]})
    assert "| Two-Tower meanP | 12.0 ± 2.8 |" in table
    assert "no (re-rank)" in table and table.count("\n| ") == 3


def test_tuning_picks_the_best_validation_point():
    points = tuning.grid_points([1e-4, 3e-4], [1, 10])
    assert [tuning.point_tag(p) for p in points] == ["lr0.0001-x1", "lr0.0001-x10", "lr0.0003-x1", "lr0.0003-x10"]
    val = [{"t2v": {"R@1": a, "R@5": b, "R@10": c}} for a, b, c in [(5, 20, 30), (9, 20, 30), (6, 30, 40), (6, 30, 40)]]
    assert tuning.choose(list(zip(points, val))) == points[2]  # highest R@1+R@5+R@10, first of a tie


def test_premise_paired_differences_and_half_gap():
    results = []
    for s, (m, x, p, g, c) in enumerate([(5, 9, 6, 8, 6), (6, 10, 6, 9, 5), (5, 10, 7, 9, 6), (4, 9, 6, 8, 6),
                                         (6, 11, 7, 9, 7)]):
        results += [_result("meanp", s, m, mdr=20), _result("xpool", s, x, False, mdr=10),
                    _result("pig", s, p, mdr=18), _result("pigm4", s, g, mdr=12), _result("clipvip", s, c, mdr=18)]
    premise = rep.premise_check(results)
    assert premise["holds"] and premise["per_seed"] == [4, 4, 5, 5, 5]
    ranks = {"pig": [1, 3, 8, 2] * 50, "clipvip": [1, 3, 8, 2] * 50, "xpool": [1, 1, 2, 2] * 50}
    pairs = rep.paired_table(results, rep.PAIRS, ranks)
    first = pairs[0]
    assert (first["a"], first["b"], first["metric"]) == ("pig", "clipvip", "R@1")
    assert first["verdict"] == "no difference detected" and first["bootstrap_seed0"]["difference"] == 0.0
    mdr = next(p for p in pairs if (p["a"], p["b"], p["metric"]) == ("xpool", "meanp", "MdR"))
    assert mdr["verdict"] == "xpool better than meanp"  # lower median rank is better
    gap = rep.half_gap(results, metric="MdR")  # gap 8, PIG-M gains 6: closes 75 %
    assert gap["fraction_closed"] == pytest.approx(0.75) and gap["closes_half"] == "yes"
    gap = rep.half_gap(results, metric="R@5")
    assert gap["fraction_closed"] == pytest.approx((8.6 - 6.4) / (9.8 - 6.4))
    report = {"kind": "scenes", "command": "hybridtower reproduce synthetic --kind scenes", "seconds": 60.0,
              "rows": rep.aggregate(results, {}), "premise": premise, "paired": pairs, "half_gap": [gap],
              "header": {"num_videos": 200, "num_captions": 1000, "test_split": "test-3k", "seeds": [0, 1, 2, 3, 4]},
              "tuning": {"pig": {"grid": [{"point": {"lr": 1e-4, "new_module_lr_mult": 1.0}, "score": 50.0}],
                                 "chosen": {"lr": 1e-4, "new_module_lr_mult": 1.0}}},
              "select_metric": tuning.SELECT_METRIC, "budget": {"frames": 12},
              "recipe": {"stage2_steps": 120, "batch_size": 32, "weight_decay": 0.2, "warmup_ratio": 0.1, "grad_clip": 1.0},
              "clip": {"arch": "hybridtower-tiny", "steps": 600}}
    md = rep.markdown_report(report, {})
    assert "the premise HOLDS" in md and "| pig − clipvip | R@1 |" in md and "closes at least half: yes" in md
    assert "lr 0.0001, new-module x1" in md


def test_budgets_and_options():
    assert resolve_budget(ComparisonOptions(out_dir="x", kind="scenes"))["frames"] == BUDGETS["scenes"]["frames"]
    b = resolve_budget(ComparisonOptions(out_dir="x", quick=True, budget={"seeds": [3], "steps": None}))
    assert b["seeds"] == [3] and b["steps"] == QUICK["steps"]
    assert all(len(b["seeds"]) == 5 for b in BUDGETS.values())


def test_variants_are_listed_and_errors_are_clear(capsys):
    assert main(["reproduce", "synthetic", "--out-dir", "unused", "--list-variants"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in VARIANTS)
    assert main(["reproduce", "synthetic", "--out-dir", "unused", "--variants", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_online_cost_scores_every_stored_vector():
    from hybridtower import hub
    from hybridtower.experiments.comparison import available_frameworks, online_cost_ms

    assert {"meanp", "clipvip", "xpool", "pig"} <= set(available_frameworks())
    model = hub.create_model("meanp-tiny")
    assert online_cost_ms(model, num_videos=50, repeats=2) > 0


def test_breakdown_by_caption_group():
    table = rep.breakdown({"a": [[1, 1, 10, 20], [1, 3, 10, 30]]}, [2, 2, 4, 4])
    assert table["_count"] == {"2": 2, "4": 2}
    assert table["a"]["2"]["R@1"] == pytest.approx(75.0)  # seed 0: 100, seed 1: 50
    assert table["a"]["4"]["MdR"] == pytest.approx(17.5)  # medians 15 and 20
    assert "| Two |" in rep.markdown_breakdown(table, {"a": "Two"}, "x")


def test_scenes_bold_budget_carries_its_data_design():
    b = resolve_budget(ComparisonOptions(out_dir="x", kind="scenes-bold"))
    assert b["synth"]["scene_style"] == "bold" and b["synth"]["kind"] == "scenes"
    q = resolve_budget(ComparisonOptions(out_dir="x", kind="scenes-bold", quick=True))
    assert q["synth"] == b["synth"] and q["videos"] == QUICK["videos"]  # quick keeps the design, not the size
    assert "synth" not in resolve_budget(ComparisonOptions(out_dir="x", kind="shapes"))


def test_cell_lock_waits_for_the_holder_and_takes_over_stale_locks(tmp_path):
    import os
    import subprocess
    import sys
    import threading
    import time

    from hybridtower.experiments.comparison import CellLock

    path = tmp_path / "cell.lock"
    order = []
    with CellLock(path, log=lambda m: None):
        assert path.read_text() == str(os.getpid())

        def second():
            with CellLock(path, log=lambda m: None, poll_s=0.05):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")  # the second is still waiting: we hold the lock
    t.join(5)
    assert order == ["first done", "second"] and not path.exists()
    # a lock whose process is gone is taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(str(dead.pid))
    with CellLock(path, log=lambda m: None, poll_s=10):
        assert path.read_text() == str(os.getpid())


def test_gpu_scale_is_a_bigger_budget_and_listed_in_help(capsys):
    from hybridtower.core.errors import ConfigError
    from hybridtower.experiments.comparison import SCALES

    cpu = resolve_budget(ComparisonOptions(out_dir="x", kind="scenes-bold"))
    gpu = resolve_budget(ComparisonOptions(out_dir="x", kind="scenes-bold", scale="gpu"))
    assert gpu["arch"] != cpu["arch"] and gpu["steps"] > cpu["steps"] and gpu["pretrain_steps"] > cpu["pretrain_steps"]
    assert gpu["seeds"] == [0, 1, 2, 3, 4] and gpu["synth"] == cpu["synth"]
    assert SCALES["gpu"]["precision"] == "bf16" and SCALES["cpu"]["precision"] == "fp32"
    # explicit budget options still win over the scale
    assert resolve_budget(ComparisonOptions(out_dir="x", kind="scenes-bold", scale="gpu", budget={"steps": 7}))["steps"] == 7
    with pytest.raises(ConfigError):
        resolve_budget(ComparisonOptions(out_dir="x", scale="tpu"))
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert "--scale" in capsys.readouterr().out
