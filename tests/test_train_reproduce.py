"""The comparison's aggregation and report (the full run is `hybridtower reproduce synthetic`)."""

import pytest

from hybridtower.cli.commands.reproduce import VARIANTS, aggregate, markdown_table
from hybridtower.cli.main import main


def _result(name, seed, r1, indexable=True):
    side = {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "MdR": 5.0, "MnR": 9.0}
    return {"name": name, "seed": seed, "indexable": indexable, "steps": {"stage2": 10}, "t2v": side,
            "v2t": dict(side), "online_ms_per_query_1k_videos": 0.1, "train_seconds": 3.0}


def test_mean_and_sample_std_over_seeds():
    rows = aggregate([_result("meanp", 0, 10.0), _result("meanp", 1, 14.0), _result("xpool", 0, 20.0, False),
                      _result("xpool", 1, 20.0, False)], {"meanp": "Two-Tower meanP"})
    assert [r["name"] for r in rows] == ["meanp", "xpool"]
    assert rows[0]["t2v"]["R@1"]["mean"] == pytest.approx(12.0)
    assert rows[0]["t2v"]["R@1"]["std"] == pytest.approx(2 ** 0.5 * 2)  # sample std of (10, 14)
    assert rows[0]["t2v"]["per_seed_R@1"] == [10.0, 14.0]
    table = markdown_table(rows, {"num_videos": 200, "num_captions": 1000, "test_split": "test-3k", "seeds": [0, 1]})
    assert "| Two-Tower meanP | 12.0 ± 2.8 |" in table
    assert "no (re-rank)" in table and table.count("\n| ") == 3


def test_variants_are_listed(capsys):
    assert main(["reproduce", "synthetic", "--out-dir", "unused", "--list-variants"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in VARIANTS)
    assert main(["reproduce", "synthetic", "--out-dir", "unused", "--variants", "nope"]) == 2
