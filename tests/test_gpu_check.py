"""benchmarks/gpu_check.py's CPU rehearsal: every part runs (tiny model, small sizes) and writes figures that
are there, positive and finite; the budget skips parts; the session script is valid shell."""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def _numbers(x, path=""):
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")


def _positive(*values):
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, v


@pytest.mark.slow
def test_rehearsal_runs_every_part_and_writes_finite_figures(tmp_path, capsys):
    gc = _gpu_check()
    out = tmp_path / "gpu_check.json"
    rc = gc.main(["--device", "cpu", "--model-size", "tiny", "--frameworks", "pig", "--eff-m-values", "1,2",
                  "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["errors"] == {}, report.get("tracebacks")
    assert rc == 0
    assert set(report["parts"]) == set(gc.PARTS) and report["skipped"] == {} and report["interrupted"] is None
    assert json.loads(capsys.readouterr().out)["parts"].keys() == report["parts"].keys()  # the same JSON on stdout
    for path, v in _numbers(report["parts"]):
        assert math.isfinite(v), path

    s = report["parts"]["search"]
    _positive(s["floor"]["read"]["best_gbps"], s["floor"]["copy"]["best_gbps"])
    rows = [r for r in s["rows"] if "search_ms" in r]
    assert {(r["n"], r["dtype"]) for r in rows} == {(1000, "float32"), (1000, "float16"), (20000, "float32"), (20000, "float16")}
    for r in rows:
        _positive(r["search_ms"], r["floor_ms"], r["matmul_ms"], r["scan_this_gallery_ms"], r["batch_ms_per_query"])
        assert r["floor_ms"] == pytest.approx(r["bytes"] / (s["floor"]["read"]["best_gbps"] * 1e9) * 1e3)
        assert r["bytes"] == r["n"] * 512 * (4 if r["dtype"] == "float32" else 2)
        assert r["batch_row0_same_ids"] is True and r["device"] == "cpu"
        if r["dtype"] == "float16":
            assert 0.5 <= r["recall_at_k_vs_fp32"] <= 1.0

    ix = report["parts"]["index"]
    assert ix["preset"] == "pig-tiny" and ix["videos"] == 8
    _positive(ix["decode_videos_per_s"], ix["encode_host_videos_per_s"], ix["encode_device_videos_per_s"],
              ix["index_videos_per_s"], ix["index_over_min_bound"])

    e = report["parts"]["efficiency"]
    assert e["device_check"] == "ok" and e["devices_used"] == ["cpu"]
    assert [r["n"] for r in e["rows"]] == [256, 1024]
    for r in e["rows"]:
        _positive(r["pig_ms"], r["two_tower_ms"], r["xpool_ms"], r["ratio_pig_two_tower"], r["floor_ms"])
    assert [m["m"] for m in e["per_m"]] == [1, 2]
    for m in e["per_m"]:
        _positive(m["offline_ms"], m["offline_gflops"], *m["search_ms"].values())
    full = json.loads((tmp_path / "gpu_check-efficiency.json").read_text())  # the whole report beside --out
    assert full["config"]["device"] == "cpu" and full["multi_vector"]["m_values"] == [1, 2]
    assert "PIG-M: cost per M" in (tmp_path / "gpu_check-efficiency.md").read_text()

    (t,) = report["parts"]["train"]
    _positive(t["step_seconds_mean"], t["videos_per_second"])
    _positive(report["parts"]["eval"]["seconds"], report["parts"]["eval"]["videos"])
    assert set(report["seconds_per_part"]) == set(gc.PARTS)


def test_budget_skips_parts_that_do_not_fit(tmp_path):
    gc = _gpu_check()
    out = tmp_path / "r.json"
    assert gc.main(["--device", "cpu", "--model-size", "tiny", "--parts", "search,eval", "--budget-s", "5",
                    "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["parts"] == {} and set(report["skipped"]) == {"search", "eval"}
    assert "budget" in report["skipped"]["search"]
    assert gc.main(["--device", "cpu", "--parts", "search,bogus"]) == 2


def test_gpu_estimates_fit_one_device_call():
    # every part's expected time on one H100/H200, plus start-up, fits an 8-minute call
    gc = _gpu_check()
    assert set(gc.ESTIMATE_S) == set(gc.PARTS)
    assert sum(gc.ESTIMATE_S.values()) + 30 <= 8 * 60


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_session_script_is_valid_bash():
    script = ROOT / "scripts" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "benchmarks/gpu_check.py" in text and "--scale gpu" in text and "timeout" in text
