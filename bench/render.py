"""Markdown tables and PNG plots from the result files: ``RESULTS.md`` and the README's copy of it.

Only reads JSON, so ``python -m bench.run --render-only`` redraws everything without re-running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.results import read_result

BEGIN, END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"
TITLES = {
    "client_overhead": "1. Client training overhead",
    "client_speed": "1b. Client speed: batched augmentation vs the 2026-11-21 path and a plain loop",
    "round_overhead": "2. Round overhead in simulation",
    "round_overhead_demo": "2b. Round overhead in simulation at the demo's settings",
    "communication": "3. Communication per round",
    "aggregation": "4. Aggregation at scale (ResNet-18 backbone)",
    "streaming": "4b. The ServerApp's memory per round: streamed vs collected replies",
    "export_suite": "5. Export: torch eager vs onnxruntime fp32 vs int8",
    "quality": "6. Quality: Fashion-MNIST kNN top-1 at equal compute",
    "quality_budget": "6b. Quality at the demo's real budget, with every baseline",
    "attacks": "7. Attacks: scaled, sign-flipped and colluding updates vs rules and defences",
}


# --- formatting ---------------------------------------------------------------
def num(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"
    return str(x)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.2f}"


def fmt_goal_value(g: dict[str, Any]) -> str:
    v, unit = g["value"], g.get("unit", "ratio")
    if v is None:
        return "not measured"
    return {"percent": pct(v), "times": f"{v:.2f}x", "points": f"{v:+.3f}", "updates": f"{v:.1f} updates"}.get(
        unit, f"{v:.3f}")


def met(g: dict[str, Any]) -> str:
    return {True: "met", False: "**not met**", None: "no target"}[g["met"]]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else num(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(d: dict[str, Any]) -> str:
    m = d["machine"]
    return (f"*{'quick' if d['quick'] else 'full'} mode, {m['date']}, {m['cpu']}, {m['cores']} cores, "
            f"{m['mem_total_gb']} GB; load average {m['load_avg_1m']} -> {d['load_avg_end']}; "
            f"{d['seconds']:.0f} s; torch {m['torch']}, flwr {m['flwr']}, commit {m['commit']}.*")


# --- one section per benchmark --------------------------------------------------
def client_overhead(d: dict[str, Any], _: Path, __: str) -> str:
    r = d["results"]

    def rng(x: list[float]) -> str:
        return f"{pct(x[0] - 1)} .. {pct(x[1] - 1)}"

    rows = [(m["method"], int(m["steps"]), m["ours_cpu_s"], m["reference_cpu_s"],
             f"**{pct(m['round_cpu_ratio'] - 1)}**", rng(m["round_cpu_ratio_range"]), pct(m["loop_cpu_ratio"] - 1),
             pct(m["round_wall_ratio"] - 1),
             f"{m['fixed_cpu_s']:.2f} s (collapse check {m['collapse_check_cpu_s']:.2f} s)",
             pct(m["projected_demo_round_overhead"]), f"{m['augmentation_share']:.0%}", m["same_batches"])
            for m in r["methods"]]
    return (f"`train_round` vs a plain PyTorch script on the same {r['samples']} images, batch {r['batch_size']}, "
            f"{r['threads']} thread; medians of {r['repeats']} interleaved pairs. CPU seconds (the goal's measure; "
            "wall time on a shared machine swings with other people's load, shown for reference). *fixed* = "
            "CPU outside `train_local` per round; *demo round* = the same fixed cost on the demo's "
            f"{r['demo_steps']}-step round (projected). *Same batches* = both arms report the same mean loss.\n\n"
            + table(["method", "steps", "ours CPU s", "plain CPU s", "round overhead (CPU)", "range",
                     "loop-only (CPU)", "round overhead (wall)", "fixed per round", "demo round (projected)",
                     "augmentation share of loop", "same batches"], rows))


def client_speed(d: dict[str, Any], _: Path, __: str) -> str:
    r = d["results"]
    names = {"commit": f"commit {r['base_commit']} (per-sample)", "per-sample": "today, per-sample",
             "ours": "today, batched (default)", "plain": "plain loop, same batched aug"}
    rows = []
    for m in r["threads"]:
        for arm, a in m["arms"].items():
            rows.append((m["threads"], names[arm], int(a["steps"]), a["cpu_s"], a["wall_s"],
                         f"{a['images_per_cpu_s']:.0f}", f"{a['images_per_wall_s']:.0f}"))
    ratios = [(m["threads"], f"**{pct(m['loop_cpu_ratio'] - 1)}**",
               f"{pct(m['loop_cpu_ratio_range'][0] - 1)} .. {pct(m['loop_cpu_ratio_range'][1] - 1)}",
               pct(m["loop_wall_ratio"] - 1), m["same_batches"],
               "—" if m["speedup_vs_commit"] is None else f"**{m['speedup_vs_commit']:.2f}x**",
               "—" if m["speedup_vs_commit_range"] is None
               else f"{m['speedup_vs_commit_range'][0]:.2f} .. {m['speedup_vs_commit_range'][1]:.2f}x",
               f"{m['speedup_vs_per_sample']:.2f}x", f"{m['round_fixed_cpu_s']:.2f} s") for m in r["threads"]]
    missing = f" **{r['commit_unavailable']}.**" if r.get("commit_unavailable") else ""
    return (f"SimCLR, small CNN, the same {r['samples']} images of one shard, batch {r['batch_size']}; four arms "
            f"interleaved (order rotating), medians of {r['repeats']} repeats per thread count; CPU seconds of the "
            f"training loop (wall for reference; load average {r['load_avg_start']:.2f} when the arms started). "
            f"*commit* runs {r['base_commit']}'s own `train_local` (2026-11-21 defaults) in a worker process; "
            "*plain* is a plain PyTorch loop doing what *ours* does (same `BatchAugment` and generator, model, "
            "Adam, schedule, channels-last), so *same batches* = equal mean losses. *fixed per round* = "
            f"`train_round`'s CPU outside the loop (settings, footprint, collapse check).{missing}\n\n"
            + table(["threads", "arm", "steps", "CPU s", "wall s", "images / CPU s", "images / wall s"], rows)
            + "\n\n" + table(["threads", "ours vs plain (CPU)", "range", "ours vs plain (wall)", "same batches",
                              f"images/CPU s vs {r['base_commit']}", "range", "vs per-sample today",
                              "fixed per round"], ratios))


def round_overhead(d: dict[str, Any], _: Path, __: str) -> str:
    r = d["results"]
    rows = [(x["round"], x["clients"], x["wall_s"], x["eval_s"], x["client_compute_sum_s"], x["ideal_s"],
             pct(x["overhead"]), pct(x["overhead_with_eval"])) for x in r["rounds"]]
    return (f"`flwr run .` local simulation, {r['nodes']} SuperNodes, {r['cpus_per_client']} CPU per client, so "
            f"P = {r['parallel_slots']} clients train at once. ideal = max(Σ client compute / P, max client "
            "compute); overhead = (wall − server eval) / ideal − 1. Steady state (rounds ≥ 2): "
            f"**{pct(r['steady_overhead'])}** ({pct(r['steady_overhead_with_eval'])} with the server's kNN eval). "
            f"Beyond the ideal, each client costs {r['fixed_per_client_s']:.2f} s per round (its training loop: "
            f"{r['client_compute_s']:.2f} s)"
            + (f", projected {pct(r['projected_demo_overhead'])} at the demo's {r['demo_samples']} samples per client. "
               if "projected_demo_overhead" in r else ". ")
            + f"Run config: `{' '.join(f'{k}={v}' for k, v in r['run_config'].items())}`. "
            f"Outside the rounds (start-up, baselines): {r['outside_rounds_s']:.0f} s of {r['run_wall_s']:.0f} s.\n\n"
            + table(["round", "clients", "wall s", "server eval s", "Σ client compute s", "ideal s", "overhead",
                     "overhead incl. eval"], rows))


def communication(d: dict[str, Any], _: Path, __: str) -> str:
    r = d["results"]
    rows = []
    for m in r["models"]:
        b, per = m["bytes"], m["round_bytes_per_client"]
        rows.append((m["encoder"], m["method"], m["backbone_params"], m["full_params"],
                     mb(b["full_fp32"]["count_bytes"]), mb(b["backbone_fp32"]["count_bytes"]),
                     mb(b["backbone_fp16"]["count_bytes"]), mb(per["full_fp32"]), mb(per["backbone_fp32"]),
                     mb(per["backbone_fp16_up"]), f"{m['round_ratio_to_full_fp32']['backbone_fp16_up']:.3f}"))
    real = r["clientapp_reply"]
    same = all(real[d]["count_bytes"] == real[d]["computed_backbone_bytes"] for d in ("float32", "float16"))
    err = r["models"][0]["fp16_error"]["relative_l2"]
    return ("MB per message (`ArrayRecord.count_bytes()`; the serialized protobuf is within 0.01 % of it) and per "
            "client per round (global backbone down in float32 + update up). Multiply by "
            f"{r['clients_per_round']} for a {r['clients_per_round']}-client round.\n\n"
            + table(["encoder", "SSL", "backbone params", "full-model params", "full fp32 MB", "backbone fp32 MB",
                     "backbone fp16 MB", "round: full fp32", "round: backbone fp32", "round: backbone, fp16 up",
                     "ratio to full fp32"], rows)
            + f"\n\nThe real ClientApp's reply: {num(real['float32']['count_bytes'])} B in float32 and "
            f"{num(real['float16']['count_bytes'])} B in float16 (ratio {real['fp16_to_fp32']:.3f}), equal to the "
            "computed backbone sizes: "
            f"{num(same)}."
            f" float16 rounding changes the weights by {err:.1e} (relative L2).")


def aggregation(d: dict[str, Any], results_dir: Path, prefix: str) -> str:
    r = d["results"]
    names = {"ours_lazy": "ours, lazy Sequence", "reference": "streaming NumPy reference", "ours_list": "ours, list",
             "strategy": "FedSSL.aggregate_train", "fedmedian_list": "fedmedian, list"}
    rows = []
    for c in sorted(r["cases"], key=lambda c: (c["clients"], list(names).index(c["kind"]))):
        note = c.get("skipped", "")
        if c["kind"] == "strategy" and "breakdown" in c:
            bd = c["breakdown"]
            note = "steps alone (best of a few): " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in bd.items())
        streamed = c["kind"] in ("ours_lazy", "reference")
        held = 1 + c["working_mb"] / r["update_mb"] if streamed and c.get("working_mb") else c.get("held_updates")
        rows.append((c["clients"], names[c["kind"]], c.get("seconds"),
                     f"{c['ratio_to_reference']:.2f}x" if c.get("ratio_to_reference") else "—",
                     f"{c['ratio_to_bound']:.0f}x" if c.get("ratio_to_bound") else "—",
                     c.get("input_mb"), c.get("working_mb"),
                     f"{held:.1f}" if held else f"({c['projected_mb'] / r['update_mb']:.0f} projected)",
                     note))
    bw = r["bandwidth_gbps"]
    plot = plot_aggregation(r, results_dir)
    return (f"One update = {r['update_mb']:.1f} MB ({num(r['params'])} parameters). Memory bandwidth measured in the "
            f"same run (in-place `np.add` on {bw['start']['array_mb']:.0f} MB arrays): {bw['start']['add_gbps']:.1f} "
            f"GB/s at the start, {bw['end']['add_gbps']:.1f} GB/s at the end; the bound uses the better one. "
            "*input* = what the caller holds before the call (for the lazy and streaming rows: a pool of distinct "
            "updates, larger than the L3 cache, standing in for replies arriving one at a time), *working* = the "
            "call's own peak allocation (tracemalloc), *held* = what must be in memory at once, in update sizes "
            "(streamed rows: one update in flight + working). Seconds: best of up to 5 runs.\n\n"
            + table(["clients", "aggregation", "seconds", "vs reference", "vs bandwidth bound", "input MB",
                     "working MB", "held (updates)", "note"], rows)
            + (f"\n\n![aggregation scaling]({prefix}{plot})" if plot else ""))


def export(d: dict[str, Any], _: Path, __: str) -> str:
    """bench/bench_export.py's own tables (its ``markdown``), on the figures wrapped in our envelope."""
    r = d["results"]
    ck = r["checkpoint"]
    intro = (f"Encoder: {ck['encoder']} trained with {ck['ssl']} on {num(ck['images_seen'])} Fashion-MNIST images "
             "(bench/export_suite.py), then `bench/bench_export.py` (issue #4).\n\n")
    try:
        from bench.bench_export import markdown

        theirs = {"results": r, "machine": r["export_machine"], "load_avg_end": r["export_load_avg_end"],
                  "command": r["command"], "seconds": r["export_seconds"]}
        return intro + markdown(theirs).split("\n", 2)[2].strip()
    except Exception as exc:  # their format moved on: show the raw figures rather than nothing
        return intro + f"(bench_export.markdown failed: {exc})\n\n" + table(
            ["backend", "kNN top-1"], [(k, v.get("knn")) for k, v in r.get("accuracy", {}).items()])


