"""Turns bench/suite.py's results.json into results.md (tables, ratios, targets) and results.png.

    .venv-bench/bin/python bench/report.py [bench/results]
"""

import json
import math
import sys
from pathlib import Path

from common import table

LIMITS = ("ONNX Runtime", "nginx")
PEERS = ("MLServer", "Triton")


def fmt(x, digits=3):
    """A figure with `digits` significant digits (more when it has more whole digits), no exponent."""
    if x is None:
        return "-"
    decimals = 0 if x == 0 else max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


class Figures:
    def __init__(self, results):
        self.results = results

    def find(self, workload, server, load, concurrency=None):
        return next((r for r in self.results if r["workload"] == workload and r["server"] == server
                     and r["load"] == load and concurrency in (None, r["concurrency"])), None)

    def ratios(self, r):
        """Throughput as a share of each limit, and throughput and p99 against each peer on the same load."""
        out = {}
        compute = self.find(r["workload"], "ONNX Runtime", "in-process")
        if compute and r["server"] not in LIMITS:
            out["x compute"] = r["infer_per_s"] / compute["infer_per_s"]
        loopback = self.find(r["workload"], "nginx", r["load"], r["concurrency"])
        if loopback and r["server"] not in LIMITS:
            out["x loopback"] = r["infer_per_s"] / loopback["infer_per_s"]
        for peer in PEERS:
            other = self.find(r["workload"], peer, r["load"], r["concurrency"])
            if other and r["server"] not in (peer, *LIMITS):
                out[f"x {peer}"] = r["infer_per_s"] / other["infer_per_s"]
                out[f"p99 / {peer}"] = r["p99_us"] / other["p99_us"]
        return out

    def workload_table(self, workload):
        rows = [r for r in self.results if r["workload"] == workload]
        keys = sorted({k for r in rows for k in self.ratios(r)}, key=["x compute", "x loopback", "x MLServer",
                      "p99 / MLServer", "x Triton", "p99 / Triton"].index)
        body = [[r["server"], r["load"], r["concurrency"], fmt(r["infer_per_s"]), fmt(r["p50_us"] / 1000),
                 fmt(r["p99_us"] / 1000), *(fmt(self.ratios(r).get(k), 2) for k in keys)] for r in rows]
        return table(["server", "load", "concurrency", "infer/s", "p50 ms", "p99 ms", *keys], body)

    def summary(self, workloads):
        """One line per workload and concurrency: Nereid against MLServer and the limits, both through wrk JSON."""
        body = []
        for w in workloads:
            for r in (r for r in self.results if r["workload"] == w and r["server"] == "Nereid" and r["load"] == "wrk JSON"):
                other = self.find(w, "MLServer", "wrk JSON", r["concurrency"]) or {}
                ratios = self.ratios(r)
                body.append([w, r["concurrency"], fmt(r["infer_per_s"]), fmt(other.get("infer_per_s")),
                             fmt(ratios.get("x MLServer"), 2), fmt(r["p99_us"] / 1000),
                             fmt(other["p99_us"] / 1000 if other else None), fmt(ratios.get("x loopback"), 2),
                             fmt(ratios.get("x compute"), 2)])
        return table(["workload", "concurrency", "Nereid infer/s", "MLServer infer/s", "x MLServer", "Nereid p99 ms",
                      "MLServer p99 ms", "Nereid x loopback", "Nereid x compute"], body) if body else ""

    def targets(self, workloads):
        """Issue 9's targets, each concurrency a line: met or missed, with the figure."""
        lines = []
        for w in workloads:
            for r in (r for r in self.results if r["workload"] == w and r["server"] == "Nereid" and r["load"] == "wrk JSON"):
                ratios = self.ratios(r)
                if "x MLServer" in ratios:
                    met = ratios["x MLServer"] >= 3 and ratios["p99 / MLServer"] <= 1 / 3
                    lines.append(f"- {'met' if met else '**missed**'}: {w}, concurrency {r['concurrency']}: Nereid "
                                 f"{ratios['x MLServer']:.1f}x MLServer's throughput (target >= 3), p99 "
                                 f"{ratios['p99 / MLServer']:.2f}x MLServer's (target <= 0.33)")
                if w == "simple" and "x loopback" in ratios:
                    met = ratios["x loopback"] >= 0.7
                    lines.append(f"- {'met' if met else '**missed**'}: {w}, concurrency {r['concurrency']}: Nereid "
                                 f"{ratios['x loopback']:.0%} of nginx's throughput on the same payload (target >= 70%)")
        return lines


