"""Knowledge distillation: the teacher logit cache (cache.py) and the distillation losses (losses.py)."""

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
    "DIVERGENCES", "FORMAT", "CacheWriter", "LogitCache", "TopK", "align_teacher", "bytes_per_token", "ce_sum",
    "check_alignment", "combined_loss", "count_targets", "full_vocab_kd", "kd_loss", "target_rows", "teacher_topk",
    "topk_divergence", "topk_rows",
]
