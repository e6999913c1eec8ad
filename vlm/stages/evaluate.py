"""Evaluate a model (+ optional LoRA adapter) with a reasoning recipe, in normal or blind mode.

    python -m vlm evaluate --model zoo:llava-ov-student --data RUN/split/cot_test.json \
        --images_dir hypo_dataset/sample/images --recipe hypo3d-cot --mode blind --out_dir RUN/eval/student_zeroshot/hypo3d-cot/blind

Writes ``predictions.jsonl`` (one line per sample, appended batch by batch: a re-run skips the ids already
there, so a killed evaluation resumes), then ``metrics.json`` (the benchmark's official metrics) and
``eval_meta.json`` (what was evaluated). ``--limit`` for smoke runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from vlm.data import SplitInput
from vlm.models.options import ModelOptions
from vlm.distributed import ShardedJsonl, ranks
from vlm.io import atomic_write_text, dumps_json, resume_jsonl


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


def main(cfg: Config) -> int:
    from tqdm import tqdm

    from vlm import metrics
    from vlm.models import load_model
    from vlm.recipes import load_recipe, run

    cfg.check_model_options()
    recipe = load_recipe(cfg.recipe)
    blind = cfg.blind
    samples = cfg.samples()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_file = out / "predictions.jsonl"
    rk = ranks()  # torchrun --nproc-per-node N: each rank predicts its share, rank 0 merges
    preds = ShardedJsonl(pred_file, rk)
    done = preds.done()
    rk.barrier()  # every rank has read the same records before any rank writes
    todo = [s for s in samples if s.id not in done]
    if done and rk.is_main:
        print(f"evaluate: resuming {pred_file}: {len(done)} done, {len(todo)} to go")
    mine = rk.share(todo)
    if mine:
        from PIL import Image

        adapter = load_model(cfg.model, adapter=cfg.adapter or None, device=cfg.device, **cfg.load_kwargs())
        loaded = adapter.describe()
        bar = tqdm(total=len(mine), desc=f"{cfg.variant or cfg.model} {recipe.name} {cfg.mode}{rk.tag()}", unit="q")
        for start in range(0, len(mine), cfg.batch_size):
            batch = mine[start : start + cfg.batch_size]
            images = [None if blind else Image.open(s.image).convert("RGB") for s in batch]
            t0 = time.perf_counter()
            outputs = run(recipe, adapter, batch, images, blind=blind, max_new_tokens=cfg.max_new_tokens)
            seconds = (time.perf_counter() - t0) / len(batch)
            preds.append([
                metrics.prediction_record(s, recipe.answer(o), recipe=recipe.name, mode=cfg.mode,
                                          phases=[{"name": p.name, "output": t} for p, t in zip(recipe.active(s), o)],
                                          seconds=round(seconds, 4))
                for s, o in zip(batch, outputs)
            ])
            bar.update(len(batch))
        bar.close()
    rk.barrier()
    if not rk.is_main:
        return 0
    preds.merge([s.id for s in samples])
    wanted = {s.id for s in samples}
    records = [r for r in resume_jsonl(pred_file).values() if r["id"] in wanted]
    result = metrics.compute_metrics(records, use_sbert=not cfg.no_sbert)
    metrics.write_metrics(out / "metrics.json", {"predictions": str(pred_file), **result})
    meta = {"variant": cfg.variant or Path(cfg.model).name, "recipe": recipe.name, "mode": cfg.mode, "model": cfg.model,
            "adapter": cfg.adapter or None, "benchmark": result["benchmark"], "n": result["n"], "data": cfg.data,
            "max_new_tokens": cfg.max_new_tokens or None, **({"arm": cfg.arm} if cfg.arm else {}),
            "processes": rk.world, **({"model_loaded": loaded} if mine and rk.is_main else {})}
    atomic_write_text(out / "eval_meta.json", dumps_json(meta))
    head = metrics.HEADLINE[result["benchmark"]]
    print(f"evaluate: {meta['variant']} {recipe.name} {cfg.mode}: {head} {result['overall'][head]:.2f} on {result['n']} -> {out}")
    return 0
