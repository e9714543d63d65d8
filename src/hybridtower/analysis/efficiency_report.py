"""The efficiency report (``run_efficiency``'s dict) as Markdown tables and a log-log latency plot."""

from __future__ import annotations

from .efficiency_config import FRAMEWORKS

__all__ = ["format_markdown", "format_multi_markdown", "plot_latency"]


def _fmt_ms(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _fmt_n(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n:,}"


def _searcher_cell(p: dict) -> str:
    if p.get("search_searcher_ms") is None:
        return "-"
    return f"{_fmt_ms(p['search_searcher_ms'])} ({p['searcher_kernel']}, {p['search_searcher_vs_floor']:.2f}x floor)"


def format_markdown(report: dict) -> str:
    """The report as Markdown tables (what the README and docs/efficiency.md show)."""
    m = report["machine"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads)"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; torch {m['torch']}" + (f", faiss {m['faiss']}" if m.get("faiss") else "")
        + f"; device `{m['device']}`  ",
        f"FLOPs: {report['flop_convention']}.  ",
    ]
    img = report["image_check"]
    check = f"{img['arch']} image encoder, one {img['image_size']} px image: {img['gflops']:.2f} GFLOPs ({img['gmacs']:.2f} GMACs)"
    if "published_gflops" in img:
        check += f"; published ~{img['published_gflops']} GFLOPs ({100 * img['relative_difference']:+.1f} %)"
    lines.append(check + ".")
    bw = report["bandwidth"]
    if "read" in bw:
        lines.append(f"Memory bandwidth, read-only scan (the floor): {bw['read']['best_gbps']:.1f} GB/s best, "
                     f"{bw['read']['median_gbps']:.1f} GB/s median; copy (read + write): {bw['copy']['best_gbps']:.1f} "
                     f"GB/s best, {bw['copy']['median_gbps']:.1f} GB/s median.")
    else:  # reports written before the read scan existed
        lines.append(f"Memory bandwidth (copy, read + write): {bw['best_gbps']:.1f} GB/s best, "
                     f"{bw['median_gbps']:.1f} GB/s median.")
    lines += ["", "**Offline, per video** (random weights; time = median per video)", "",
              "| framework | precomputed | GFLOPs | time (ms) | stored bytes (fp32) |", "|---|---|---:|---:|---:|"]
    for fw in FRAMEWORKS:
        r = report["offline"][fw]
        lines.append(f"| {r['label']} | {r['precomputed']} | {r['gflops']:.2f} | {_fmt_ms(r['ms'])} | {r['storage_bytes_fp32']:,} |")
        if fw == "pig":
            for part in ("encoder", "its", "generator", "fusion"):
                p = r["parts"][part]
                lines.append(f"| &nbsp;&nbsp;PIG {part} | | {p['gflops']:.3f} | {_fmt_ms(p['ms'])} | |")
    on = report["online"]
    te = on["text_encoder"]
    lines += ["", f"Text encoder per query: {te['pig']['gflops']:.2f} GFLOPs, {_fmt_ms(te['pig']['median_ms'])} ms "
              "(the same tower in every framework).", "",
              "**Online, per query** (median ms; text encode + exact top-"
              f"{report['config']['topk']} search over N stored videos)", "",
              "| N | PIG | Two-Tower | PIG / Two-Tower | X-Pool | X-Pool / PIG | PIG search: torch | PIG search: FAISS "
              "| PIG search: Searcher | floor (N x D) | floor X-Pool (N x T x D) | GFLOPs PIG | GFLOPs X-Pool |",
              "|---:|" + "---:|" * 12]
    for r in on["rows"]:
        x = r["xpool"]
        xs = _fmt_ms(x.get("total_ms")) + (" (extrapolated)" if x.get("extrapolated") else "")
        if "pig" in r:
            p, t = r["pig"], r["two_tower"]
            ratio_x = f"{r['ratio_xpool_pig']:.1f}" if r.get("ratio_xpool_pig") else "-"
            if x.get("extrapolated"):
                ratio_x += " (extrap.)"
            lines.append(
                f"| {_fmt_n(r['n'])} | {_fmt_ms(p['total_ms'])} | {_fmt_ms(t['total_ms'])} | {r['ratio_pig_two_tower']:.3f} "
                f"| {xs} | {ratio_x} | {_fmt_ms(p['search_torch_ms'])} | {_fmt_ms(p.get('search_faiss_ms'))} "
                f"| {_searcher_cell(p)} | {_fmt_ms(r['floor_ms']['pig'])} | {_fmt_ms(r['floor_ms']['xpool'])} | {p['gflops']:.3f} | {x['gflops']:.2f} |"
            )
        else:
            lines.append(f"| {_fmt_n(r['n'])} | skipped | skipped | - | {xs} | - | - | - | - | {_fmt_ms(r['floor_ms']['pig'])} "
                         f"| {_fmt_ms(r['floor_ms']['xpool'])} | - | {x['gflops']:.2f} |")
    chosen = [(r["n"], r["faiss"]["chosen"]) for r in on["rows"] if "faiss" in r]
    if chosen:
        lines += ["", "FAISS `IndexFlatIP`, one query: `distance_compute_blas_threshold` chosen by measurement at each N: "
                  + ", ".join(f"{_fmt_n(n)}: {c}" for n, c in chosen) + "."]
    ck = on.get("xpool_folded_check")
    if ck:
        lines.append(f"X-Pool is timed with its cheapest exact form (`FoldedXPool`, same scores as `XPool.score` "
                     f"within {ck['max_abs_score_difference']:.1e}; {ck['speedup']:.1f}x faster than it at N={ck['n']:,}).")
    if report.get("multi_vector"):
        lines += [""] + format_multi_markdown(report)
    if report.get("devices_used"):
        lines.append("")
        lines.append("Devices of every tensor the timed searches touched: " + ", ".join(f"`{d}`" for d in report["devices_used"]) + ".")
    return "\n".join(lines) + "\n"


