#!/usr/bin/env python
"""Load test of ``hybridtower serve`` on loopback: N concurrent clients, bounded count and time.

    python benchmarks/load_test.py                       # tiny synthetic index, 50 clients, 2000 requests
    python benchmarks/load_test.py --index my_index --clients 50 --requests 5000 --duration 60
    python benchmarks/load_test.py --mix --json load.json  # also fetch thumbnails and video ranges

It starts ``hybridtower serve INDEX --host 127.0.0.1 --port 0`` as a subprocess (the real server: uvicorn,
one process), waits for ``/healthz``, sends a few warm-up requests, then runs ``--clients`` asyncio
clients (httpx, one connection each) that issue ``GET /search?q=...&k=...`` with queries drawn from a
fixed list until ``--requests`` requests are done or ``--duration`` seconds have passed, whichever is
first. It reports latency percentiles (p50, p90, p99, max), throughput and errors (transport errors and
non-2xx answers), then stops the server. Without ``--index`` it first builds a small index: synthetic
clips (``hybridtower synth``) encoded by a random-weight ``pig-tiny`` (latency does not depend on the
weights). Only loopback addresses are ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = [
    "a red square moves to the left",
    "the small blue circle bounces",
    "a green triangle turns yellow for a moment",
    "two shapes collide in the middle",
    "a purple diamond drifts upward next to an orange circle",
    "something white slides across the screen",
    "the big square spins",
    "ein roter Kreis springt",  # non-ASCII / other language
    "a " * 60 + "long query that is truncated",
    "  whitespace   around   words  ",
]


def build_tiny_index(root: Path, videos: int, seed: int = 0) -> Path:
    import torch

    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.index import IndexOptions, build_index

    data = root / "data"
    generate(data, SynthConfig(videos=videos, images=0, seed=seed, workers=0), progress=False)
    torch.manual_seed(seed)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), root / "pig-tiny-random.safetensors")
    summary = build_index([data / "videos"], root / "index", checkpoint=ckpt, options=IndexOptions(progress=False))
    print(f"built a {summary.count}-video index in {summary.seconds:.1f} s at {root / 'index'}", flush=True)
    return root / "index"


def start_server(index: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "hybridtower.cli.main", "serve", str(index), "--host", "127.0.0.1", "--port", "0",
           "--no-access-log", "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if not m:
        proc.kill()
        rest = proc.stdout.read()
        raise SystemExit(f"the server did not start:\n{line}{rest}")
    return proc, m.group(1)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(p / 100.0 * (len(sorted_values) - 1))))
    return sorted_values[idx]


async def run_load(base: str, clients: int, requests: int, duration: float, k: int, mix: bool, seed: int,
                   timeout: float) -> dict:
    import httpx

    rng = random.Random(seed)
    health = httpx.get(base + "/healthz", timeout=timeout).json()
    ids = [h["id"] for h in httpx.get(base + "/search", params={"q": QUERIES[0], "k": 50}, timeout=timeout).json()["hits"]]
    plan = []
    for i in range(requests):
        if mix and ids and i % 5 == 3:
            plan.append(("thumbnail", f"/videos/{rng.choice(ids)}/thumbnail", None, None))
        elif mix and ids and i % 5 == 4:
            plan.append(("video-range", f"/videos/{rng.choice(ids)}", None, {"Range": "bytes=0-65535"}))
        else:
            plan.append(("search", "/search", {"q": rng.choice(QUERIES), "k": k}, None))
    latencies: dict[str, list[float]] = {}
    status_counts: dict[str, int] = {}
    errors: list[str] = []
    next_i = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        for q in QUERIES[:3]:  # warm-up (not timed)
            await client.get("/search", params={"q": q, "k": k})

        async def worker():
            nonlocal next_i
            while next_i < len(plan) and time.perf_counter() < deadline:
                kind, path, params, headers = plan[next_i]
                next_i += 1
                t0 = time.perf_counter()
                try:
                    r = await client.get(path, params=params, headers=headers)
                    await r.aread()
                    dt = time.perf_counter() - t0
                    status_counts[str(r.status_code)] = status_counts.get(str(r.status_code), 0) + 1
                    if r.status_code >= 300:
                        errors.append(f"{kind} {path}: HTTP {r.status_code}")
                    latencies.setdefault(kind, []).append(dt)
                except httpx.HTTPError as exc:
                    errors.append(f"{kind} {path}: {type(exc).__name__}: {exc}")
                    status_counts["transport-error"] = status_counts.get("transport-error", 0) + 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t_start

    done = sum(len(v) for v in latencies.values()) + status_counts.get("transport-error", 0)
    report = {
        "clients": clients,
        "requests_planned": requests,
        "requests_done": done,
        "stopped_by": "count" if next_i >= len(plan) else "duration",
        "wall_s": round(wall, 3),
        "throughput_rps": round(done / wall, 2) if wall > 0 else None,
        "errors": len(errors),
        "error_examples": errors[:5],
        "status_counts": status_counts,
        "index_videos": health.get("videos"),
        "model": health.get("model_name"),
        "latency_ms": {},
    }
    for kind, vals in sorted(latencies.items()):
        s = sorted(vals)
        report["latency_ms"][kind] = {
            "n": len(s),
            "p50": round(percentile(s, 50) * 1e3, 1),
            "p90": round(percentile(s, 90) * 1e3, 1),
            "p99": round(percentile(s, 99) * 1e3, 1),
            "max": round(s[-1] * 1e3, 1),
            "mean": round(sum(s) / len(s) * 1e3, 1),
        }
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="The figures in docs/service.md come from the defaults (see that file).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="an existing index (default: build a tiny synthetic one in a temp folder)")
    p.add_argument("--videos", type=int, default=200, help="clips in the built index (default 200)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--requests", type=int, default=2000, help="total requests, at most (default 2000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds, at most (default 60)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    p.add_argument("-k", type=int, default=10, help="k of every search (default 10)")
    p.add_argument("--mix", action="store_true", help="1 in 5 requests a thumbnail, 1 in 5 a 64 KiB video range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `hybridtower serve` (repeatable)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.duration <= 0:
        p.error("--clients, --requests and --duration must be positive")

    tmp = None
    if args.index:
        index = Path(args.index)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="hybridtower-load-")
        index = build_tiny_index(Path(tmp.name), args.videos, args.seed)
    proc, base = start_server(index, args.serve_arg)
    try:
        report = asyncio.run(run_load(base, args.clients, args.requests, args.duration, args.k, args.mix,
                                      args.seed, args.timeout))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            tmp.cleanup()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    print(f"{report['requests_done']} requests, {report['clients']} clients, {report['wall_s']} s "
          f"({report['stopped_by']} bound), {report['throughput_rps']} req/s, {report['errors']} errors")
    for kind, lat in report["latency_ms"].items():
        print(f"  {kind:<12} n={lat['n']:<6} p50 {lat['p50']:8.1f} ms   p90 {lat['p90']:8.1f} ms   "
              f"p99 {lat['p99']:8.1f} ms   max {lat['max']:8.1f} ms")
    for e in report["error_examples"]:
        print("  error:", e)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
