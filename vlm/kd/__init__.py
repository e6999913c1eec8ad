"""Knowledge distillation: the teacher logit cache (cache.py), the distillation losses (losses.py), the KD
knobs checked at parse time (args.py: ``KDArguments``) and the Trainer that combines them (trainer.py:
``DistillTrainer``, ``JsonlLog``).

``vlm.kd.trainer`` is imported by name (``from vlm.kd.trainer import DistillTrainer``), not from here: it
imports ``transformers.Trainer``, seconds that ``import vlm.kd`` (generate_cot, ``--help``) should not pay.
"""

from vlm.kd.args import KDArguments
from vlm.kd.cache import FORMAT, CacheWriter, LogitCache, TopK, bytes_per_token, target_rows, topk_rows
from vlm.kd.losses import (
    DIVERGENCES,
    align_teacher,
    ce_sum,
    check_alignment,
    combined_loss,
    count_targets,
    full_vocab_kd,
    kd_loss,
    teacher_topk,
    topk_divergence,
)

__all__ = [
    "DIVERGENCES", "FORMAT", "CacheWriter", "KDArguments", "LogitCache", "TopK", "align_teacher", "bytes_per_token", "ce_sum",
    "check_alignment", "combined_loss", "count_targets", "full_vocab_kd", "kd_loss", "target_rows", "teacher_topk",
    "topk_divergence", "topk_rows",
]
