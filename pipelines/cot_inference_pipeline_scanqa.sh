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
set -euo pipefail
BENCHMARK=scanqa DATA="${DATA:-scanqa_dataset/sample/scanqa.json}"
source "$(dirname "$0")/lib/study.sh"