def quality(d: dict[str, Any], results_dir: Path, prefix: str) -> str:
    r = d["results"]
    s = r["size"]
    rows = [(x["name"], x["images_seen"], f"**{x['knn']:.4f}**", f"{x['vs_centralized']:.3f}" if x["vs_centralized"]
             else "—", f"{x['vs_random_init']:+.4f}", f"{x['vs_raw_pixels']:+.4f}", x.get("excluded", 0),
             x["wall_s"]) for x in r["runs"]]
    b = r["baselines"]
    rows += [("baseline: raw pixels", 0, f"{b['raw-pixels']:.4f}", "", "", "", "", ""),
             ("baseline: random-init encoder", 0, f"{b['random-init']:.4f}", "", "", "", "", "")]
    plot = plot_quality(r, results_dir)
    return (f"{s['nodes']} clients x {s['rounds']} rounds x {s['samples']} images (batch {s['batch']}) = "
            f"{num(r['images_per_run'])} images per run; centralized sees the same number from the pooled set. kNN "
            f"(k=200) on {num(s['gallery'])} gallery / {num(s['query'])} query images, final round. Federated rows "
            "use FedAvg with the collapse filter on unless named; rule rows are SimCLR. *vs centralized* = kNN / "
            "centralized kNN of the same SSL method.\n\n"
            + table(["run", "images seen", "kNN top-1", "vs centralized", "Δ random-init", "Δ raw pixels",
                     "excluded updates", "wall s"], rows)
            + (f"\n\n![kNN per round]({prefix}{plot})" if plot else ""))


