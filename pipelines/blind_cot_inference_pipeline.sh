#!/usr/bin/env bash
# The vision-dependency study: every variant (answer prior, zero-shot, LoRA, KD; direct and CoT) evaluated
# with the image and blind (no image, no image tokens) on the same ids. The report's headline is the blind
# gap (normal - blind) per variant with a paired-bootstrap CI: a variant whose gap is ~0 answers from priors.
#
#   bash pipelines/blind_cot_inference_pipeline.sh [TEACHER STUDENT JSON]
#
# No arguments: the embedded default (zoo teacher/student, toy-world Hypo3D sample). The JSON may be Hypo3D or
# ScanQA (detected from the file). The run directory is named blind-<benchmark>.
#
set -euo pipefail
BENCHMARK=auto RUN_TAG=blind
source "$(dirname "$0")/lib/study.sh"
