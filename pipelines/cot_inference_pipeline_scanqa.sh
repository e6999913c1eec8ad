#!/usr/bin/env bash
# CoT distillation study on ScanQA (official flat or scene-grouped JSON; EM@1, BLEU-1..4, ROUGE-L, CIDEr).
#
#   bash pipelines/cot_inference_pipeline_scanqa.sh [TEACHER STUDENT JSON]
#
# No arguments: zoo teacher/student on the toy-world sample in the real ScanQA format. On a GPU, e.g.:
#   bash pipelines/cot_inference_pipeline_scanqa.sh llava-hf/llava-onevision-qwen2-7b-ov-hf \
#        llava-hf/llava-onevision-qwen2-0.5b-ov-hf scanqa_dataset/contextual_scanqa_full.json
# Same stages as the Hypo3D study (the CoT recipe's context-change phase is skipped: ScanQA has none).
#
# Environment (default): IMAGES_DIR (JSON dir/images) RECIPE (hypo3d-cot) SEED (42) LIMIT (0) TEACHER_EPOCHS (3)
#   EPOCHS (3) LR (1e-3) BATCH_SIZE (8) ALPHA (0.5) TEMPERATURE (1.0) DIVERGENCE (forward_kl) TOP_K (64)
#   KD_FALLBACK (0) RUN_DIR (resume) PYTHON
#   Scale (unset = each stage's default; README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE
#   ATTN_IMPLEMENTATION  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (0)
#   FSDP (0; 1 = FSDP2, GPUs)  LOGIT_CHUNK_ROWS
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage "$0"; exit 0; fi
PIPELINE_ARGS="$*"

TEACHER="${1:-zoo:llava-ov-teacher}"
STUDENT="${2:-zoo:llava-ov-student}"
DATA="${3:-scanqa_dataset/sample/scanqa.json}"
BENCHMARK=scanqa
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
study_defaults
require_file "$DATA" "benchmark JSON"
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"

start_run "$TEACHER" "$STUDENT" "$BENCHMARK" "${STUDY_VARS[@]}"
source "$(dirname "$0")/lib/study.sh"