def quality_budget(d: dict[str, Any], results_dir: Path, prefix: str) -> str:
    from bench.bench_quality_budget import margins

    cells = d["results"]["cells"]
    names = ("federated", "centralized", "local-only", "raw-pixels", "random-init", "random-init-bn")
    rows = []
    for c in cells:
        sc = c["scores"]
        rows.append((f"{c['method']} {c['split']} seed {c['seed']}" + ("" if c["lever"] == "default"
                                                                       else f" (lever: {c['lever']})"),
                     *[f"{sc[n]['knn']:.4f}" for n in names],
                     f"{sc['federated']['knn_report']:.4f} / {sc['raw-pixels']['knn_report']:.4f}",
                     f"{sc['federated']['linear']:.4f} / {sc['raw-pixels']['linear']:.4f}",
                     f"{c['wall_s']:.0f}"))
    return ("Each row is one cell measured in one go: the demo's configuration federated through Flower's "
            "simulation (10 clients, 2 per round), every client alone (local-only, same rounds and steps), one "
            "model on the pooled data for as many steps as all clients together (centralized), and the run's own "
            "baselines. kNN top-1 at k=200 on the 10k/2k Fashion-MNIST probe unless named; k=20 and the linear "
            "probe (5,000 labels) are given as federated / raw pixels.\n\n"
            + table(["cell", "federated", "centralized", "local-only", "raw pixels", "random init",
                     "random init, BN calibrated", "k=20", "linear", "wall s"], rows)
            + "\n\nMean over seeds, kNN k=200, in points: the margins the targets ask for, and the headroom "
              "(centralized at equal images minus local-only: what a federation could gain over local-only if "
              "federating cost nothing).\n\n" + table(
                ["method, split, lever", "seeds", "federated", "federated - local-only", "federated - raw pixels",
                 "federated - random init", "centralized - local-only"], margins(cells)))


