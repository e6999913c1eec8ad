#!/usr/bin/env bash
# CoT distillation study on Hypo3D.
#
#   bash pipelines/cot_inference_pipeline_hypo3d.sh [TEACHER STUDENT JSON]
#
# With no arguments: the embedded default, zoo teacher/student (LLaVA-OneVision architecture, built on
# first use) on the toy-world sample in the real Hypo3D format. On a GPU, e.g.:
#   LR=2e-4 bash pipelines/cot_inference_pipeline_hypo3d.sh llava-hf/llava-onevision-qwen2-7b-ov-hf \
#        llava-hf/llava-onevision-qwen2-0.5b-ov-hf hypo_dataset/contextvqa_full.json
#
set -euo pipefail
BENCHMARK=hypo3d
source "$(dirname "$0")/lib/study.sh"
