"""Fine-tune a VLM with the HF Trainer: LoRA (peft) by default, three losses from one code path.

    # CE on gold answers (the standard LoRA baseline), or on gold CoT when the recipe has gold phases
    python -m vlm finetune --model zoo:llava-ov-student --data RUN/split/cot_train.json --images_dir IMG --out_dir RUN/train/student_lora
    # sequence-level KD: CE on the teacher's CoT transcripts only (no logit cache)
    python -m vlm finetune --model zoo:llava-ov-student --data RUN/split/cot_train.json --images_dir IMG \
        --loss cot --cot_dir RUN/cot --out_dir RUN/train/student_cot
    # KD: CE on the teacher's CoT + divergence to its cached raw top-k distributions
    python -m vlm finetune --model zoo:llava-ov-student --data RUN/split/cot_train.json --images_dir IMG \
        --loss kd --cot_dir RUN/cot --alpha 0.5 --temperature 1.0 --out_dir RUN/train/student_kd

loss = alpha * CE + (1 - alpha) * T^2 * D(teacher_T || student_T) over assistant tokens only, next-token
shifted, token-mean over the whole accumulated batch (the Trainer's ``num_items_in_batch``), so gradient
accumulation and the number of devices do not change the objective (``DistillTrainer``, vlm/kd/trainer.py; its
knobs are ``KDArguments``, vlm/kd/args.py). Every flag is checked when it is parsed (``Config.__post_init__``):
all bad values in one DataError, exit 2, before any data or model loads. Saves the PEFT adapter
(``out_dir/adapter``, save_pretrained), the Trainer log as ``trainer_log.jsonl``, and resumes from the last
checkpoint in ``out_dir/checkpoints``. Runs unchanged under ``torchrun --nproc-per-node N -m vlm finetune …``
(gloo on CPU, NCCL on GPU) or ``accelerate launch``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vlm.benchmarks import SplitInput
from vlm.data.errors import DataError, flags_below
from vlm.kd.args import KDArguments
from vlm.models.options import ModelOptions
from vlm.io import atomic_write_text, dumps_json, resume_jsonl


# --report_to backend -> the packages that provide it (any one will do)
REPORTERS: dict[str, tuple[str, ...]] = {"none": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


@dataclass
class Config(SplitInput, ModelOptions, KDArguments):
    """LoRA / full fine-tune with the HF Trainer; loss ce (gold), cot (teacher CoT) or kd (CoT + cached logits)."""

    model: str = field(metadata={"help": "hub id, local checkpoint folder or zoo:<name>"})
    out_dir: str = field(metadata={"help": "run folder: adapter/, checkpoints/, trainer_log.jsonl, train_config.json"})
    loss: str = field(default="ce", metadata={
        "help": "ce: gold targets | cot: CE on the teacher's CoT transcripts | kd: cot + divergence to its cached logits",
        "choices": ["ce", "cot", "kd"]})
    recipe: str = field(default="direct", metadata={"help": "ce: recipe whose gold phases are the target (direct = gold answer)"})
    cot_dir: str = field(default="", metadata={"help": "cot, kd: generate_cot output (transcripts.jsonl + logits/)"})
    epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after N optimizer steps (overrides epochs when > 0)"})
    batch_size: int = field(default=8, metadata={"help": "per-device batch size"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (reached after the warmup, then --lr_scheduler_type)"})
    lr_scheduler_type: str = field(default="cosine", metadata={
        "help": "learning-rate schedule after the warmup: a transformers SchedulerType (linear, cosine, constant, …)"})
    warmup_ratio: float = field(default=0.05, metadata={
        "help": "fraction of the training steps that warm the learning rate up from 0, in [0, 1)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0 = no clipping)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    full_finetune: bool = field(default=False, metadata={"help": "train all language-model and projector weights instead of LoRA (vision tower stays frozen)"})
    logging_steps: int = field(default=5, metadata={
        "help": "log (trainer_log.jsonl, --report_to) every N steps, and after the first"})
    report_to: str = field(default="none", metadata={
        "help": f"also log to {' | '.join(REPORTERS)} (the backend's package must be installed)"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})
    save_total_limit: int = field(default=1, metadata={
        "help": "checkpoints kept (the newest N; removed once the adapter is saved)"})
    seed: int = field(default=0, metadata={"help": "seed for init, shuffling and dropout"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward (less memory, ~30%% more time)"})
    fsdp: bool = field(default=False, metadata={
        "help": "shard weights, gradients and optimizer state with FSDP2 through the Trainer (GPUs; launch with torchrun)"})

    def __post_init__(self) -> None:
        """Every bad flag value at once, when the flags are parsed: before data or models load."""
        problems = self.model_option_problems() + self.kd_problems()
        problems += flags_below(self, {"batch_size": 1, "grad_accum": 1, "save_steps": 1, "logging_steps": 1,
                                       "save_total_limit": 1, "weight_decay": 0, "max_grad_norm": 0})
        if not 0.0 <= self.warmup_ratio < 1.0:  # TrainingArguments reads warmup_steps >= 1 as a step count
            problems.append(("flags", "--warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}"))
        schedules = _scheduler_types()
        if self.lr_scheduler_type not in schedules:
            problems.append(("flags", "--lr_scheduler_type",
                             f"unknown schedule '{self.lr_scheduler_type}' (known: {', '.join(schedules)})"))
        packages = REPORTERS.get(self.report_to)
        if packages is None:
            problems.append(("flags", "--report_to", f"unknown backend '{self.report_to}' (known: {' | '.join(REPORTERS)})"))
        elif packages and not any(importlib.util.find_spec(p) for p in packages):
            problems.append(("flags", "--report_to", f"{self.report_to} is not installed (pip install {packages[0]})"))
        if self.fsdp and not torch.cuda.is_available():
            # accelerate shards only on accelerators: on CPU it drops the FSDP plugin and silently trains with DDP
            problems.append(("flags", "--fsdp", "FSDP needs GPUs (on CPU, torchrun without --fsdp trains with DDP)"))
        if self.on_transcripts and not self.cot_dir:
            problems.append(("flags", "--cot_dir", f"--loss {self.loss} needs the generate_cot output folder"))
        DataError.raise_if(problems)

    @property
    def on_transcripts(self) -> bool:
        """cot and kd learn the teacher's transcripts (same rows, same rendering); only kd adds the logit term."""
        return self.loss in ("cot", "kd")