def streaming(d: dict[str, Any], _: Path, __: str) -> str:
    from bench.bench_streaming import markdown

    return markdown(d)


def attacks(d: dict[str, Any], _: Path, __: str) -> str:
    from bench.bench_attacks import markdown

    return markdown(d)


SECTIONS: dict[str, Callable[[dict[str, Any], Path, str], str]] = {
    "client_overhead": client_overhead, "client_speed": client_speed, "round_overhead": round_overhead,
    "round_overhead_demo": round_overhead, "communication": communication,
    "aggregation": aggregation, "streaming": streaming, "export_suite": export, "quality": quality,
    "quality_budget": quality_budget,
    "attacks": attacks,
}


# --- plots --------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(r: dict[str, Any], results_dir: Path) -> str | None:
    runs = r["runs"]
    if not runs or len(runs[0]["knn_per_round"]) < 2:
        return None
    plt = _pyplot()
    groups = [g for g in ("centralized", "federated", "rule", "collapsed") if any(x["group"] == g for x in runs)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for x in runs:
        ax = axes[0] if x["group"] in ("centralized", "federated") else axes[1]
        style = "-" if x["group"] in ("centralized", "rule") else "--"
        ax.plot(range(1, len(x["knn_per_round"]) + 1), x["knn_per_round"], style, marker="o", ms=3, label=x["name"])
    for ax, title in zip(axes, ("SSL method x data split", "aggregation rules and collapsed clients")):
        for name, ls in (("raw-pixels", ":"), ("random-init", "-.")):
            ax.axhline(r["baselines"][name], color="grey", linestyle=ls, label=name)
        ax.set(xlabel="round", ylabel="kNN top-1 (Fashion-MNIST)", title=title)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"groups: {', '.join(groups)}", fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, results_dir / "quality_knn.png")


