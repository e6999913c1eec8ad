"""Plots drawn after the fact from results.json and the trainer logs (Agg canvas, no display, no pyplot state)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from vlm.io import atomic_write_bytes
from vlm.report.collect import LOSS_KEYS, MODES, read_trainer_log
from vlm.report.render import row_label

LINE_STYLES = dict(zip(LOSS_KEYS, ("-", "--", "-.", ":")))  # loss solid, ce / kd dashed, eval dotted


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_loss_curves(run_dir: Path, results: dict[str, Any], path: Path) -> str | None:
    """One colour per training run; loss solid, ce_loss / kd_loss dashed, eval_loss dotted. Reason if skipped."""
    logs = [(r["name"], read_trainer_log(run_dir / r["source"])[0]) for r in results["training"]]
    logs = [(name, s) for name, s in logs if s]
    if not logs:
        return "no train/*/trainer_log.jsonl with loss values"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for i, (name, series) in enumerate(logs):
        for key, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, LINE_STYLES[key], color=f"C{i % 10}", label=f"{name} {key}",
                    marker="o" if len(points) == 1 or key == "eval_loss" else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return None


def plot_normal_vs_blind(results: dict[str, Any], path: Path) -> str | None:
    """Headline value per evaluation, normal and blind bars side by side with their CIs. Reason if skipped."""
    rows = [r for r in results["tables"]["headline"]
            if any(r[m] and r[m]["value"] is not None for m in MODES)]
    if not rows:
        return "no evaluation with metrics.json"
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.38
    for j, (mode, colour) in enumerate(zip(MODES, ("C0", "C7"))):
        vals, err = [], [[], []]
        for r in rows:
            c = r[mode]
            v = c["value"] if c and c["value"] is not None else math.nan
            lo, hi = (c["ci"] if c and c["ci"] and None not in c["ci"] else (v, v))
            vals.append(v)
            err[0].append(max(0.0, v - lo) if not math.isnan(v) else 0.0)
            err[1].append(max(0.0, hi - v) if not math.isnan(v) else 0.0)
        ax.bar(x + (j - 0.5) * width, vals, width, yerr=err, capsize=3, color=colour, label=mode)
    ax.set_xticks(x)
    ax.set_xticklabels([row_label(r, results) for r in rows], rotation=20, ha="right", fontsize=8)
    metrics = sorted({r["metric"] for r in rows})
    ax.set_ylabel(f"{' / '.join(metrics)} (%)")
    ax.set_title(f"normal vs blind ({int(100 * results['confidence'])}% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    _save(fig, path)
    return None


def draw_plots(run_dir: Path, results: dict[str, Any], out_dir: Path) -> dict[str, dict[str, str | None]]:
    """Every plot into out_dir: {name: {"file": "<name>.png" or None, "skipped": reason or None}}. A skipped
    plot's PNG from an earlier report is removed: it would be stale."""
    plots = {}
    for name, draw in (("loss_curves", lambda p: plot_loss_curves(run_dir, results, p)),
                       ("normal_vs_blind", lambda p: plot_normal_vs_blind(results, p))):
        skipped = draw(out_dir / f"{name}.png")
        if skipped:
            (out_dir / f"{name}.png").unlink(missing_ok=True)
        plots[name] = {"file": None if skipped else f"{name}.png", "skipped": skipped}
    return plots
