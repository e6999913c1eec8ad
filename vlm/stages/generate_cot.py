"""Teacher chain-of-thought + its RAW top-k logit cache, the input of KD fine-tuning.

    python -m vlm generate_cot --teacher zoo:llava-ov-teacher --adapter RUN/train/teacher_lora/adapter \
        --data RUN/split/cot_train.json --images_dir IMG --recipe hypo3d-cot --student zoo:llava-ov-student --out_dir RUN/cot

1. The teacher runs the recipe on every sample -> ``transcripts.jsonl`` (appended per batch; a re-run resumes).
2. Each transcript is re-scored teacher-forced, in batches, through the same chat rendering the student
   trains on; per assistant token the top-k of log_softmax(RAW logits) (never generate()'s processed scores)
   + the log tail mass go to ``logits/`` (safetensors shards + index, see vlm/kd/cache.py), one row per
   student target, in order — so the student's targets and the teacher's distributions align 1:1.
3. ``cot_meta.json``: teacher, recipe, k, tokenizer fingerprint, whether KD is possible.

KD needs the student to share the teacher's tokenizer. With ``--student`` the stage checks that first and
refuses with a clear error when they differ, unless ``--fallback_to_ce``: then no cache is written and the
student trains with CE on the teacher's transcripts (the report says so).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlm.data import SplitInput
from vlm.data.errors import DataError
from vlm.io import append_jsonl, atomic_write_text, dumps_json, resume_jsonl


@dataclass
class Config(SplitInput):
    """Teacher CoT transcripts (resumable) + raw top-k logit cache for KD."""

    teacher: str = field(metadata={"help": "teacher model id (hub id, folder or zoo:<name>)"})
    out_dir: str = field(metadata={"help": "output folder: transcripts.jsonl, logits/, cot_meta.json"})
    adapter: str = field(default="", metadata={"help": "teacher PEFT adapter (e.g. the teacher LoRA)"})
    recipe: str = field(default="hypo3d-cot", metadata={"help": "reasoning recipe (vlm/recipes/*.yaml) or YAML path"})
    student: str = field(default="", metadata={"help": "student model id: checks that its tokenizer matches before caching"})
    fallback_to_ce: bool = field(default=False, metadata={"help": "if the tokenizers differ, skip the cache (student trains CE on the transcripts)"})
    top_k: int = field(default=64, metadata={"help": "cached logits per token"})
    batch_size: int = field(default=16, metadata={"help": "samples per generate / re-scoring batch"})
    dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})


def main(cfg: Config) -> int:
    from PIL import Image
    from tqdm import tqdm

    from vlm.models import load_model, resolve_path
    from vlm.models.tokenizer import tokenizer_fingerprint
    from vlm.recipes import load_recipe, run

    recipe = load_recipe(cfg.recipe)
    blind = cfg.blind
    samples = cfg.samples()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_model(cfg.teacher, adapter=cfg.adapter or None, dtype=cfg.dtype, device=cfg.device)
    fingerprint = tokenizer_fingerprint(teacher.tokenizer)
    kd_possible, reason = True, ""
    if cfg.student:
        from transformers import AutoTokenizer

        if tokenizer_fingerprint(AutoTokenizer.from_pretrained(resolve_path(cfg.student))) != fingerprint:
            reason = f"tokenizers of {cfg.teacher} and {cfg.student} differ: their logits do not align token by token"
            if not cfg.fallback_to_ce:
                raise DataError.single(cfg.student, "tokenizer", reason + " (pass --fallback_to_ce to train the student with CE on the CoT)")
            kd_possible = False
            print(f"generate_cot: WARNING {reason}; no logit cache, the student will train with CE on the transcripts")

    def image(s):
        return None if blind else Image.open(s.image).convert("RGB")

    # 1. transcripts
    trans_file = out / "transcripts.jsonl"
    done = resume_jsonl(trans_file)
    todo = [s for s in samples if s.id not in done]
    bar = tqdm(total=len(todo), desc=f"CoT {recipe.name}", unit="q")
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        t0 = time.perf_counter()
        outputs = run(recipe, teacher, batch, [image(s) for s in batch], blind=blind)
        seconds = (time.perf_counter() - t0) / len(batch)
        append_jsonl(trans_file, [{"id": s.id, "recipe": recipe.name, "answer": recipe.answer(o), "references": s.answers,
                                   "phases": [{"name": p.name, "output": t} for p, t in zip(recipe.active(s), o)],
                                   "seconds": round(seconds, 4)} for s, o in zip(batch, outputs)])
        bar.update(len(batch))
    bar.close()
    transcripts = resume_jsonl(trans_file)

    # 2. raw top-k logits, teacher-forced on exactly the text the student will learn
    logits_dir = out / "logits"
    if kd_possible and not (logits_dir / "index.json").is_file():
        from vlm.kd.cache import CacheWriter

        tmp = out / "logits.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # a cache is written whole or not at all
        vocab = teacher.model.get_output_embeddings().weight.shape[0]
        meta = {"teacher": cfg.teacher, "adapter": cfg.adapter or None, "recipe": recipe.name, "tokenizer": fingerprint, "mode": cfg.mode}
        with CacheWriter(tmp, k=cfg.top_k, vocab_size=vocab, meta=meta) as writer, torch.inference_mode():
            bar = tqdm(total=len(samples), desc="re-score", unit="q")
            for start in range(0, len(samples), cfg.batch_size):
                batch = samples[start : start + cfg.batch_size]
                convs = [recipe.conversation(s, [p["output"] for p in transcripts[s.id]["phases"]], blind=blind) for s in batch]
                inputs = teacher.training_batch(convs, [image(s) for s in batch]).to(teacher.device)
                labels = inputs.pop("labels")
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(teacher.model.dtype)
                logits = teacher.model(**inputs).logits
                for row, s in enumerate(batch):
                    targets = (labels[row, 1:] != -100).nonzero().squeeze(-1)  # label t is predicted at t - 1
                    writer.add(s.id, logits[row, targets].float().cpu(), labels[row, targets + 1].cpu())
                bar.update(len(batch))
            bar.close()
        tmp.rename(logits_dir)
    meta = {"teacher": cfg.teacher, "adapter": cfg.adapter or None, "recipe": recipe.name, "top_k": cfg.top_k,
            "tokenizer": fingerprint, "kd": kd_possible, "fallback_reason": reason or None, "n": len(transcripts),
            "data": cfg.data, "mode": cfg.mode}
    atomic_write_text(out / "cot_meta.json", dumps_json(meta))
    right = sum(t["answer"].strip().lower() == t["references"][0].strip().lower() for t in transcripts.values())
    print(f"generate_cot: {len(transcripts)} transcripts ({recipe.name}; teacher answer exact {right}/{len(transcripts)})"
          + (f", top-{cfg.top_k} logits -> {logits_dir}" if kd_possible else ", no cache (CE fallback)"))
    return 0