def plot_aggregation(r: dict[str, Any], results_dir: Path) -> str | None:
    cases = [c for c in r["cases"] if c.get("seconds")]
    if len({c["clients"] for c in cases}) < 2:
        return None
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in sorted({c["kind"] for c in cases}):
        pts = sorted((c["clients"], c["seconds"], c["input_mb"] + c["working_mb"]) for c in cases if c["kind"] == kind)
        a1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
        a2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=kind)
    bound = sorted({(c["clients"], c["bound_seconds"]) for c in r["cases"]})
    a1.plot([b[0] for b in bound], [b[1] for b in bound], "k:", label="bandwidth bound")
    a1.set(xscale="log", yscale="log", xlabel="client updates", ylabel="seconds")
    a2.set(xscale="log", yscale="log", xlabel="client updates", ylabel="MB held (input + working)")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, results_dir / "aggregation_scaling.png")


def _save(fig, plt, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path.name


# --- the whole page -----------------------------------------------------------------
def render_all(results_dir: Path, failed: dict[str, str], order: Sequence[str], prefix: str = "") -> Path:
    """Write ``RESULTS.md`` from every result file present; returns its path."""
    out = results_dir / "RESULTS.md"
    out.write_text(render_markdown(results_dir, failed, order, prefix))
    return out


def read_all(results_dir: Path, order: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every result file present, by benchmark name, in ``order``."""
    return {n: read_result(results_dir / f"{n}.json") for n in order if (results_dir / f"{n}.json").is_file()}


def render_markdown(results_dir: Path, failed: dict[str, str], order: Sequence[str], prefix: str = "") -> str:
    data = read_all(results_dir, order)
    goal_rows = [(TITLES[n].split(".")[0], g["name"], g["target"], fmt_goal_value(g), met(g), g["note"])
                 for n, d in data.items() for g in d["goals"]]
    parts = ["## Goals\n\n" + table(["#", "goal", "target", "measured", "status", "how"], goal_rows)]
    for name in order:
        title = f"### {TITLES[name]}"
        if name in data:
            d = data[name]
            stale = (f"  \n**Failed in the latest run ({failed[name][:200]}); these figures are older.**"
                     if name in failed else "")
            try:
                body = SECTIONS[name](d, results_dir, prefix)
            except (KeyError, TypeError, IndexError) as exc:  # a file from an older version of the benchmark
                body = f"**Cannot render this file ({type(exc).__name__}: {exc}); re-run the benchmark.**"
            parts.append(f"{title}\n\n{provenance(d)}{stale}\n\n{body}")
        else:
            why = failed.get(name, "not run yet")
            parts.append(f"{title}\n\n**No results: {why}.**")
    return "\n\n".join(parts) + "\n"


def render_goals(results_dir: Path, order: Sequence[str]) -> str:
    """The goals table alone, each row with the date and machine of its run (the top-level README's copy)."""
    data = read_all(results_dir, order)
    rows = []
    for name, d in data.items():
        m = d["machine"]
        when = f"{m['date'][:10]}, {m['cores']} cores, load {m['load_avg_1m']}"
        rows += [(TITLES[name].split(".")[0], g["name"], g["target"], fmt_goal_value(g), met(g), g["note"], when)
                 for g in d["goals"]]
    machines = sorted({f"{d['machine']['cpu']}, {d['machine']['cores']} cores, {d['machine']['mem_total_gb']} GB"
                       for d in data.values()})
    return (table(["#", "goal", "target", "measured", "status", "how", "run"], rows)
            + f"\n\nMachine: {'; '.join(machines)}, full mode; shared with other work, "
            "so each figure is a ratio to a reference measured in the same run.\n")


def update_readme(readme: Path, results_dir: Path, order: Sequence[str], goals_only: bool = False) -> None:
    """Replace the block between the markers in ``readme`` with the current tables (or only the goals)."""
    if not readme.is_file():
        return
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return
    if goals_only:
        body = render_goals(results_dir, order)
    else:
        prefix = f"{results_dir.resolve().relative_to(readme.parent.resolve())}/"
        body = render_markdown(results_dir, {}, order, prefix).replace("## Goals", "### Goals")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
