#!/usr/bin/env bash
# CoT distillation study on Hypo3D:  bash pipelines/cot_inference_pipeline_hypo3d.sh [TEACHER STUDENT JSON]
#
# With no arguments it runs the embedded default: zoo teacher/student on the toy-world sample.
# Every artifact goes to a unique runs/pipeline_run_* directory; RUN_DIR=<dir> resumes one.
#
# Stages so far: split (teacher-LoRA vs CoT pool, then CoT train/val/test) and the answer-prior
# baseline scored with the official metrics. Model stages (zero-shot, LoRA, CoT + logit cache, KD,
# blind evaluation, report) land with the model layer.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
source "$(dirname "$0")/lib/common.sh"

TEACHER="${1:-zoo:llava-ov-teacher}"
STUDENT="${2:-zoo:llava-ov-student}"
DATA="${3:-hypo_dataset/sample/hypo3d.json}"
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-$(dirname "$DATA")/axis_definition.xlsx}"
SEED="${SEED:-42}"

make_run_dir "$TEACHER" "$STUDENT" hypo3d
log "teacher=$TEACHER student=$STUDENT data=$DATA images=$IMAGES_DIR axes=$AXIS_DEFINITIONS seed=$SEED run=$RUN_DIR"

# 0. the data is checked (images and axis file included) before anything else runs
run_stage validate -- "${VLM[@]}" validate "$DATA" --images_dir "$IMAGES_DIR" --axis_definitions "$AXIS_DEFINITIONS"

# 1. scene-disjoint splits: teacher-LoRA train/val vs the CoT pool, then CoT train/val/test
run_stage split_teacher -- "$PYTHON" hypo_dataset/dataset_split.py 0.4 0.1 0.5 "$DATA" 1 "$RUN_DIR" --seed "$SEED"
run_stage split_cot -- "$PYTHON" hypo_dataset/dataset_split.py 0.6 0.1 0.3 "$RUN_DIR/split/cot_pool.json" 2 "$RUN_DIR" --seed "$SEED"

# 2. the floor every model must clear: answer priors learnt from the CoT-train split, no image
mkdir -p "$RUN_DIR/eval/prior"
run_stage eval_prior -- "${VLM[@]}" prior --train "$RUN_DIR/split/cot_train.json" --test "$RUN_DIR/split/cot_test.json" \
  --out "$RUN_DIR/eval/prior/predictions.jsonl"
run_stage metrics_prior -- "${VLM[@]}" metrics "$RUN_DIR/eval/prior/predictions.jsonl"

log "done: $RUN_DIR (metrics: $RUN_DIR/eval/prior/metrics.json)"
