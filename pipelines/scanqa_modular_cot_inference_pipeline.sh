#!/usr/bin/env bash
# Modular ScanQA study: each model's family is detected from its config.json (LLaVA-OneVision, Qwen2-VL /
# Qwen2.5-VL, Cobra-Mamba), and teacher and student may be different families. KD needs the same tokenizer:
# when they differ the student trains with CE on the teacher's CoT and the report says so (KD_FALLBACK: 1 here).
#
#   bash pipelines/scanqa_modular_cot_inference_pipeline.sh [TEACHER STUDENT JSON]
#
# No arguments: a LLaVA-OneVision zoo teacher and a Qwen2-VL zoo student (the zoo shares one tokenizer across
# families, so cross-family KD runs for real) on the toy-world ScanQA sample. On a GPU, e.g.:
#   bash pipelines/scanqa_modular_cot_inference_pipeline.sh Qwen/Qwen2-VL-7B-Instruct Qwen/Qwen2-VL-2B-Instruct \
#        scanqa_dataset/contextual_scanqa_full.json
# Otherwise the ScanQA study (pipelines/cot_inference_pipeline_scanqa.sh).
#
set -euo pipefail
STUDENT="${STUDENT:-zoo:qwen2-vl-student}" KD_FALLBACK="${KD_FALLBACK:-1}"
source "$(dirname "$0")/cot_inference_pipeline_scanqa.sh"
