"""benchmarks/load_test.py keeps working: its light HTTP client, a short run against the app, the summary."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from test_service_api import COLORS, FakeSearcher, write_clip  # noqa: E402


@pytest.fixture(scope="module")
def load_test():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("hybridtower_load_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fake_app(tmp_path):
    """The service over a stand-in searcher of one clip per colour (test_service_api's)."""
    from hybridtower.service import create_app

    entries = {i: (f"{name}.mp4", write_clip(tmp_path / f"{name}.mp4", rgb)) for i, (name, rgb) in enumerate(COLORS.items())}
    return create_app(FakeSearcher(entries), thumbnail_dir=tmp_path / "thumbs")


def test_short_run_against_the_app(load_test, tmp_path):
    from hybridtower.service.server import BackgroundServer

    app = _fake_app(tmp_path)
    with BackgroundServer(app) as srv:
        report = asyncio.run(load_test.run_load(srv.url, clients=4, requests=40, duration=60, k=2, mix=True, seed=0,
                                                timeout=30))
    assert report["requests_done"] == 40 and report["errors"] == 0, report["error_examples"]
    assert report["status_counts"] == {"200": 32, "206": 8}  # searches and thumbnails, 64 KiB video ranges
    assert set(report["latency_ms"]) == {"search", "thumbnail", "video-range"}
    assert report["latency_ms"]["search"]["n"] == 24 and report["latency_ms"]["search"]["p50"] > 0


def test_client_reconnects_when_an_idle_connection_was_closed(load_test):
    async def main():
        served = []

        async def handle(reader, writer):  # answers one request per connection, then hangs up silently
            await reader.readuntil(b"\r\n\r\n")
            served.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = load_test.Connection("127.0.0.1", port, timeout=10)
        try:
            assert await conn.get("/a") == (200, b"ok")
            await asyncio.sleep(0.1)
            assert await conn.get("/b") == (200, b"ok")  # the kept connection is gone: a new one, once
        finally:
            await conn.close()
            server.close()
            await server.wait_closed()
        return len(served)

    assert asyncio.run(main()) == 2


def test_summary_and_goals(load_test):
    def run(rps, p50, p99, errors=0, cpu=None):
        lat = {"search": {"p50": p50, "p99": p99}}
        out = {"throughput_rps": rps, "latency_ms": lat, "errors": errors}
        if cpu is not None:
            out["server_cpu_ms_per_request"] = cpu
        return out

    runs = {"on": {"single": run(20, 50, 60), "loaded": run(500, 90, 180, cpu=2.0)},
            "off": {"single": run(20, 48, 55), "loaded": run(180, 220, 1200, cpu=6.0)}}
    s = load_test.summarise("tiny", runs)
    assert s["throughput_ratio"] == 2.78 and s["p99_batched_over_single_p50"] == 3.75 and s["goals_met"]
    assert s["server_cpu_ratio"] == 3.0
    runs["on"]["loaded"] = run(300, 150, 400)
    s = load_test.summarise("tiny", runs)
    assert not s["goals_met"] and "server_cpu_ratio" not in s
    queries = {load_test.make_query(__import__("random").Random(i)) for i in range(200)}
    assert len(queries) > 150  # varied: few repeats


def test_trace_keeps_every_request_and_the_generator_heap_is_unfrozen_after(load_test, tmp_path):
    import gc

    from hybridtower.service.server import BackgroundServer

    app = _fake_app(tmp_path)
    with BackgroundServer(app) as srv:
        report = asyncio.run(load_test.run_load(srv.url, clients=3, requests=12, duration=60, k=2, mix=False, seed=0,
                                                timeout=30, trace=True))
    records = report["trace"]["records"]
    assert len(records) == report["requests_done"] == 12
    assert {r[0] for r in records} <= {0, 1, 2} and all(r[1] >= 0 and r[2] > 0 and r[3] == "search" for r in records)
    assert abs(max(r[2] for r in records) - report["latency_ms"]["search"]["max"]) < 0.1
    assert gc.get_freeze_count() == 0  # frozen only during the timed run


def test_single_client_run_reads_the_servers_own_time(load_test, tmp_path):
    """The floor's split: the client's latency against the server's own took_ms of the same answers."""
    from hybridtower.service.server import BackgroundServer

    app = _fake_app(tmp_path)
    with BackgroundServer(app) as srv:
        report = asyncio.run(load_test.run_load(srv.url, clients=1, requests=10, duration=60, k=2, mix=False, seed=0,
                                                timeout=30, server_time=True))
    own = report["server_took_ms"]
    assert 0 < own["p50"] <= own["p90"] and own["p50"] <= report["latency_ms"]["search"]["p50"]
    assert load_test.run_label("on", None) == "on" and load_test.run_label("off", 2) == "off/2t"