def _scheduler_types() -> list[str]:
    from transformers.trainer_utils import SchedulerType  # ~3 s of imports: paid when flags are checked, not by --help

    return [s.value for s in SchedulerType]


# ---------------------------------------------------------------------------------------------- data
def training_rows(cfg: Config, samples, recipe):
    """Per sample the assistant turns to learn: gold (ce) or the teacher's transcript (cot, kd)."""
    if cfg.on_transcripts:
        transcripts = resume_jsonl(Path(cfg.cot_dir) / "transcripts.jsonl")
        if not transcripts:
            raise DataError.single(Path(cfg.cot_dir) / "transcripts.jsonl", "-", "no teacher transcripts (run generate_cot first)")
        rows = [(s, [p["output"] for p in transcripts[s.id]["phases"]]) for s in samples if s.id in transcripts]
        if not rows:
            raise DataError.single(cfg.data, "-", f"none of its ids are in {cfg.cot_dir}/transcripts.jsonl")
        return rows
    rows, missing = [], []
    for s in samples:
        gold = recipe.gold(s)
        (rows.append((s, gold)) if gold else missing.append(s.id))
    if missing:
        needs = ", ".join(p.gold for p in recipe.phases if p.gold)
        raise DataError.single(cfg.data, f"{len(missing)} samples (first: {missing[0]})",
                               f"recipe '{recipe.name}' trains on gold phases ({needs}) these samples lack; use --recipe direct")
    return rows


class Collator:
    """Adapter training batch (+ the teacher's top-k tensors scattered onto the label positions for kd)."""

    def __init__(self, adapter, recipe, blind: bool, cache=None):
        self.adapter, self.recipe, self.blind, self.cache = adapter, recipe, blind, cache

    def __call__(self, rows):
        from PIL import Image

        convs = [self.recipe.conversation(s, outputs, blind=self.blind) for s, outputs in rows]
        images = [None if self.blind else Image.open(s.image).convert("RGB") for s, _ in rows]
        batch = dict(self.adapter.training_batch(convs, images))
        if self.cache is not None:
            from vlm.kd.losses import align_teacher
            from vlm.kd.trainer import TEACHER_KEYS

            ids = [s.id for s, _ in rows]
            topk = align_teacher(batch["labels"], [self.cache.get(i) for i in ids], ids)  # checks token alignment
            batch.update(zip(TEACHER_KEYS, topk))  # ids, logprobs, log_tail: what DistillTrainer.compute_loss reads
        return batch


# ---------------------------------------------------------------------------------------------- trainer
def training_arguments(cfg: Config, ckpt_dir: Path, layer_classes, bf16: bool):
    """The HF TrainingArguments of a run: the user's flags plus what this stage fixes (resume, devices, FSDP2)."""
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5 reads warmup_steps < 1 as a fraction of the training steps
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], seed=cfg.seed, data_seed=cfg.seed,
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=not on_gpu,
        # torchrun on CPU needs gloo; set only when launched distributed (accelerate then initialises the group)
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        average_tokens_across_devices=True, bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        # FSDP2, one unit per decoder / vision-encoder layer; the head runs inside the forward (target_loss_sums)
        fsdp=cfg.fsdp, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": layer_classes,
                                    "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"} if cfg.fsdp else None,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
    )


# ------------------------------------------------------------------------------------ resume points
def _checkpoints(ckpt_dir: Path) -> list[Path]:
    from transformers.trainer_utils import sort_checkpoints

    return [Path(p) for p in sort_checkpoints(str(ckpt_dir))]  # oldest first, the Trainer's own step order


