#!/usr/bin/env python
"""Load test of ``hybridtower serve`` on loopback: batching on and off in the same run, per model.

    python benchmarks/load_test.py                        # tiny + ViT-B/32 text tower, batching on vs off
    python benchmarks/load_test.py --models tiny          # only the tiny model
    python benchmarks/load_test.py --models tiny --threads 1,2   # also the server's torch threads, 1 vs 2
    python benchmarks/load_test.py --index my_index --clients 50 --requests 5000 --duration 60
    python benchmarks/load_test.py --mix --json load.json  # also fetch thumbnails and video ranges

For each model (``--models``: ``tiny`` = random-weight ``pig-tiny`` over a 200-clip synthetic index;
``b32`` = random-weight ``pig-vit-b-32``, i.e. a CLIP ViT-B/32 text tower, over a smaller index since
only the query side is timed; or the index given with ``--index``) and each mode (``--modes``: ``on`` =
dynamic batching, the default server; ``off`` = ``--no-batching``), it starts ``hybridtower serve INDEX
--host 127.0.0.1 --port 0 --query-cache 0`` as a subprocess (the real server: uvicorn, one process; the
query cache off so that every request is encoded), waits for ``/healthz``, sends a few warm-up requests,
then runs (a minimal asyncio HTTP/1.1 client, one keep-alive connection per client, lighter on the
shared CPUs than httpx)

1. one client for ``--single-requests`` searches (the latency floor), then
2. ``--clients`` concurrent clients until ``--requests`` requests are done or
   ``--duration`` seconds have passed, whichever is first,

with queries drawn from a seeded generator of varied sentences (few repeats), and reports latency
percentiles (p50, p90, p99, max), throughput and errors (transport errors and non-2xx answers). It ends
with the comparison: throughput batched / unbatched, and p99 under load against the single-client p50 of
the unbatched server (goals: >= 2.5x and <= 4x). Both modes run the same server: every improvement that
is not batching itself (socket options, warm-up and frozen heap, first-come-first-served order) serves both;
only ``--no-batching`` differs. ``--threads 1,2`` repeats both modes for each count of the server's torch
threads (``serve --threads``). Model weights are random: latency does not depend on them. Only loopback
addresses are ever contacted.

What is measured: a request's latency runs from writing it on an already open keep-alive connection to
having read the whole answer (connection set-up is in the untimed warm-up; a failed warm-up request is
counted in ``warm_up_errors``, not fatal). The single-client run also reads the server's own time of each
answer (``took_ms``, from the request's arrival in the app to the answer built): the difference to the
client's latency is the HTTP server, the network stack and the client. During the timed run the generator's own heap is frozen
(``gc.freeze()``) so that its full garbage collections, which would stall all its clients at once, do not
count as server latency; this is the same for both modes.

``--trace`` keeps every timed request (client, start, latency) in the JSON, to see WHEN slow requests
happen (a cluster of ~``--clients`` requests that started together is a stall of the whole server).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "grey"]
SHAPES = ["square", "circle", "triangle", "diamond", "star", "ball", "box", "ring"]
ACTIONS = ["moves to the left", "bounces", "spins slowly", "drifts upward", "slides across the screen",
           "shrinks", "grows", "turns around", "falls down", "jumps twice", "stops in the middle"]
EXTRAS = ["", "", " next to a {c} {s}", " while a {c} {s} watches", " in front of a {c} wall",
          " for a moment", " and then disappears", " on a sunny day"]
FIXED = ["ein roter Kreis springt", "un cercle bleu tourne", "a " * 60 + "long query that is truncated",
         "  whitespace   around   words  ", "東京 の 赤い 四角"]


def make_query(rng: random.Random) -> str:
    """A varied English sentence (or, 1 in 20, one of a few odd/non-English ones)."""
    if rng.random() < 0.05:
        return rng.choice(FIXED)
    c1, c2 = rng.sample(COLOURS, 2)
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    size = rng.choice(["", "small ", "big ", "tiny "])
    extra = rng.choice(EXTRAS).format(c=c2, s=s2)
    return f"{rng.choice(['a', 'the', 'one'])} {size}{c1} {s1} {rng.choice(ACTIONS)}{extra}"


MODELS = {  # name -> (preset, overrides, default clips in the built index)
    "tiny": ("pig-tiny", [], 200),
    "b32": ("pig-vit-b-32", ["video.num_frames=4"], 24),
}


def build_index(root: Path, model: str, videos: int, seed: int = 0) -> Path:
    """Synthetic clips encoded by a random-weight ``model`` (``tiny`` / ``b32``) under ``root``."""
    import torch

    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.index import IndexOptions, build_index as build

    preset, overrides, _ = MODELS[model]
    data = root / "data"
    if not (data / "videos").is_dir():
        generate(data, SynthConfig(videos=videos, images=0, seed=seed, workers=0), progress=False)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    ckpt = hub.save_model(hub.create_model(preset, overrides=overrides).eval(), root / f"{model}-random.safetensors")
    summary = build([data / "videos"], root / f"index-{model}", checkpoint=ckpt, options=IndexOptions(progress=False))
    print(f"built a {summary.count}-video {preset} index in {time.perf_counter() - t0:.1f} s", flush=True)
    return root / f"index-{model}"


def start_server(index: Path, extra: list[str], *, threads: int | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "hybridtower.cli.main", "serve", str(index), "--host", "127.0.0.1", "--port", "0",
           "--no-access-log", "--log-level", "warning", *(["--threads", str(threads)] if threads else []), *extra]
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


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one asyncio connection: ``await get(target, headers)`` ->
    (status, body). The load generator shares the server's CPUs, so it is kept lighter than httpx; it
    reads Content-Length and chunked bodies, which is all the service sends."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, target: str, headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body) of ``GET target``."""
        return await asyncio.wait_for(self._get(target, headers), self.timeout)

    async def _get(self, target: str, headers: dict | None) -> tuple[int, bytes]:
        reused = self.writer is not None
        if not reused:
            await self._connect()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}\r\n".encode("latin-1")
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            # the server closed an idle keep-alive connection (uvicorn: after 5 s): reconnect once, as
            # any HTTP client does
            await self.close()
            await self._connect()
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.read()
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def run_load(base: str, clients: int, requests: int, duration: float, k: int, mix: bool, seed: int,
                   timeout: float, trace: bool = False, server_time: bool = False) -> dict:
    from urllib.parse import urlencode, urlsplit

    import httpx

    rng = random.Random(seed)
    health = httpx.get(base + "/healthz", timeout=timeout).json()
    ids = [h["id"] for h in httpx.get(base + "/search", params={"q": make_query(rng), "k": 50}, timeout=timeout).json()["hits"]]
    plan = []
    for i in range(requests):
        if mix and ids and i % 5 == 3:
            plan.append(("thumbnail", f"/videos/{rng.choice(ids)}/thumbnail", None))
        elif mix and ids and i % 5 == 4:
            plan.append(("video-range", f"/videos/{rng.choice(ids)}", {"Range": "bytes=0-65535"}))
        else:
            plan.append(("search", "/search?" + urlencode({"q": make_query(rng), "k": k}), None))
    latencies: dict[str, list[float]] = {}
    status_counts: dict[str, int] = {}
    errors: list[str] = []
    next_i = 0
    url = urlsplit(base)
    conns = [Connection(url.hostname, url.port, timeout) for _ in range(clients)]

    warm_errors: list[str] = []

    async def warm(conn):  # one untimed search per connection (opens it); a failure is reported, not fatal
        try:
            await conn.get("/search?" + urlencode({"q": make_query(rng), "k": k}))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            warm_errors.append(f"{type(exc).__name__}: {exc}")
            await conn.close()  # the timed run opens it again

    await asyncio.gather(*(warm(c) for c in conns))
    # The generator's own full garbage collections would stall all its clients at once and count as server
    # latency: collect now and freeze what is alive (the plan, httpx), so later collections walk only the
    # objects of the timed run.
    gc.collect()
    gc.freeze()
    deadline = time.perf_counter() + duration

    records: list = []  # --trace: (client, start s since the run began, latency ms, kind)
    took: list[float] = []  # server_time: the server's own took_ms of each search answer

    async def worker(client, conn):
        nonlocal next_i
        while next_i < len(plan) and time.perf_counter() < deadline:
            kind, target, headers = plan[next_i]
            next_i += 1
            t0 = time.perf_counter()
            try:
                status, body = await conn.get(target, headers)
                dt = time.perf_counter() - t0
                if server_time and kind == "search" and status == 200:
                    took.append(float(json.loads(body)["took_ms"]))
                if trace:
                    records.append((client, round(t0 - t_start, 4), round(dt * 1e3, 2), kind))
                status_counts[str(status)] = status_counts.get(str(status), 0) + 1
                if status >= 300:
                    errors.append(f"{kind} {target[:60]}: HTTP {status}")
                latencies.setdefault(kind, []).append(dt)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{kind} {target[:60]}: {type(exc).__name__}: {exc}")
                status_counts["transport-error"] = status_counts.get("transport-error", 0) + 1
                await conn.close()

    t_start, t_start_unix = time.perf_counter(), time.time()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    wall = time.perf_counter() - t_start
    gc.unfreeze()
    for c in conns:
        await c.close()
    health_after = httpx.get(base + "/healthz", timeout=timeout).json()

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
        "warm_up_errors": len(warm_errors),
        "status_counts": status_counts,
        "index_videos": health.get("videos"),
        "model": health.get("model_name"),
        "batching": health_after.get("batching"),
        "latency_ms": {},
    }
    if trace:
        report["trace"] = {"t_start_unix": round(t_start_unix, 4), "records": records}
    if took:
        took.sort()
        report["server_took_ms"] = {"p50": round(percentile(took, 50), 2), "p90": round(percentile(took, 90), 2)}
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


