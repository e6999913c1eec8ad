"""How a model stage loads its model: the memory and image-budget controls shared by finetune, generate_cot and
evaluate (one set of flags, one default each, checked before any model loads).

The image budget must be the same in every stage of a study — the student trains, the teacher re-scores and
every variant is evaluated on the same image tokens — so the pipelines pass one setting to all of them.
Settings that do not apply to a family are ignored and ``applied`` says so (recorded in each stage's output).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from vlm.data.errors import flags_below

ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class ModelOptions:
    """Model loading flags of every model stage (stage Configs inherit them)."""

    dtype: str = field(default="auto", metadata={
        "help": "weights: auto = bfloat16 on a GPU that has it (LoRA; full fine-tunes keep float32 weights and train "
                "under bf16 autocast), float32 on CPU; losses and cached logits are computed in float32 either way",
        "choices": list(DTYPES)})
    attn_implementation: str = field(default="auto", metadata={
        "help": "attention kernels: auto = flash_attention_2 on CUDA when flash-attn is installed, else sdpa",
        "choices": list(ATTENTION)})
    max_image_tiles: int = field(default=0, metadata={
        "help": "LLaVA-OneVision image budget: at most N anyres tiles per image (grids of <= N 384-px tiles, anyres_max_N); "
                "0 = the checkpoint's own (36 grids, anyres_max_9: ~4.7k tokens for 1024x768)"})
    min_pixels: int = field(default=0, metadata={"help": "Qwen2-VL image budget: lower bound on resized pixels (0 = the checkpoint's)"})
    max_pixels: int = field(default=0, metadata={
        "help": "Qwen2-VL image budget: upper bound on resized pixels; image tokens = pixels / 784 (0 = the checkpoint's, 28*28*1280 on hub checkpoints)"})

    def model_option_problems(self, where: str = "flags") -> list[tuple[str, str, str]]:
        """Every bad value of these options, one (where, --flag, what) each; stages check them when parsed."""
        problems = []
        if self.attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            problems.append((where, "--attn_implementation", "flash_attention_2 needs the flash-attn package "
                                                              "(pip install -r requirements-gpu.txt, CUDA only)"))
        problems += flags_below(self, {"max_image_tiles": 0, "min_pixels": 0, "max_pixels": 0}, where)
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            problems.append((where, "--min_pixels", f"{self.min_pixels} is above --max_pixels {self.max_pixels}"))
        return problems

    def image_budget(self) -> dict:
        return {"max_image_tiles": self.max_image_tiles, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels}

    def load_kwargs(self) -> dict:
        """Keyword arguments of ``load_model`` (besides model, adapter, device)."""
        return {"dtype": self.dtype, "attn_implementation": self.attn_implementation, "image_budget": self.image_budget()}


def resolve_attention(requested: str, device_type: str) -> str | None:
    """``auto`` -> flash_attention_2 where it can run, else None (transformers' default: sdpa where the
    architecture has it, eager otherwise)."""
    if requested != "auto":
        return requested
    if device_type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None
