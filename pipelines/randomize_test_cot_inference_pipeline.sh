#!/usr/bin/env bash
# Smoke run of the training + evaluation stages on given splits, driven only by environment variables.
#
#   TRAIN_DATA_PATH=… VAL_DATA_PATH=… TEST_DATA_PATH=… bash pipelines/randomize_test_cot_inference_pipeline.sh
#
# No split stage: the teacher LoRA, the teacher's CoT and every student training use TRAIN_DATA_PATH; every
# variant is evaluated on TEST_DATA_PATH (VAL_DATA_PATH is checked and recorded). Defaults here: the Hypo3D
# sample's splits/{train,val,test}.json with its images/ and axis definitions, LIMIT 8, EPOCHS 1,
# TEACHER_EPOCHS 1. The run directory is named smoke-<benchmark>.
#
set -euo pipefail
sample=hypo_dataset/sample
TRAIN_DATA_PATH="${TRAIN_DATA_PATH:-$sample/splits/train.json}"
VAL_DATA_PATH="${VAL_DATA_PATH:-$sample/splits/val.json}" TEST_DATA_PATH="${TEST_DATA_PATH:-$sample/splits/test.json}"
IMAGES_DIR="${IMAGES_DIR:-$sample/images}" AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-$sample/axis_definition.xlsx}"
LIMIT="${LIMIT:-8}" EPOCHS="${EPOCHS:-1}" TEACHER_EPOCHS="${TEACHER_EPOCHS:-1}"
BENCHMARK=auto RUN_TAG=smoke
source "$(dirname "$0")/lib/study.sh"