def one_server(index: Path, mode: str, args, threads: int | None = None) -> dict:
    """Single-client then ``--clients`` runs against one server started in ``mode`` (on / off) with
    ``threads`` torch threads (None: torch's own choice)."""
    extra = ["--query-cache", str(args.query_cache)] + (["--no-batching"] if mode == "off" else []) + args.serve_arg
    proc, base = start_server(index, extra, threads=threads)
    try:
        single = asyncio.run(run_load(base, 1, args.single_requests, args.duration, args.k, False, args.seed + 1,
                                      args.timeout, server_time=True))
        cpu0, own0 = process_cpu_s(proc.pid), os.times()
        loaded = asyncio.run(run_load(base, args.clients, args.requests, args.duration, args.k, args.mix, args.seed,
                                      args.timeout, trace=args.trace))
        cpu1, own1 = process_cpu_s(proc.pid), os.times()
        n = max(1, loaded["requests_done"])
        if cpu0 is not None and cpu1 is not None:
            loaded["server_cpu_ms_per_request"] = round((cpu1 - cpu0) / n * 1e3, 2)
        loaded["client_cpu_ms_per_request"] = round(((own1.user + own1.system) - (own0.user + own0.system)) / n * 1e3, 2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"mode": mode, "threads": threads, "single": single, "loaded": loaded}


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by process ``pid`` (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summarise(model: str, runs: dict) -> dict:
    out: dict = {"model": model}
    on, off = runs.get("on"), runs.get("off")
    if on and off:
        t_on, t_off = on["loaded"]["throughput_rps"], off["loaded"]["throughput_rps"]
        p50_single = off["single"]["latency_ms"]["search"]["p50"]
        p99_on = on["loaded"]["latency_ms"]["search"]["p99"]
        out.update({
            "throughput_ratio": round(t_on / t_off, 2) if t_off else None,
            "p99_batched_over_single_p50": round(p99_on / p50_single, 2) if p50_single else None,
            "errors": on["loaded"]["errors"] + off["loaded"]["errors"] + on["single"]["errors"] + off["single"]["errors"],
        })
        c_on, c_off = on["loaded"].get("server_cpu_ms_per_request"), off["loaded"].get("server_cpu_ms_per_request")
        if c_on and c_off:
            out["server_cpu_ratio"] = round(c_off / c_on, 2)  # how much less server CPU a batched request costs
        out["goals_met"] = bool(out["throughput_ratio"] and out["throughput_ratio"] >= 2.5
                                and out["p99_batched_over_single_p50"] is not None
                                and out["p99_batched_over_single_p50"] <= 4.0 and out["errors"] == 0)
    return out


def run_label(mode: str, threads: int | None) -> str:
    return mode if threads is None else f"{mode}/{threads}t"


def print_table(model: str, runs: dict) -> None:
    print(f"\n{model}: mode    clients  requests  wall s   req/s    p50 ms   p90 ms   p99 ms   max ms  errors  "
          f"server CPU ms/req  (single client: server's own time p50)")
    for mode, r in runs.items():
        for which in ("single", "loaded"):
            rep = r[which]
            lat = rep["latency_ms"].get("search", {})
            own = rep.get("server_took_ms", {}).get("p50")
            print(f"  {' ' * len(model)}{mode:<7} {rep['clients']:>7} {rep['requests_done']:>9} {rep['wall_s']:>7.1f} "
                  f"{rep['throughput_rps']:>7.1f} {lat.get('p50', float('nan')):>9.1f} {lat.get('p90', float('nan')):>8.1f} "
                  f"{lat.get('p99', float('nan')):>8.1f} {lat.get('max', float('nan')):>8.1f} {rep['errors']:>7}  "
                  f"{rep.get('server_cpu_ms_per_request', ''):>8}" + (f"  ({own} ms)" if own is not None else ""))
            for kind, kl in rep["latency_ms"].items():
                if kind != "search":
                    print(f"  {' ' * len(model)}  {kind:<12} n={kl['n']:<6} p50 {kl['p50']:.1f} ms  p99 {kl['p99']:.1f} ms")
            for e in rep["error_examples"]:
                print("    error:", e)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="The figures in docs/service.md come from the defaults (see that file).",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", help="an existing index (default: build synthetic ones per --models in a temp folder)")
    p.add_argument("--models", default="tiny,b32", help="models to build indexes for: tiny, b32 (default both)")
    p.add_argument("--modes", default="on,off", help="batching modes to compare: on, off (default both)")
    p.add_argument("--videos", type=int, default=None, help="clips in each built index (default 200 tiny, 24 b32)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--requests", type=int, default=2000, help="requests of the concurrent run, at most (default 2000)")
    p.add_argument("--single-requests", type=int, default=100, help="requests of the single-client run (default 100)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per run, at most (default 60)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds (default 60)")
    p.add_argument("--query-cache", type=int, default=0, help="server --query-cache (default 0: every query encoded)")
    p.add_argument("-k", type=int, default=10, help="k of every search (default 10)")
    p.add_argument("--mix", action="store_true", help="1 in 5 requests a thumbnail, 1 in 5 a 64 KiB video range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", default=None, metavar="N[,N...]",
                   help="the server's torch threads (serve --threads), e.g. 1,2: both modes for each (default: "
                        "torch's own choice)")
    p.add_argument("--trace", action="store_true",
                   help="keep every request of the concurrent runs in the JSON (client, start, latency)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `hybridtower serve` (repeatable)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.single_requests < 1 or args.duration <= 0:
        p.error("--clients, --requests, --single-requests and --duration must be positive")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        p.error("--modes takes on and/or off")
    if not args.index and (not models or any(m not in MODELS for m in models)):
        p.error(f"--models takes {', '.join(MODELS)}")
    try:
        thread_counts = [int(t) for t in args.threads.split(",") if t.strip()] if args.threads else [None]
    except ValueError:
        p.error("--threads takes whole numbers, e.g. 1,2")
    if not thread_counts or any(t is not None and t < 1 for t in thread_counts):
        p.error("--threads takes whole numbers >= 1, e.g. 1,2")

    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "load_average_before": load_average()},
              "settings": {k: v for k, v in vars(args).items() if k != "json"}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="hybridtower-load-") as tmp:
        targets = [("index", Path(args.index))] if args.index else []
        for model in ([] if args.index else models):
            videos = args.videos if args.videos is not None else MODELS[model][2]
            targets.append((model, build_index(Path(tmp) / model, model, videos, args.seed)))
        for model, index in targets:
            runs, summaries = {}, {}
            for threads in thread_counts:
                pair = {mode: one_server(index, mode, args, threads) for mode in modes}
                runs.update({run_label(mode, threads): r for mode, r in pair.items()})
                summaries["default" if threads is None else str(threads)] = summarise(model, pair)
            report["models"][model] = {"runs": runs, "summary": summaries}
            print_table(model, runs)
    report["machine"]["load_average_after"] = load_average()
    errors = 0
    print()
    for model, r in report["models"].items():
        for run in r["runs"].values():
            errors += run["single"]["errors"] + run["loaded"]["errors"]
        for threads, s in r["summary"].items():
            if "throughput_ratio" not in s:
                continue
            at = "" if threads == "default" else f" ({threads} torch threads)"
            print(f"{model}{at}: batched/unbatched throughput at {args.clients} clients {s['throughput_ratio']}x (goal >= 2.5x); "
                  f"batched p99 = {s['p99_batched_over_single_p50']}x the unbatched single-client p50 (goal <= 4x); "
                  f"errors {s['errors']}: {'goals met' if s['goals_met'] else 'goals NOT met'}"
                  + (f"; server CPU per request {s['server_cpu_ratio']}x lower batched" if s.get("server_cpu_ratio") else ""))
    print("Both modes run the same server (socket options, warm-up, frozen heap, first-come-first-served order); "
          "only batching differs.")
    print(f"load average before {report['machine']['load_average_before']}, after {report['machine']['load_average_after']} "
          f"({report['machine']['cpus']} CPUs; the load generator shares them)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
