"""Assemble a Cobra checkpoint from a pretrained SigLIP vision tower and a pretrained Mamba language model.

    python -m vlm assemble_cobra --vision google/siglip-so400m-patch14-384 --language state-spaces/mamba-2.8b-hf \
        --out_dir checkpoints/cobra-2.8b

Cobra (Zhao et al., 2024) is built this way: vision encoder -> new 2-layer MLP projector -> Mamba LM. The output
folder is an ordinary checkpoint (``config.json`` model_type "cobra", safetensors, processor) that every stage
loads like a hub id. The tokenizer is the language model's plus the ChatML turn tokens and ``<image>`` (embeddings
resized, new rows drawn around the mean embedding); the projector is random, so train it:
``python -m vlm finetune --full_finetune`` trains the language model AND the projector (the vision tower stays
frozen), the two Cobra training stages in one (projector alignment, then fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Config:
    """Build a Cobra checkpoint (SigLIP + new MLP projector + Mamba LM) from two pretrained models."""

    vision: str = field(metadata={"help": "SigLIP checkpoint (hub id or folder), e.g. google/siglip-so400m-patch14-384"})
    language: str = field(metadata={"help": "Mamba causal LM in transformers format, e.g. state-spaces/mamba-2.8b-hf"})
    out_dir: str = field(metadata={"help": "folder to write the Cobra checkpoint to (must not exist)"})
    vision_feature_layer: int = field(default=-2, metadata={"help": "vision layer fed to the projector (-2 as in Cobra/Prismatic; -1: last)"})
    seed: int = field(default=0, metadata={"help": "seed of the projector initialisation"})


def main(cfg: Config) -> int:
    import torch

    from vlm.data.errors import DataError
    from vlm.models.cobra import assemble

    out = Path(cfg.out_dir)
    if out.exists():
        raise DataError.single(out, "-", "already exists: choose a new --out_dir")
    torch.manual_seed(cfg.seed)
    model, processor = assemble(cfg.vision, cfg.language, vision_feature_layer=cfg.vision_feature_layer)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(out)
    n = sum(p.numel() for p in model.parameters())
    v = model.config.vision_config
    print(f"assemble_cobra: {cfg.vision} + {cfg.language} -> {out} ({n / 1e6:.1f} M parameters, "
          f"{(v.image_size // v.patch_size) ** 2} image tokens per image)")
    return 0
