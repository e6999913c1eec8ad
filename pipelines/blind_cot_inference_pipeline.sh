#!/usr/bin/env bash
# The vision-dependency study: every variant (answer prior, zero-shot, LoRA, KD; direct and CoT) evaluated
# with the image and blind (no image, no image tokens) on the same ids. The report's headline is the blind
# gap (normal - blind) per variant with a paired-bootstrap CI: a variant whose gap is ~0 answers from priors.
#
#   bash pipelines/blind_cot_inference_pipeline.sh [TEACHER STUDENT JSON]
#
# No arguments: the embedded default (zoo teacher/student, toy-world Hypo3D sample). The JSON may be Hypo3D or
# ScanQA (detected from the file).
#
# Environment (default): IMAGES_DIR (JSON dir/images) AXIS_DEFINITIONS (JSON dir/axis_definition.xlsx)
#   RECIPE (hypo3d-cot) SEED (42) LIMIT (0) TEACHER_EPOCHS (3) EPOCHS (3) LR (1e-3) BATCH_SIZE (8) ALPHA (0.5)
#   TEMPERATURE (1.0) DIVERGENCE (forward_kl) TOP_K (64) KD_FALLBACK (0) RUN_DIR (resume) PYTHON
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
require_file "$DATA" "benchmark JSON"
BENCHMARK="$(benchmark_of "$DATA")"
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-$(dirname "$DATA")/axis_definition.xlsx}"
study_defaults
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"

start_run "$TEACHER" "$STUDENT" "blind-$BENCHMARK" "${STUDY_VARS[@]}"
source "$(dirname "$0")/lib/study.sh"