def _is_complete(checkpoint: Path) -> bool:
    from transformers.trainer import TRAINER_STATE_NAME

    # the Trainer writes trainer_state.json last, after weights, optimizer and RNG state
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
        return True
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint a killed run finished writing (get_last_checkpoint would pick a half-written one)."""
    complete = [p for p in _checkpoints(ckpt_dir) if _is_complete(p)]
    return complete[-1] if complete else None


def incomplete_checkpoints(ckpt_dir: Path) -> list[Path]:
    return [p for p in _checkpoints(ckpt_dir) if not _is_complete(p)]


# ---------------------------------------------------------------------------------------------- main
def main(cfg: Config) -> int:
    from vlm.kd.trainer import DistillTrainer, JsonlLog
    from vlm.models import load_model
    from vlm.recipes import load_recipe

    cot_meta = _cot_meta(cfg) if cfg.on_transcripts else {}
    recipe = load_recipe(cot_meta.get("recipe", cfg.recipe))
    samples = cfg.samples()
    blind = cfg.blind
    rows = training_rows(cfg, samples, recipe)
    cache = None
    if cfg.loss == "kd" and cot_meta.get("kd", True):
        from vlm.kd.cache import LogitCache

        cache = LogitCache(Path(cfg.cot_dir) / "logits")
        rows = [r for r in rows if r[0].id in cache]
    elif cfg.loss == "kd":
        print(f"finetune: WARNING no logit cache ({cot_meta.get('fallback_reason')}); CE on the teacher's CoT only")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "adapter").is_dir():
        print(f"finetune: {out / 'adapter'} exists — nothing to do")
        return 0
    torch.manual_seed(cfg.seed)
    on_gpu = torch.cuda.is_available()
    # A full fine-tune keeps float32 master weights (bf16 autocast on a GPU); LoRA freezes bf16 base weights.
    weights = "float32" if cfg.full_finetune and cfg.dtype == "auto" else cfg.dtype
    adapter = load_model(cfg.model, device="auto", **{**cfg.load_kwargs(), "dtype": weights})
    if cache is not None:
        _check_tokenizer(cache, adapter, cfg)
    model = adapter.model
    trainable = {}
    if cfg.full_finetune:
        trainable = adapter.set_full_finetune()  # the LM (+ untied head) and the projector; the vision encoder stays frozen
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=adapter.lora_targets()))
    model.train()
    bf16 = on_gpu and torch.cuda.is_bf16_supported() and cfg.dtype in ("auto", "bfloat16")
    fallback = cot_meta.get("fallback_reason") if cfg.loss == "kd" else None  # cot never wanted the cache
    atomic_write_text(out / "train_config.json", dumps_json({**asdict(cfg), "recipe_resolved": recipe.name, "examples": len(rows),
                                                           "kd_active": cache is not None, "kd_fallback_reason": fallback,
                                                           "model_loaded": adapter.describe(), "bf16_autocast": bf16,
                                                           "full_finetune_trainable": trainable or None}))
    ckpt_dir = out / "checkpoints"
    args = training_arguments(cfg, ckpt_dir, adapter.layer_classes() if cfg.fsdp else None, bf16)
    trainer = DistillTrainer(model=model, args=args, train_dataset=rows, data_collator=Collator(adapter, recipe, blind, cache),
                             kd_args=cfg, kd_active=cache is not None, callbacks=[JsonlLog(out / "trainer_log.jsonl")])
    resume = last_complete_checkpoint(ckpt_dir)
    if trainer.is_world_process_zero():
        for partial in incomplete_checkpoints(ckpt_dir):
            print(f"finetune: removing {partial.name}, cut short before its trainer_state.json was written")
            shutil.rmtree(partial, ignore_errors=True)
    if resume:
        print(f"finetune: resuming from the last checkpoint in {ckpt_dir} ({resume.name})")
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    tmp = out / "adapter.tmp"
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    if cfg.fsdp:  # every rank takes part: the sharded weights are gathered into one full state dict on rank 0
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        if not cfg.fsdp:
            model.save_pretrained(tmp)
        if cfg.full_finetune:
            adapter.processor.save_pretrained(tmp)
        tmp.rename(out / "adapter")
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # the adapter is the result; checkpoints were only resume points
        print(f"finetune: {cfg.loss} on {len(rows)} examples -> {out / 'adapter'}")
    return 0


def _cot_meta(cfg: Config) -> dict:
    meta = Path(cfg.cot_dir) / "cot_meta.json"
    if not meta.is_file():
        raise DataError.single(meta, "-", "not found: --cot_dir must be a generate_cot output folder")
    return json.loads(meta.read_text())


def _check_tokenizer(cache, adapter, cfg: Config) -> None:
    from vlm.models.tokenizer import tokenizer_fingerprint

    want = cache.meta.get("tokenizer")
    have = tokenizer_fingerprint(adapter.tokenizer)
    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    if cache.vocab_size != vocab:
        raise DataError.single(Path(cfg.cot_dir) / "logits" / "index.json", "vocab_size",
                               f"{cache.vocab_size} in the cache but {vocab} in {cfg.model}'s output layer")
    if want and want != have:
        raise DataError.single(Path(cfg.cot_dir) / "logits" / "index.json", "meta.tokenizer",
                               f"the cache was built with a different tokenizer than {cfg.model}'s; KD needs the same vocabulary "
                               "(re-run generate_cot with --student, or train this student with --loss ce)")