def format_multi_markdown(report: dict) -> list[str]:
    """The PIG-M cost-per-M tables, with Two-Tower and X-Pool from the same run beside them."""
    mv = report["multi_vector"]
    ms = mv["m_values"]
    off = {r["m"]: r for r in mv["offline"]}
    lines = ["**PIG-M: cost per M** (M pseudo-query vectors stored per video, a query scores the max over them; "
             "random weights; offline time = median per video, all M timed round-robin)", "",
             "| model | offline GFLOPs / video | of which after the encoder | offline ms / video | stored / video (fp32) |",
             "|---|---:|---:|---:|---:|"]
    for m in ms:
        r = off[m]
        name = "PIG (M = 1)" if m == 1 else f"PIG-M, M = {m}"
        lines.append(f"| {name} | {r['gflops']:.2f} | {r['gflops_after_encoder']:.3f} | {_fmt_ms(r.get('ms'))} "
                     f"| {r['storage_bytes_fp32']:,} B |")
    o = report["offline"]
    for fw in ("meanp", "xpool"):
        if fw in o:
            lines.append(f"| {o[fw]['label']} | {o[fw]['gflops']:.2f} | | {_fmt_ms(o[fw]['ms'])} | {o[fw]['storage_bytes_fp32']:,} B |")
    rows = {r["n"]: r for r in report["online"]["rows"]}
    lines += ["", "Online search per query (median ms, text encoding excluded: "
              f"{_fmt_ms(mv['text_ms'])} ms for every model; in brackets: x the M = 1 search and x its own floor "
              "M x N x D x 4 B / read bandwidth)", "",
              "| N | " + " | ".join("PIG (M = 1)" if m == 1 else f"M = {m}" for m in ms) + " | Two-Tower | X-Pool |",
              "|---:|" + "---:|" * (len(ms) + 2)]
    for r in mv["rows"]:
        cells = []
        for m in ms:
            c = r["per_m"][str(m)]
            if c.get("search_ms") is None:
                cells.append("-")
                continue
            text = _fmt_ms(c["search_ms"])
            extra = [f"{c['search_vs_m1']:.2f}x"] if m != ms[0] and c.get("search_vs_m1") else []
            extra.append(f"{c['search_vs_floor']:.2f}x floor")
            text += " (" + ", ".join(extra) + ")"
            if c.get("extrapolated"):
                text += " (extrapolated)"
            cells.append(text)
        base = rows.get(r["n"], {})
        tt = _fmt_ms(base["pig"]["search_torch_ms"]) if "pig" in base else "-"
        x = base.get("xpool", {})
        xs = _fmt_ms(x.get("search_ms")) + (" (extrapolated)" if x.get("extrapolated") else "") if x else "-"
        lines.append(f"| {_fmt_n(r['n'])} | " + " | ".join(cells) + f" | {tt} | {xs} |")
    lines.append("")
    lines.append("Two-Tower's search is the same matrix product over N x D as PIG's (`PIG search: torch` above); "
                 "X-Pool's is its fusion with every stored video. Search GFLOPs per query: 2 x M x N x D.")
    return lines


