#!/usr/bin/python3
"""Plots for `leasetrain bench compare` and `leasetrain report`, through matplotlib (Debian's
python3-matplotlib). Every figure is written as PNG and SVG; the paths written go to stdout,
one per line.

  plot.py compare DATA.json OUTDIR   DATA: what `bench compare --json` writes
  plot.py report METRICS.jsonl OUTDIR [TITLE [AGAINST_METRICS.jsonl AGAINST_LABEL]]
  plot.py predict DATA.json OUTDIR   DATA: what `plan --predict --json` writes
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, and smaller
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def save(fig, outdir, name):
    for ext in ("png", "svg"):
        path = os.path.join(outdir, f"{name}.{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        print(path)
    plt.close(fig)


def bars(outdir, name, title, ylabel, labels, machines, series, log=False):
    """Grouped bars: one group per label, one bar per machine (None = no value)."""
    if not labels:
        return
    n = len(machines)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) * max(n, 1) + 2), 4.5))
    for i, m in enumerate(machines):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ys = [v if v is not None else 0 for v in series[i]]
        bc = ax.bar(xs, ys, width, label=m)
        ax.bar_label(bc, labels=["" if v is None else f"{v:.3g}" for v in series[i]], fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    values = [v for s in series for v in s if v]
    # A log axis only when the values span more than two decades; bars on a log axis start at
    # an arbitrary floor and mislead otherwise.
    if log and values and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, outdir, name)


def compare(data_path, outdir):
    with open(data_path) as f:
        data = json.load(f)
    machines = [m["label"] for m in data["machines"]]
    rows = data["rows"]

    def plot_metric(suites, metric, name, title, ylabel, log=False):
        sel = [r for r in rows if r["suite"] in suites and r["metric"] == metric
               and any(v is not None for v in r["values"])]
        series = [[r["values"][i] for r in sel] for i in range(len(machines))]
        bars(outdir, name, title, ylabel, [r["label"] for r in sel], machines, series, log)

    plot_metric({"gemm"}, "tflops", "gemm_tflops", "GEMM throughput per shape", "TFLOP/s", log=True)
    plot_metric({"attention"}, "tflops", "attention_tflops", "Attention throughput", "TFLOP/s", log=True)
    plot_metric({"gemm", "attention"}, "pct_peak", "pct_peak", "Share of the machine's peak", "% of peak")
    plot_metric({"memory"}, "gbps", "memory_gbps", "Memory bandwidth (read + write)", "GB/s")
    plot_metric({"allreduce"}, "busbw_gbps", "allreduce_busbw", "All-reduce bus bandwidth", "GB/s", log=True)
    plot_metric({"step"}, "tokens_per_s", "tokens_per_s", "Training step throughput", "tokens/s", log=True)
    plot_metric({"step"}, "tokens_per_dollar", "tokens_per_dollar", "Training tokens per dollar", "tokens/$",
                log=True)


def read_metrics(metrics_path):
    """steps, loss, tokens/s, validation steps, validation loss; a step recorded twice keeps its last record."""
    rows = {}
    with open(metrics_path) as f:
        for line in f:
            line = line.strip()
            if line:
                j = json.loads(line)
                rows[j["step"]] = j
    steps = sorted(rows)
    loss = [rows[s]["loss"] for s in steps]
    tps = [rows[s].get("tokens_per_s", math.nan) for s in steps]
    vsteps = [s for s in steps if "val_loss" in rows[s]]
    vloss = [rows[s]["val_loss"] for s in vsteps]
    return steps, loss, tps, vsteps, vloss


def report(metrics_path, outdir, title, against_path=None, against_label=None):
    steps, loss, tps, vsteps, vloss = read_metrics(metrics_path)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    mine = f"{title}: " if against_path else ""
    a1.plot(steps, loss, lw=0.8, alpha=0.6, label=f"{mine}train loss")
    if len(loss) >= 20 and not against_path:  # a moving mean shows the trend under the per-step noise
        k = max(5, len(loss) // 50)
        mean = [sum(loss[max(0, i - k + 1):i + 1]) / (i - max(0, i - k + 1) + 1) for i in range(len(loss))]
        a1.plot(steps, mean, lw=1.5, label=f"train loss, mean of {k}")
    if vsteps:
        a1.plot(vsteps, vloss, "o-", lw=1.5, label=f"{mine}validation loss")
    if against_path:
        s2, l2, t2, v2s, v2 = read_metrics(against_path)
        a1.plot(s2, l2, "--", lw=0.8, alpha=0.8, label=f"{against_label}: train loss")
        if v2s:
            a1.plot(v2s, v2, "s--", lw=1.0, mfc="none", label=f"{against_label}: validation loss")
        a2.plot(s2, t2, "--", lw=0.8, label=against_label)
        title = f"{title} against {against_label}"
    a1.set_ylabel("loss (nats/token)")
    a1.set_title(title)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.plot(steps, tps, lw=0.8, label=mine.rstrip(": ") or None)
    if against_path:
        a2.legend(fontsize=8)
    a2.set_ylabel("tokens/s")
    a2.set_xlabel("step")
    a2.grid(alpha=0.3)
    save(fig, outdir, "training")


def predict(data_path, outdir):
    """Predicted tokens/s and cost to the token budget (or MFU without one) against node count,
    one line per machine: the H100-or-A100 question side by side."""
    with open(data_path) as f:
        data = json.load(f)
    budget = data.get("token_budget", 0)
    priced = budget > 0 and any(m.get("price_per_gpu_hour", 0) > 0 for m in data["machines"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in data["machines"]:
        rows = [r for r in m["rows"] if r["feasible"]]
        if not rows:
            continue
        nodes = [r["nodes"] for r in rows]
        label = f'{m["label"]} x{m["gpus_per_node"]}/node'
        a1.plot(nodes, [r["tokens_per_s"] for r in rows], marker="o", label=label)
        if m.get("knee_nodes"):
            k = [r for r in rows if r["nodes"] == m["knee_nodes"]]
            if k:
                a1.annotate("knee", (k[0]["nodes"], k[0]["tokens_per_s"]), textcoords="offset points",
                            xytext=(4, -12), fontsize=8)
        if priced and m.get("price_per_gpu_hour", 0) > 0:
            a2.plot(nodes, [r["cost"] for r in rows], marker="o", label=label)
        elif not priced:
            a2.plot(nodes, [100 * r["mfu"] for r in rows], marker="o", label=label)
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 1, 2, 4 rather than 2^k
        ax.set_xlabel("nodes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_ylabel("tokens/s (predicted)")
    a1.set_title("throughput")
    if priced:
        a2.set_ylabel(f"$ to {budget:.3g} tokens")
        a2.set_title("cost to the token budget")
    else:
        a2.set_ylabel("MFU %")
        a2.set_title("model FLOPs utilisation")
    fig.suptitle(os.path.basename(data.get("config", "")), fontsize=10)
    save(fig, outdir, "predict")


def main(argv):
    if len(argv) < 4 or argv[1] not in ("compare", "report", "predict"):
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(argv[3], exist_ok=True)
    if argv[1] == "compare":
        compare(argv[2], argv[3])
    elif argv[1] == "predict":
        predict(argv[2], argv[3])
    else:
        title = argv[4] if len(argv) > 4 else os.path.basename(os.path.dirname(argv[2]))
        report(argv[2], argv[3], title, *(argv[5:7] if len(argv) > 6 else []))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
