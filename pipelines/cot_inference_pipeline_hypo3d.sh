#!/usr/bin/env bash
# CoT distillation study on Hypo3D.
#
#   bash pipelines/cot_inference_pipeline_hypo3d.sh [TEACHER STUDENT JSON]
#
# With no arguments: the embedded default, zoo teacher/student (LLaVA-OneVision architecture, built on
# first use) on the toy-world sample in the real Hypo3D format. On a GPU, e.g.:
#   bash pipelines/cot_inference_pipeline_hypo3d.sh llava-hf/llava-onevision-qwen2-7b-ov-hf \
#        llava-hf/llava-onevision-qwen2-0.5b-ov-hf hypo_dataset/contextvqa_full.json
#
# Stages: validate, split (teacher LoRA vs CoT; then CoT train/val/test), answer-prior floor, teacher
# zero-shot, teacher LoRA, teacher CoT + raw top-k logit cache, student zero-shot, student LoRA, student KD
# LoRA, every variant evaluated direct and with the CoT recipe, normal and blind, report.
# Everything lands in runs/pipeline_run_*; RUN_DIR=<that dir> resumes (finished stages are skipped).
#
# Environment (default):
#   IMAGES_DIR (JSON dir/images)  AXIS_DEFINITIONS (JSON dir/axis_definition.xlsx)  RECIPE (hypo3d-cot)
#   SEED (42)  LIMIT (0 = all)  TEACHER_EPOCHS (3)  EPOCHS (3)  LR (1e-3; ~2e-4 for 7B models)  BATCH_SIZE (8)
#   ALPHA (0.5)  TEMPERATURE (1.0)  DIVERGENCE (forward_kl)  TOP_K (64)  KD_FALLBACK (0; 1 = CE on the CoT if
#   the tokenizers differ)  RUN_DIR (resume)  PYTHON (.venv/bin/python if present)
#   Scale (unset = each stage's default; README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE
#   ATTN_IMPLEMENTATION  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (0)
#   FSDP (0; 1 = FSDP2, GPUs)  LOGIT_CHUNK_ROWS
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage "$0"; exit 0; fi
PIPELINE_ARGS="$*"

TEACHER="${1:-zoo:llava-ov-teacher}"
STUDENT="${2:-zoo:llava-ov-student}"
DATA="${3:-hypo_dataset/sample/hypo3d.json}"
BENCHMARK=hypo3d
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-$(dirname "$DATA")/axis_definition.xlsx}"
study_defaults
require_file "$DATA" "benchmark JSON"
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"

start_run "$TEACHER" "$STUDENT" "$BENCHMARK" "${STUDY_VARS[@]}"
source "$(dirname "$0")/lib/study.sh"
