#!/usr/bin/env bash
# Smoke run of the training + evaluation stages on given splits, driven only by environment variables.
#
#   TRAIN_DATA_PATH=… VAL_DATA_PATH=… TEST_DATA_PATH=… bash pipelines/randomize_test_cot_inference_pipeline.sh
#
# No split stage: the teacher LoRA, the teacher's CoT and both student trainings use TRAIN_DATA_PATH; every
# variant is evaluated on TEST_DATA_PATH (VAL_DATA_PATH is checked and recorded). Variables (default):
#   TRAIN_DATA_PATH   (hypo_dataset/sample/splits/train.json)
#   VAL_DATA_PATH     (hypo_dataset/sample/splits/val.json)
#   TEST_DATA_PATH    (hypo_dataset/sample/splits/test.json)
#   TEACHER (zoo:llava-ov-teacher)  STUDENT (zoo:llava-ov-student)  IMAGES_DIR (hypo_dataset/sample/images)
#   AXIS_DEFINITIONS (hypo_dataset/sample/axis_definition.xlsx)  LIMIT (8)  RECIPE (hypo3d-cot)  ALPHA (0.5)
#   TEMPERATURE (1.0)  DIVERGENCE (forward_kl)  EPOCHS (1)  TEACHER_EPOCHS (1)  LR (1e-3)  BATCH_SIZE (8)
#   TOP_K (64)  SEED (42)  KD_FALLBACK (0)  RUN_DIR (resume)  PYTHON
#   Scale (unset = each stage's default; README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE
#   ATTN_IMPLEMENTATION  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (0)
#   FSDP (0; 1 = FSDP2, GPUs)  LOGIT_CHUNK_ROWS
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage "$0"; exit 0; fi

TRAIN_DATA_PATH="${TRAIN_DATA_PATH:-hypo_dataset/sample/splits/train.json}"
VAL_DATA_PATH="${VAL_DATA_PATH:-hypo_dataset/sample/splits/val.json}"
TEST_DATA_PATH="${TEST_DATA_PATH:-hypo_dataset/sample/splits/test.json}"
TEACHER="${TEACHER:-zoo:llava-ov-teacher}"
STUDENT="${STUDENT:-zoo:llava-ov-student}"
IMAGES_DIR="${IMAGES_DIR:-hypo_dataset/sample/images}"
AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-hypo_dataset/sample/axis_definition.xlsx}"
LIMIT="${LIMIT:-8}" EPOCHS="${EPOCHS:-1}" TEACHER_EPOCHS="${TEACHER_EPOCHS:-1}"
for f in TRAIN_DATA_PATH VAL_DATA_PATH TEST_DATA_PATH IMAGES_DIR; do require_file "${!f}" "$f"; done
DATA="$TRAIN_DATA_PATH"
BENCHMARK="$(benchmark_of "$DATA")"
study_defaults
for f in TRAIN_DATA_PATH VAL_DATA_PATH TEST_DATA_PATH; do
  "${VLM[@]}" validate "${!f}" --images_dir "$IMAGES_DIR" --benchmark "$BENCHMARK" >/dev/null || die "$f is not a valid $BENCHMARK file (see above)"
done

start_run "$TEACHER" "$STUDENT" "smoke-$BENCHMARK" TRAIN_DATA_PATH VAL_DATA_PATH TEST_DATA_PATH "${STUDY_VARS[@]}"
source "$(dirname "$0")/lib/study.sh"