def markdown(data):
    meta, figures = data["meta"], Figures(data["results"])
    workloads = list(meta["titles"])
    out = [
        "# Benchmark results",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['os']}. The load generators (perf_analyzer, "
        "wrk) run on the same machine and share its cores with the server they measure.",
        f"- Date: {meta['date']}, commit `{meta['commit']}`{' (--quick: smoke test, not figures)' if meta['quick'] else ''}",
        f"- Command: `{meta['command']}`",
        "- Limits: `ONNX Runtime in-process` runs the same model on the same inputs back to back in one process "
        "(compute limit; at the batch dynamic batching forms, counted per request); `nginx` answers the same JSON "
        "request with the same response body (loopback limit). `x compute` and `x loopback` are throughput "
        "as a share of them; `x MLServer` / `x Triton` are throughput against that peer on the same load and "
        "concurrency, `p99 / MLServer` its p99 against the peer's (below 1 is better).",
        "",
        "## Summary: Nereid and MLServer, same JSON request through wrk",
        "",
        figures.summary(workloads) or "(no wrk JSON figures for Nereid)",
        "",
        "## Targets",
        "",
        *(figures.targets(workloads) or ["- nothing to compare (a peer or a limit is missing)"]),
    ]
    for w in workloads:
        out += ["", f"## {meta['titles'][w]} (`{w}`)", "", figures.workload_table(w)]
    if meta["notes"]:
        out += ["", "## Notes", "", *(f"- {n}" for n in meta["notes"])]
    out += ["", "![throughput and p99 against concurrency](results.png)", ""]
    return "\n".join(out)


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    meta, results = data["meta"], data["results"]
    workloads = list(meta["titles"])
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.2 * len(workloads), 7.5), squeeze=False)
    series = sorted({(r["server"], r["load"]) for r in results if r["server"] != "ONNX Runtime"},
                    key=lambda s: (s[0] in LIMITS, s))
    colors = dict(zip(series, plt.cm.tab10.colors))
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for col, w in enumerate(workloads):
        top, bottom = axes[0][col], axes[1][col]
        for s in series:
            points = sorted((r["concurrency"], r["infer_per_s"], r["p99_us"] / 1000) for r in results
                            if r["workload"] == w and (r["server"], r["load"]) == s)
            if points:
                c, thr, p99 = zip(*points)
                style = dict(color=colors[s], marker="o", linestyle="--" if s[0] in LIMITS else "-", label=" · ".join(s))
                top.plot(c, thr, **style)
                bottom.plot(c, p99, **style)
        compute = next((r for r in results if r["workload"] == w and r["server"] == "ONNX Runtime"), None)
        if compute:
            top.axhline(compute["infer_per_s"], color="black", linestyle=":", label="ONNX Runtime in-process")
        top.set_title(meta["titles"][w], fontsize=10)
        for ax, label in ((top, "infer/s"), (bottom, "p99 ms")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["concurrency"] for r in results if r["server"] not in LIMITS[:1]}))
            ax.xaxis.set_major_formatter(plain)
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("concurrency")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
    handles = {l: h for ax in axes.flat for h, l in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=9)
    fig.suptitle(f"{meta['cpu']}, {meta['cores']} cores, load generator on the same cores; {meta['date']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=100)


def write(folder):
    folder = Path(folder)
    data = json.loads((folder / "results.json").read_text())
    (folder / "results.md").write_text(markdown(data))
    try:
        plot(data, folder / "results.png")
    except ImportError:
        print("report: matplotlib missing, no plot")
    print(f"\nwrote {folder / 'results.md'} and results.png")
    print(markdown(data))


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
