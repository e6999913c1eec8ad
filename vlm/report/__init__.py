"""The report of a run: a thin reader of the JSON files the other stages wrote. No model, nothing heavier than
numpy / matplotlib.

Reads (never writes) the run dir:
  eval/<variant>/<recipe>/<mode>/{predictions.jsonl, metrics.json, eval_meta.json}
      (eval_meta.json, when present, names variant / recipe / mode and optionally a study ``arm``; otherwise
      they come from the path; evaluations that name an arm get the "Arms" table, one row per arm)
  train/<name>/trainer_log.jsonl   HF Trainer log history, one JSON object per line
  train/<variant>/train_config.json  ``recipe_resolved``: the recipe a compared variant was trained on
  cot*/cot_meta.json               a KD student trained without a logit cache is flagged
  manifest.json                    provenance, and the study's design (``python -m vlm.manifest study``):
                                   the variants in table order, a declared variant without eval dirs is
                                   "missing", blind-only variants have no normal/blind pair, the declared
                                   pairs get the "Comparisons" table (A − B, each on its trained recipe,
                                   paired CI) and the gap_recovered pair the headline's "gap recovered"
                                   column. Without it: variants sorted by name, a variant evaluated blind
                                   only is blind-only, no comparisons.

Writes into out_dir, atomically: results.json (every number of the tables, their sources, incomplete /
missing entries), report.md (rendered from results.json only), loss_curves.png, normal_vs_blind.png.

collect (read the run dir) → stats (cells, paired bootstrap differences) → tables (rows) → plots / render.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm.io import atomic_write_text, json_safe
from vlm.manifest import read_study
from vlm.report.collect import discover, kd_warnings, provenance, trained_recipes, training_runs
from vlm.report.plots import draw_plots
from vlm.report.render import headline_table, render_markdown
from vlm.report.stats import CONFIDENCE, Scores
from vlm.report.tables import results_tables, status_lists

__all__ = ["build_report", "compute_results", "headline_table", "render_markdown"]


def compute_results(run_dir: Path, headline: str = "auto", n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything the report shows, as numbers (percent, 0–100). Reads only; writes nothing."""
    study = read_study(run_dir)
    entries = discover(run_dir, study.variants if study else ())
    trained = trained_recipes(run_dir, sorted({v for pair in study.compare for v in pair})) if study else {}
    incomplete, missing, warnings = status_lists(entries, study)
    return {
        "run_dir": str(run_dir),
        "headline": headline,
        "confidence": CONFIDENCE,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "provenance": provenance(run_dir),
        "study": study.to_json() if study else None,
        "sources": {e.src: {"metrics": f"{e.rel}/metrics.json",
                            "predictions": f"{e.rel}/predictions.jsonl" if e.has_predictions else None,
                            "variant": e.variant, "recipe": e.recipe, "mode": e.mode,
                            "benchmark": e.metrics["benchmark"],
                            "n": int(e.metrics["n"]), "model": e.meta.get("model"), "adapter": e.meta.get("adapter")}
                    for e in entries if e.metrics is not None},
        "tables": results_tables(entries, headline, Scores(), n_bootstrap, seed, study, trained),
        "training": training_runs(run_dir),
        "incomplete": incomplete,
        "missing": missing,
        "warnings": warnings + kd_warnings(run_dir),
        "plots": {},
    }


def build_report(run_dir: Path, out_dir: Path, headline: str = "auto", n_bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """compute_results, the plots, results.json and report.md into out_dir; returns the results as written."""
    results = compute_results(run_dir, headline, n_bootstrap, seed)
    results["plots"] = draw_plots(run_dir, results, out_dir)
    results = json_safe(results)
    text = json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(out_dir / "results.json", text)
    atomic_write_text(out_dir / "report.md", render_markdown(results))
    return results
