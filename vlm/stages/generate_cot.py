"""Teacher chain-of-thought + its RAW top-k logit cache, the input of KD fine-tuning.

    python -m vlm generate_cot --teacher zoo:llava-ov-teacher --adapter RUN/train/teacher_lora/adapter \
        --data RUN/split/cot_train.json --images_dir IMG --recipe hypo3d-cot --student zoo:llava-ov-student --out_dir RUN/cot

1. The teacher runs the recipe on every sample -> ``transcripts.jsonl`` (appended per batch; a re-run resumes:
   the loop evaluate uses too, vlm/generation.py).
2. Each transcript is re-scored teacher-forced (``VLMAdapter.score``), in batches, through the same chat rendering
   the student trains on; per assistant token the top-k of log_softmax(RAW logits) (never generate()'s processed scores)
   + the log tail mass go to ``logits/`` (safetensors shards + index, see vlm/kd/cache.py), one row per
   student target, in order — so the student's targets and the teacher's distributions align 1:1.
3. ``cot_meta.json``: teacher, recipe, k, tokenizer fingerprint, whether KD is possible, mode, transcripts_from.

``--transcripts FILE`` skips step 1: FILE (another run's ``transcripts.jsonl``, e.g. the normal-mode teacher's) must hold
every sample of ``--data``, written with ``--recipe``; its records are copied to ``out_dir/transcripts.jsonl`` and
re-scored as in step 2. With ``--mode blind`` that gives the teacher's distributions on the same text without the
image: the same student targets, so a normal-mode student trains on it with ``--loss kd`` — the negative control of a
study (a pipeline that silently dropped images would show no difference between the two KD students).

    python -m vlm generate_cot --teacher zoo:llava-ov-teacher --data RUN/split/cot_train.json --recipe hypo3d-cot \
        --transcripts RUN/cot/transcripts.jsonl --mode blind --out_dir RUN/cot_blind

KD needs the student to share the teacher's tokenizer. With ``--student`` the stage checks that first and
refuses with a clear error when they differ, unless ``--fallback_to_ce``: then no cache is written and the
student trains with CE on the teacher's transcripts (the report says so).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vlm.benchmarks import SplitInput
from vlm.data.errors import DataError, Problems, flags_below
from vlm.distributed import ranks
from vlm.generation import sample_image
from vlm.io import atomic_write_text, dumps_json
from vlm.kd.cache import INDEX, CacheWriter, LogitCache
from vlm.kd.losses import DEFAULT_CHUNK_ROWS
from vlm.models.base import output_head
from vlm.models.options import ModelOptions


@dataclass
class Config(SplitInput, ModelOptions):
    """Teacher CoT transcripts (resumable) + raw top-k logit cache for KD."""

    teacher: str = field(metadata={"help": "teacher model id (hub id, folder or zoo:<name>)"})
    out_dir: str = field(metadata={"help": "output folder: transcripts.jsonl, logits/, cot_meta.json"})
    adapter: str = field(default="", metadata={"help": "teacher PEFT adapter (e.g. the teacher LoRA)"})
    recipe: str = field(default="hypo3d-cot", metadata={"help": "reasoning recipe (vlm/recipes/*.yaml) or YAML path"})
    student: str = field(default="", metadata={"help": "student model id: checks that its tokenizer matches before caching"})
    fallback_to_ce: bool = field(default=False, metadata={"help": "if the tokenizers differ, skip the cache (student trains CE on the transcripts)"})
    top_k: int = field(default=64, metadata={"help": "cached logits per token"})
    batch_size: int = field(default=16, metadata={"help": "samples per generate / re-scoring batch"})
    logit_chunk_rows: int = field(default=DEFAULT_CHUNK_ROWS, metadata={
        "help": "target positions per LM-head chunk when re-scoring (bounds the float32 vocabulary rows held at once)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    transcripts: str = field(default="", metadata={
        "help": "re-score this transcripts.jsonl (every --data id, same --recipe) instead of generating; "
                "with --mode blind: the teacher's distributions on that text without the image"})

    def __post_init__(self) -> None:  # checked when the flags are parsed, before any data or model loads
        problems = self.model_option_problems() + flags_below(self, {"top_k": 1, "batch_size": 1, "logit_chunk_rows": 1})
        if self.transcripts and not Path(self.transcripts).is_file():
            problems.append(("flags", "--transcripts", f"not found: {self.transcripts}"))
        DataError.raise_if(problems)


def main(cfg: Config) -> int:
    from vlm.generation import run_resumable
    from vlm.models import load_model, resolve_path
    from vlm.models.tokenizer import tokenizer_fingerprint
    from vlm.recipes import load_recipe

    recipe = load_recipe(cfg.recipe)
    samples = cfg.samples()
    given = given_transcripts(Path(cfg.transcripts), samples, recipe) if cfg.transcripts else None  # before models load
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_model(cfg.teacher, adapter=cfg.adapter or None, device=cfg.device, **cfg.load_kwargs())
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

    # 1. transcripts (each rank its share of what is left; rank 0 merges them in sample order)
    def record(s, answer, phases, seconds):
        return {"id": s.id, "recipe": recipe.name, "answer": answer, "references": s.answers, "phases": phases,
                "seconds": seconds}

    rk = ranks()
    if given is not None:  # every rank read the source; rank 0 writes the copy the cache is built from
        transcripts = given
        if rk.is_main:
            lines = [json.dumps(transcripts[s.id], ensure_ascii=False) + "\n" for s in samples]  # append_jsonl's form
            atomic_write_text(out / "transcripts.jsonl", "".join(lines))
    else:
        _, transcripts = run_resumable(samples, out / "transcripts.jsonl", recipe, lambda: teacher, record, ranks=rk,
                                       blind=cfg.blind, batch_size=cfg.batch_size, desc=f"CoT {recipe.name}",
                                       stage="generate_cot")

    # 2. raw top-k logits, teacher-forced on exactly the text the student will learn
    logits_dir = out / "logits"
    if kd_possible and not (logits_dir / "index.json").is_file():
        vocab = output_head(teacher.model).weight.shape[0]
        meta = {"teacher": cfg.teacher, "adapter": cfg.adapter or None, "recipe": recipe.name, "tokenizer": fingerprint, "mode": cfg.mode}
        share = rk.share(samples)
        part = out / ("logits" if rk.world == 1 else f"logits.rank{rk.rank}")
        if not _complete_cache(part, [s.id for s in share]):
            tmp = part.with_name(part.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)  # a cache is written whole or not at all
            shutil.rmtree(part, ignore_errors=True)
            with CacheWriter(tmp, k=cfg.top_k, vocab_size=vocab, meta=meta) as writer:
                rescore(teacher, recipe, share, transcripts, writer, cfg, desc=f"re-score{rk.tag()}")
            tmp.rename(part)
        rk.barrier()
        if rk.world > 1 and rk.is_main:
            _merge_caches(out, rk.world, samples, k=cfg.top_k, vocab=vocab, meta=meta)
        rk.barrier()
    if not rk.is_main:
        return 0
    meta = {"teacher": cfg.teacher, "adapter": cfg.adapter or None, "recipe": recipe.name, "top_k": cfg.top_k,
            "tokenizer": fingerprint, "kd": kd_possible, "fallback_reason": reason or None, "n": len(transcripts),
            "data": cfg.data, "mode": cfg.mode, "processes": rk.world, "model_loaded": teacher.describe(),
            "logit_chunk_rows": cfg.logit_chunk_rows, "transcripts_from": cfg.transcripts or None}
    atomic_write_text(out / "cot_meta.json", dumps_json(meta))
    right = sum(t["answer"].strip().lower() == t["references"][0].strip().lower() for t in transcripts.values())
    source = f"from {cfg.transcripts}, re-scored {cfg.mode}" if cfg.transcripts else recipe.name
    print(f"generate_cot: {len(transcripts)} transcripts ({source}; teacher answer exact {right}/{len(transcripts)})"
          + (f", top-{cfg.top_k} logits -> {logits_dir}" if kd_possible else ", no cache (CE fallback)"))
    return 0


def given_transcripts(path: Path, samples, recipe) -> dict[str, dict]:
    """``--transcripts``: the record of every sample, checked against the recipe (one DataError line per problem).
    Read, not resumed: a torn last line is a problem here, and the file is never truncated."""
    problems = Problems(path)
    records: dict[str, dict] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rec = json.loads(line) if line.strip() else None
        except ValueError as e:
            problems.add(f"line {i}", f"not JSON ({e})")
            continue
        if rec is not None:
            if isinstance(rec, dict) and "id" in rec:
                records[str(rec["id"])] = rec
            else:
                problems.add(f"line {i}", "expected a transcript record with an 'id'")
    for s in samples:
        rec = records.get(s.id)
        want = [p.name for p in recipe.active(s)]
        if rec is None:
            problems.add(f"id '{s.id}'", "no transcript for this sample of --data")
        elif rec.get("recipe") != recipe.name:
            problems.add(f"id '{s.id}'", f"recipe '{rec.get('recipe')}', not --recipe '{recipe.name}'")
        elif [p.get("name") if isinstance(p, dict) and isinstance(p.get("output"), str) else None
              for p in rec.get("phases") or []] != want:
            problems.add(f"id '{s.id}'", f"phases must be the recipe's {want}, each with an 'output' string")
    problems.raise_if_any()
    return {s.id: records[s.id] for s in samples}


def rescore(teacher, recipe, samples, transcripts, writer, cfg: Config, desc: str = "re-score") -> None:
    """Each sample's transcript, rendered as the student will train on it, scored teacher-forced in batches
    (``VLMAdapter.score``: per target token the top-k of the RAW logits) into ``writer``, in sample order."""
    from tqdm import tqdm

    bar = tqdm(total=len(samples), desc=desc, unit="q")
    for start in range(0, len(samples), cfg.batch_size):
        batch = samples[start : start + cfg.batch_size]
        convs = [recipe.conversation(s, [p["output"] for p in transcripts[s.id]["phases"]], blind=cfg.blind) for s in batch]
        scored = teacher.score(convs, [sample_image(s, cfg.blind) for s in batch], writer.k, cfg.logit_chunk_rows)
        for s, rows in zip(batch, scored):
            writer.add_topk(s.id, rows)
        bar.update(len(batch))
    bar.close()


def _complete_cache(path: Path, ids: list[str]) -> bool:
    """A finished cache (index written) holding exactly these samples: a rank's part to keep on a re-run."""
    try:
        return (path / INDEX).is_file() and LogitCache(path).ids() == ids
    except DataError:
        return False


def _merge_caches(out: Path, world: int, samples, k: int, vocab: int, meta: dict) -> None:
    """Rank 0: the ranks' caches -> ``out/logits`` in sample order, byte for byte what one process writes."""
    parts = [LogitCache(out / f"logits.rank{r}") for r in range(world)]
    tmp = out / "logits.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with CacheWriter(tmp, k=k, vocab_size=vocab, meta=meta) as writer:
        for s in samples:
            writer.add_topk(s.id, next(p for p in parts if s.id in p).get(s.id))
    tmp.rename(out / "logits")
    for part in out.glob("logits.rank*"):
        shutil.rmtree(part, ignore_errors=True)
