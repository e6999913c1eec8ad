"""Evaluate a model (+ optional LoRA adapter) with a reasoning recipe, in normal or blind mode.

    python -m vlm evaluate --model zoo:llava-ov-student --data RUN/split/cot_test.json \
        --images_dir hypo_dataset/sample/images --recipe hypo3d-cot --mode blind --out_dir RUN/eval/student_zeroshot/hypo3d-cot/blind

Writes ``predictions.jsonl`` (one line per sample, appended batch by batch: a re-run skips the ids already
there, so a killed evaluation resumes; vlm/generation.py), then ``metrics.json`` (the benchmark's official metrics) and
``eval_meta.json`` (what was evaluated). ``--limit`` for smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import SplitInput
from vlm.data.errors import DataError, flags_below
from vlm.distributed import ranks
from vlm.io import atomic_write_text, dumps_json
from vlm.models.options import ModelOptions


@dataclass
class Config(SplitInput, ModelOptions):
    """Evaluate model x recipe x mode on a benchmark split; resumable per-sample predictions + metrics."""

    model: str = field(metadata={"help": "hub id, local checkpoint folder or zoo:<name>"})
    out_dir: str = field(metadata={"help": "folder for predictions.jsonl, metrics.json, eval_meta.json"})
    adapter: str = field(default="", metadata={"help": "PEFT adapter folder (LoRA) to apply, or a full fine-tune output folder (used instead of --model)"})
    recipe: str = field(default="direct", metadata={"help": "recipe name (vlm/recipes/*.yaml) or YAML path"})
    variant: str = field(default="", metadata={"help": "label for the report (e.g. student_kd)"})
    batch_size: int = field(default=16, metadata={"help": "samples per generate call"})
    max_new_tokens: int = field(default=0, metadata={"help": "token budget of every phase (0: each phase's own); raise it for "
                                                             "models that reason before answering, e.g. after LLaVA-CoT training"})
    arm: str = field(default="", metadata={"help": "study arm label for the report (e.g. 'finetuned + scratchpad')"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    no_sbert: bool = field(default=False, metadata={"help": "skip the SBERT similarity metric"})

    def __post_init__(self) -> None:  # checked when the flags are parsed, before any data or model loads
        DataError.raise_if(self.model_option_problems() + flags_below(self, {"batch_size": 1, "max_new_tokens": 0}))


def main(cfg: Config) -> int:
    from vlm import metrics
    from vlm.generation import run_resumable
    from vlm.models import load_model
    from vlm.recipes import load_recipe

    recipe = load_recipe(cfg.recipe)
    samples = cfg.samples()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_file = out / "predictions.jsonl"
    rk = ranks()  # torchrun --nproc-per-node N: each rank predicts its share, rank 0 merges

    def load():  # only on a rank with samples left to predict
        return load_model(cfg.model, adapter=cfg.adapter or None, device=cfg.device, **cfg.load_kwargs())

    def record(s, answer, phases, seconds):
        return metrics.prediction_record(s, answer, recipe=recipe.name, mode=cfg.mode, phases=phases, seconds=seconds)

    adapter, predictions = run_resumable(samples, pred_file, recipe, load, record, ranks=rk, blind=cfg.blind,
                                         batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                         desc=f"{cfg.variant or cfg.model} {recipe.name} {cfg.mode}", stage="evaluate")
    if not rk.is_main:
        return 0
    wanted = {s.id for s in samples}
    records = [r for r in predictions.values() if r["id"] in wanted]
    result = metrics.compute_metrics(records, use_sbert=not cfg.no_sbert)
    metrics.write_metrics(out / "metrics.json", {"predictions": str(pred_file), **result})
    meta = {"variant": cfg.variant or Path(cfg.model).name, "recipe": recipe.name, "mode": cfg.mode, "model": cfg.model,
            "adapter": cfg.adapter or None, "benchmark": result["benchmark"], "n": result["n"], "data": cfg.data,
            "max_new_tokens": cfg.max_new_tokens or None, **({"arm": cfg.arm} if cfg.arm else {}),
            "processes": rk.world, **({"model_loaded": adapter.describe()} if adapter is not None else {})}
    atomic_write_text(out / "eval_meta.json", dumps_json(meta))
    head = metrics.headline(result["benchmark"])
    print(f"evaluate: {meta['variant']} {recipe.name} {cfg.mode}: {head} {result['overall'][head]:.2f} on {result['n']} -> {out}")
    return 0
