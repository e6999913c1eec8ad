#!/usr/bin/env bash
# Modular ScanQA study: each model's family is detected from its config.json (LLaVA-OneVision, Qwen2-VL /
# Qwen2.5-VL, Cobra-Mamba), and teacher and student may be different families. KD needs the same tokenizer:
# when they differ the student trains with CE on the teacher's CoT and the report says so (KD_FALLBACK=1).
#
#   bash pipelines/scanqa_modular_cot_inference_pipeline.sh [TEACHER STUDENT JSON]
#
# No arguments: a LLaVA-OneVision zoo teacher and a Qwen2-VL zoo student (the zoo shares one tokenizer across
# families, so cross-family KD runs for real) on the toy-world ScanQA sample. On a GPU, e.g.:
#   bash pipelines/scanqa_modular_cot_inference_pipeline.sh Qwen/Qwen2-VL-7B-Instruct Qwen/Qwen2-VL-2B-Instruct \
#        scanqa_dataset/contextual_scanqa_full.json
#
# Environment (default): IMAGES_DIR (JSON dir/images) RECIPE (hypo3d-cot) SEED (42) LIMIT (0) TEACHER_EPOCHS (3)
#   EPOCHS (3) LR (1e-3) BATCH_SIZE (8) ALPHA (0.5) TEMPERATURE (1.0) DIVERGENCE (forward_kl) TOP_K (64)
#   KD_FALLBACK (1) RUN_DIR (resume) PYTHON
#   Scale (unset = each stage's default; README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE
#   ATTN_IMPLEMENTATION  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (0)
#   FSDP (0; 1 = FSDP2, GPUs)  LOGIT_CHUNK_ROWS
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage "$0"; exit 0; fi
PIPELINE_ARGS="$*"

TEACHER="${1:-zoo:llava-ov-teacher}"
STUDENT="${2:-zoo:qwen2-vl-student}"
DATA="${3:-scanqa_dataset/sample/scanqa.json}"
BENCHMARK=scanqa
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
KD_FALLBACK="${KD_FALLBACK:-1}"
study_defaults
require_file "$DATA" "benchmark JSON"
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"

start_run "$TEACHER" "$STUDENT" "$BENCHMARK" "${STUDY_VARS[@]}"
source "$(dirname "$0")/lib/study.sh"
