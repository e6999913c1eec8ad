"""``python -m vlm report RUN_DIR`` — one report of a run, read from the JSON files the other stages wrote.

The stage: its flags and the summary it prints. What is read and written, and how: ``vlm.report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm.data.errors import DataError
from vlm.report import build_report, headline_table


@dataclass
class Config:
    """Collect every metrics.json of a run into report.md, results.json and PNG plots (reads JSON only, no model)."""

    run_dir: str = field(metadata={"positional": True, "help": "run directory (runs/pipeline_run_…)"})
    out_dir: str | None = field(default=None, metadata={"help": "where to write the report (default: RUN_DIR/report)"})
    headline: str = field(default="auto", metadata={"help": "headline metric: auto (em for hypo3d, em@1 for scanqa) or any key of metrics.json 'overall'"})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the paired CIs of differences (0: no CIs)"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})


def main(cfg: Config) -> int:
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise DataError.single(run_dir, "-", "run directory not found")
    if cfg.n_bootstrap < 0:
        raise DataError.single(run_dir, "--n_bootstrap", "must be >= 0")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "report"
    results = build_report(run_dir, out_dir, cfg.headline, cfg.n_bootstrap, cfg.seed)
    if results["tables"]["headline"]:
        print("\n".join(headline_table(results)))
    else:
        print("no evaluation with a metrics.json in eval/")
    for item in results["incomplete"]:
        print(f"incomplete: {item['dir']}: {item['reason']}")
    print(f"\nwrote {out_dir / 'report.md'}")
    return 0
