"""The comparison's numbers: mean ± SD over seeds, paired differences with intervals, and the markdown.

Inputs are the per-run result dicts of :mod:`.comparison` (``name``, ``seed``, ``t2v``/``v2t`` metrics, ...)
and, for the bootstrap, the per-caption t2v ranks of each framework's seed-0 run on the test split.
Every difference is ``A - B`` for the same seed; ranks (MdR, MnR) are better when lower, which the
verdicts take into account. Wording: an interval containing 0 is "no difference detected".
"""

from __future__ import annotations

from ..eval.stats import mean_sd, paired_bootstrap, paired_t, t_interval, verdict

METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR")
PAIR_METRICS = ("R@1", "R@5", "MdR")
LOWER_IS_BETTER = {"MdR", "MnR"}
# (A, B): the paired differences the write-up reports, when both are in the run
PAIRS = (("pig", "clipvip"), ("pig", "xpool"), ("xpool", "meanp"), ("pigm4", "pig"), ("pigm4", "xpool"),
         ("pig", "meanp"), ("clipvip", "meanp"))  # the last two: the ViP encoder vs frame pooling (investigation)


def aggregate(results: list[dict], labels: dict[str, str]) -> list[dict]:
    """One row per run name (framework or variant), in first-seen order: mean and sample SD per metric."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        row = {"name": name, "label": labels.get(name, name), "seeds": [r["seed"] for r in rs],
               "indexable": rs[0]["indexable"], "steps": rs[0]["steps"]}
        for side in ("t2v", "v2t"):
            row[side] = {m: dict(zip(("mean", "std"), mean_sd([r[side][m] for r in rs]))) for m in METRICS}
            row[side]["per_seed_R@1"] = [r[side]["R@1"] for r in rs]
        row["online_ms_per_query_1k_videos"] = mean_sd([r["online_ms_per_query_1k_videos"] for r in rs])[0]
        row["train_seconds"] = mean_sd([r["train_seconds"] for r in rs])[0]
        rows.append(row)
    return rows


def _by_seed(results: list[dict], name: str, metric: str, side: str = "t2v") -> dict:
    return {r["seed"]: r[side][metric] for r in results if r["name"] == name}


def paired(results: list[dict], a: str, b: str, metric: str, ranks: dict | None = None,
           bootstrap_samples: int = 2000) -> dict:
    """``a - b`` on t2v ``metric`` per common seed, its t-interval and verdict; plus the paired bootstrap over
    test captions of the two seed-0 runs when ``ranks`` (name -> per-caption t2v ranks) has both."""
    lower = metric in LOWER_IS_BETTER
    d = paired_t(_by_seed(results, a, metric), _by_seed(results, b, metric))
    out = {"a": a, "b": b, "metric": metric, "lower_is_better": lower, "seeds": d["keys"],
           "per_seed": d["differences"], "mean": d["mean"], "sd": d["sd"], "low": d["low"], "high": d["high"],
           "verdict": verdict(d, a, b, lower_is_better=lower)}
    if ranks and a in ranks and b in ranks:
        boot = paired_bootstrap(ranks[a], ranks[b], metric, samples=bootstrap_samples, seed=0)
        out["bootstrap_seed0"] = {**boot, "verdict": verdict(boot, a, b, lower_is_better=lower)}
    return out


def paired_table(results: list[dict], pairs, ranks: dict | None = None, metrics=PAIR_METRICS) -> list[dict]:
    names = {r["name"] for r in results}
    return [paired(results, a, b, m, ranks) for a, b in pairs if a in names and b in names for m in metrics]


def premise_check(results: list[dict]) -> dict | None:
    """X-Pool beats meanP on t2v R@1 and the 95% CI of the paired per-seed difference excludes 0."""
    names = {r["name"] for r in results}
    if not {"xpool", "meanp"} <= names:
        return None
    d = paired(results, "xpool", "meanp", "R@1")
    d["holds"] = d["low"] is not None and d["low"] > 0
    return d


def half_gap(results: list[dict], new: str = "pigm4", base: str = "pig", target: str = "xpool",
             metric: str = "R@5") -> dict | None:
    """Does ``new`` close at least half of the ``base``-to-``target`` gap on t2v ``metric``? Per seed
    ``new - (base + target) / 2`` (sign-flipped for ranks so that > 0 = closes more than half), its
    t-interval, and the mean fraction of the gap closed."""
    names = {r["name"] for r in results}
    if not {new, base, target} <= names:
        return None
    n, b, t = (_by_seed(results, x, metric) for x in (new, base, target))
    seeds = [s for s in n if s in b and s in t]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    margin = [sign * (n[s] - (b[s] + t[s]) / 2) for s in seeds]
    ci = t_interval(margin)
    gap = mean_sd([t[s] - b[s] for s in seeds])[0]
    gain = mean_sd([n[s] - b[s] for s in seeds])[0]
    closes = "yes" if ci["low"] is not None and ci["low"] > 0 else \
        "no" if ci["high"] is not None and ci["high"] < 0 else "not determined (the interval contains 0)"
    return {"new": new, "base": base, "target": target, "metric": metric, "seeds": seeds, "margin_per_seed": margin,
            "margin_mean": ci["mean"], "low": ci["low"], "high": ci["high"], "gap_mean": gap, "gain_mean": gain,
            "fraction_closed": gain / gap if gap else None, "closes_half": closes}


def breakdown(ranks_by_run: dict[str, list[list[int]]], groups: list, metrics=("R@1", "R@5", "MdR")) -> dict:
    """t2v metrics per caption group (e.g. the number of scenes in the caption's clip): ``ranks_by_run`` maps
    a run name to its per-seed lists of per-caption ranks (captions in the order of ``groups``); returns
    ``{name: {group: {metric: mean over seeds}}}`` plus ``{"_count": {group: captions}}``."""
    from ..eval.stats import rank_metric

    keys = sorted(set(groups))
    out: dict = {"_count": {str(g): sum(1 for x in groups if x == g) for g in keys}}
    for name, per_seed in ranks_by_run.items():
        out[name] = {}
        for g in keys:
            idx = [i for i, x in enumerate(groups) if x == g]
            out[name][str(g)] = {m: mean_sd([rank_metric(m)([r[i] for i in idx]) for r in per_seed])[0]
                                 for m in metrics}
    return out


def markdown_breakdown(table: dict, labels: dict[str, str], title: str) -> str:
    if not table:
        return ""
    groups = list(table["_count"])
    lines = [f"| {title} | " + " | ".join(f"{g} ({table['_count'][g]} captions)" for g in groups) + " |",
             "|---|" + "---|" * len(groups)]
    for name, by_group in table.items():
        if name == "_count":
            continue
        cells = [f"{by_group[g]['R@1']:.1f} / {by_group[g]['R@5']:.1f} / {by_group[g]['MdR']:.1f}" for g in groups]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ms(d: dict, digits: int = 1) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def _ci(d: dict) -> str:
    if d.get("low") is None:
        return "n/a"
    return f"[{d['low']:+.2f}, {d['high']:+.2f}]"


def markdown_table(rows: list[dict], header: dict) -> str:
    lines = [
        f"{header.get('title', 'Synthetic benchmark')}: {header['num_videos']} test videos, {header['num_captions']} "
        f"test captions ({header['test_split']}); {len(header['seeds'])} seed(s) {header['seeds']}; mean ± sample SD "
        "over seeds.",
        "",
        "| Framework | t2v R@1 | t2v R@5 | t2v R@10 | t2v MdR | v2t R@1 | v2t R@5 | online cost / query (1k videos) | indexable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, v = r["t2v"], r["v2t"]
        lines.append(
            f"| {r['label']} | {_ms(t['R@1'])} | {_ms(t['R@5'])} | {_ms(t['R@10'])} | {_ms(t['MdR'])} | "
            f"{_ms(v['R@1'])} | {_ms(v['R@5'])} | {r['online_ms_per_query_1k_videos']:.2f} ms | "
            f"{'yes' if r['indexable'] else 'no (re-rank)'} |"
        )
    return "\n".join(lines) + "\n"


def markdown_paired(pairs: list[dict]) -> str:
    if not pairs:
        return ""
    lines = [
        "| A − B (t2v) | metric | per seed | mean ± SD | 95% t-interval (seeds) | reading | seed-0 bootstrap over test captions (95%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        boot = p.get("bootstrap_seed0")
        boot_txt = f"{boot['difference']:+.2f} {_ci(boot)}: {boot['verdict']}" if boot else "n/a"
        per_seed = " / ".join(f"{x:+.1f}" for x in p["per_seed"])
        lines.append(f"| {p['a']} − {p['b']} | {p['metric']}{' (lower = better)' if p['lower_is_better'] else ''} | "
                     f"{per_seed} | {p['mean']:+.2f} ± {p['sd']:.2f} | {_ci(p)} | {p['verdict']} | {boot_txt} |")
    return "\n".join(lines) + "\n"


def markdown_tuning(tuning: dict, labels: dict[str, str]) -> str:
    if not tuning:
        return ""
    points = next(iter(tuning.values()))["grid"]
    heads = [f"lr {g['point']['lr']:g}, x{g['point']['new_module_lr_mult']:g}" for g in points]
    lines = ["| Framework | " + " | ".join(heads) + " | chosen |", "|---|" + "---|" * (len(heads) + 1)]
    for name, t in tuning.items():
        cells = [f"{g['score']:.1f}" for g in t["grid"]]
        c = t["chosen"]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) +
                     f" | lr {c['lr']:g}, new-module x{c['new_module_lr_mult']:g} |")
    return "\n".join(lines) + "\n"


def markdown_report(report: dict, labels: dict[str, str]) -> str:
    """The whole comparison.md text of a finished :func:`.comparison.run_comparison`."""
    parts = [f"# Framework comparison on the synthetic benchmark ({report['kind']} kind)\n",
             f"Command: `{report['command']}` ({report['seconds'] / 60:.1f} min on this machine)\n",
             markdown_table(report["rows"], report["header"])]
    premise = report.get("premise")
    if premise:
        state = "HOLDS" if premise["holds"] else \
            "cannot be checked (one seed: no interval)" if premise.get("low") is None else "DOES NOT HOLD"
        parts.append(f"\n**Premise check** (X-Pool − meanP, t2v R@1, paired over seeds): {premise['mean']:+.2f} "
                     f"(95% CI {_ci(premise)}): the premise {state}.\n")
    if report.get("paired"):
        parts.append("\n## Paired differences\n\n" + markdown_paired(report["paired"]))
    for g in report.get("half_gap", []):
        frac = "n/a" if g["fraction_closed"] is None else f"{g['fraction_closed']:.0%}"
        parts.append(f"\n{g['new']} vs half of the {g['base']}→{g['target']} gap on t2v {g['metric']}: gap "
                     f"{g['gap_mean']:+.2f}, gain {g['gain_mean']:+.2f} ({frac} closed); margin over the midpoint "
                     f"{g['margin_mean']:+.2f} (95% CI {_ci(g)}): closes at least half: {g['closes_half']}.\n")
    if report.get("breakdown"):
        parts.append("\n## t2v R@1 / R@5 / MdR by the number of scenes in the caption's clip (mean over seeds)\n\n" +
                     markdown_breakdown(report["breakdown"], labels, "Framework \\ scenes in the clip"))
    if report.get("tuning"):
        parts.append(f"\n## Tuning on the validation split ({report['select_metric']}, seed 0)\n\n" +
                     markdown_tuning(report["tuning"], labels))
    r = report["recipe"]
    if report.get("tuning"):
        lr_text = "lr and new-module multiplier per framework, above"
    else:
        point = report.get("fixed_point") or {}
        lr_text = (f"lr {point.get('lr', r.get('lr')):g} and new-module multiplier {point.get('new_module_lr_mult', 1):g} "
                   "for every framework, no tuning")
    parts.append(f"\nShared recipe: {r['stage2_steps']} steps x batch {r['batch_size']}, {report['budget']['frames']} "
                 f"frames, AdamW ({lr_text}), wd {r['weight_decay']}, warm-up "
                 f"{r['warmup_ratio']:.0%} + cosine, clip {r['grad_clip']}; start: {report['clip'].get('arch')} CLIP "
                 f"pretrained {report['clip'].get('steps')} steps on the image pairs; final weights evaluated.\n")
    return "".join(parts)
