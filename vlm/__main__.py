"""``python -m vlm <stage> [options]`` — the single entry point the pipelines call.

Each stage is one module with a config dataclass ``Config`` and ``main(cfg)``; this file only maps
names to modules (a plain dict) and turns bad input into one clear message and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

from vlm.data.errors import EXIT_CODE, DataError

# name -> (module, one-line summary). Modules are imported lazily: `--help` of one stage
# should not pay for importing every other stage's dependencies.
STAGES: dict[str, tuple[str, str]] = {
    "toyworld": ("vlm.data.toyworld", "generate the synthetic toy world in the real Hypo3D / ScanQA formats"),
    "validate": ("vlm.stages.validate", "check a dataset file (and its images) without loading a model"),
    "prepare": ("vlm.stages.prepare", "prepare a downloaded dataset (llava-cot: join archive parts, extract, validate)"),
    "split": ("vlm.stages.split", "seeded, scene-disjoint train/val/test split in the input's own format"),
    "prior": ("vlm.stages.prior", "answer-prior baseline: most frequent training answer per question pattern"),
    "evaluate": ("vlm.stages.evaluate", "model (+adapter) x recipe x normal/blind -> resumable predictions.jsonl + metrics.json"),
    "finetune": ("vlm.stages.finetune", "LoRA (or full) fine-tune with the HF Trainer: CE on gold answers/CoT, or KD from a teacher cache"),
    "generate_cot": ("vlm.stages.generate_cot", "teacher CoT transcripts + raw top-k logit cache for KD"),
    "metrics": ("vlm.metrics", "score a predictions.jsonl with the benchmark's official metrics"),
    "report": ("vlm.stages.report", "collect every metrics.json of a run into report.md, plots and results.json"),
    "zoo": ("vlm.models.zoo", "build / list the tiny local checkpoints behind zoo:<name> ids"),
    "assemble_cobra": ("vlm.stages.assemble_cobra", "build a Cobra checkpoint from a pretrained SigLIP tower and a Mamba LM"),
    "family": ("vlm.models.registry", "print a model's family (from its config.json model_type)"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in STAGES.items())
    return f"usage: python -m vlm <stage> [options]   (python -m vlm <stage> --help)\n\nstages:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        print(f"vlm: unknown stage '{name}'\n\n{usage()}", file=sys.stderr)
        return EXIT_CODE
    module = importlib.import_module(STAGES[name][0])
    from vlm.cli import parse_config

    try:
        cfg = parse_config(module.Config, rest, prog=f"python -m vlm {name}")
        result = module.main(cfg)
    except DataError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_CODE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