def plot_latency(report: dict, path) -> None:
    """Log-log plot of per-query latency against gallery size N (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["online"]["rows"]
    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)

    def series(get):
        pts = [(r["n"], get(r)) for r in rows]
        return [p for p in pts if p[1] is not None]

    def line(pts, **kw):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], **kw)

    has = [r for r in rows if "pig" in r]
    line([(r["n"], r["pig"]["total_ms"]) for r in has], marker="o", color="tab:blue", label="PIG: text + search")
    line([(r["n"], r["two_tower"]["total_ms"]) for r in has], marker="s", ls="--", color="tab:orange",
         label="Two-Tower: text + search")
    line([(r["n"], r["pig"]["search_torch_ms"]) for r in has], marker=".", ls=":", color="tab:green",
         label="PIG search only (torch)")
    line([(r["n"], r["pig"]["search_faiss_ms"]) for r in has if "search_faiss_ms" in r["pig"]], marker=".", ls=":",
         color="tab:purple", label="PIG search only (FAISS flat)")
    line([(r["n"], r["pig"]["search_searcher_ms"]) for r in has if "search_searcher_ms" in r["pig"]], marker="x",
         ls=":", color="tab:brown", label="PIG search only (Searcher's exact kernel)")
    mv = report.get("multi_vector")
    for i, m in enumerate(mv["m_values"] if mv else []):
        if m == 1:
            continue
        pts = [(r["n"], r["per_m"][str(m)]["search_ms"]) for r in mv["rows"]
               if r["per_m"][str(m)].get("search_ms") is not None and not r["per_m"][str(m)].get("extrapolated")]
        line(pts, marker="d", ms=4, ls=":", lw=1, color=matplotlib.colormaps["Greens"](0.45 + 0.15 * i),
             label=f"PIG-M search only, M = {m}")
    xm = series(lambda r: r["xpool"]["total_ms"] if not r["xpool"].get("extrapolated") else None)
    line(xm, marker="^", color="tab:red", label="X-Pool: text + fusion per video")
    if any(r["xpool"].get("extrapolated") for r in rows) and xm:
        ext = [xm[-1]] + [(r["n"], r["xpool"]["total_ms"]) for r in rows if r["xpool"].get("extrapolated")]
        line(ext, marker="^", mfc="none", ls="--", color="tab:red", label="X-Pool (extrapolated)")
    line([(r["n"], r["floor_ms"]["pig"]) for r in rows], ls="-", color="gray", lw=1, label="floor: N x D bytes / read bandwidth")
    line([(r["n"], r["floor_ms"]["xpool"]) for r in rows], ls="-.", color="gray", lw=1,
         label="floor: N x T x D bytes / read bandwidth")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gallery size N (videos)")
    ax.set_ylabel("latency per query (ms)")
    m = report["machine"]
    ax.set_title(f"Online cost per query, {report['config']['model_size']} on {m.get('gpu') or m['device']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
