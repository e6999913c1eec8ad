#!/usr/bin/env bash
# Structured-reasoning study: does fine-tuning on structured CoT (LLaVA-CoT tags, A-OKVQA rationales) make a
# VLM reason, and does reasoning help? Arms, every one evaluated normal and blind on the same held-out images:
#   baseline direct | baseline + scratchpad (two-pass) | fine-tuned direct | fine-tuned + scratchpad |
#   baseline + self-correct | fine-tuned + its training recipe
# The report's "Arms" table gives each arm's task metric with CIs, blind gap, the "has reasoning" rate and, for
# caption-like answers, BLEU-1..4 / ROUGE-L / CIDEr / SBERT.
#
#   bash pipelines/structured_reasoning_pipeline.sh [MODEL DATA]
#
# No arguments: the embedded default, zoo:llava-ov-teacher on the toy-world LLaVA-CoT sample
# (llava_cot_dataset/sample/train.jsonl, ~2 minutes on 2 CPU cores). DATA may be LLaVA-CoT JSONL, A-OKVQA JSON
# (trains on rationales), Hypo3D or ScanQA (detected from the file). On a GPU, e.g. a Cobra assembled with
# `python -m vlm assemble_cobra` on LLaVA-CoT-100k (images prepared with `python -m vlm prepare llava-cot`):
#   FULL_FINETUNE=1 LR=2e-5 EPOCHS=1 IMAGES_DIR=/data/LLaVA-CoT-100k \
#     bash pipelines/structured_reasoning_pipeline.sh checkpoints/cobra-2.8b /data/LLaVA-CoT-100k/train.jsonl
#
# Environment (default):
#   IMAGES_DIR (DATA dir/images; A-OKVQA: DATA dir/<split>2017)  TRAIN_RECIPE (llava-cot for LLaVA-CoT data,
#   rationale for A-OKVQA, hypo3d-cot for Hypo3D, llava-cot otherwise)  MAX_NEW_TOKENS (256: every arm's phase
#   budget, so a fine-tuned model can reason before it concludes)  EPOCHS (20)  LR (2e-3)  BATCH_SIZE (8)
#   FULL_FINETUNE (1: language model + projector; 0: LoRA). The defaults suit the tiny zoo models (on the sample
#   LoRA reached loss 3.9 in 10 epochs, a full fine-tune 1.2); for real models e.g. FULL_FINETUNE=0 LR=2e-4
#   EPOCHS=1 (or FULL_FINETUNE=1 LR=2e-5)
#   SPLIT (0.7 0.1 0.2: train / val / test shares of the images)  SEED (42)  LIMIT (0 = all)
#   RUN_DIR (resume)  PYTHON (.venv/bin/python if present)
#   Scale (unset = each stage's default; README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE
#   ATTN_IMPLEMENTATION  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (0)
#   FSDP (0; 1 = FSDP2, GPUs)  LOGIT_CHUNK_ROWS
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage "$0"; exit 0; fi
PIPELINE_ARGS="$*"

MODEL="${1:-zoo:llava-ov-teacher}"
DATA="${2:-llava_cot_dataset/sample/train.jsonl}"
require_file "$DATA" "data file"
BENCHMARK="$(benchmark_of "$DATA")"
IMAGES_DIR="${IMAGES_DIR:-$(images_of "$DATA" "$BENCHMARK")}"
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"
case "$BENCHMARK" in aokvqa) default_recipe=rationale ;; hypo3d) default_recipe=hypo3d-cot ;; *) default_recipe=llava-cot ;; esac
TRAIN_RECIPE="${TRAIN_RECIPE:-$default_recipe}" MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-256}" EPOCHS="${EPOCHS:-20}"
LR="${LR:-2e-3}" BATCH_SIZE="${BATCH_SIZE:-8}" FULL_FINETUNE="${FULL_FINETUNE:-1}" SPLIT="${SPLIT:-0.7 0.1 0.2}"
SEED="${SEED:-42}" LIMIT="${LIMIT:-0}"

start_run "$MODEL" "structured" "$BENCHMARK" MODEL DATA BENCHMARK IMAGES_DIR TRAIN_RECIPE MAX_NEW_TOKENS EPOCHS LR \
  BATCH_SIZE FULL_FINETUNE SPLIT SEED LIMIT "${SCALE_VARS[@]}"
DATA_ARGS=(--images_dir "$IMAGES_DIR" --benchmark "$BENCHMARK")
LIMIT_ARGS=(); [[ "$LIMIT" != 0 ]] && LIMIT_ARGS=(--limit "$LIMIT")
EXT="${DATA##*.}"; [[ "$EXT" == jsonl ]] || EXT=json
log "model family: $(family "$MODEL"), benchmark: $BENCHMARK, training recipe: $TRAIN_RECIPE"

# 1. Validate, then an image-disjoint split: train (fine-tuning) / val / test (every arm).
run_stage validate -- "${VLM[@]}" validate "$DATA" "${DATA_ARGS[@]}"
# shellcheck disable=SC2086  # SPLIT is three numbers
run_stage split -- "${VLM[@]}" split "$DATA" --out_dir "$RUN_DIR/split" --ratios $SPLIT --names train val test --seed "$SEED"
TRAIN="$RUN_DIR/split/train.$EXT"; TEST="$RUN_DIR/split/test.$EXT"

# 2. The floor: answer priors of the training split (no image, no model).
run_stage eval_prior -- "${VLM[@]}" prior --train "$TRAIN" --test "$TEST" --benchmark "$BENCHMARK" \
  --out "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl"
run_stage metrics_prior -- "${VLM[@]}" metrics "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl" --no_sbert

# 3. Fine-tune on the structured CoT: CE on every gold assistant turn of TRAIN_RECIPE (the four-tag answer,
#    the rationale + answer, or the Hypo3D phases).
run_stage finetune -- "${VLM_RUN[@]}" finetune --model "$MODEL" --data "$TRAIN" "${DATA_ARGS[@]}" --recipe "$TRAIN_RECIPE" \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" \
  --epochs "$EPOCHS" --lr "$LR" --batch_size "$BATCH_SIZE" --seed "$SEED" "${LIMIT_ARGS[@]}" \
  $([[ "$FULL_FINETUNE" == 1 ]] && echo --full_finetune) --out_dir "$RUN_DIR/train/finetuned"

# arm LABEL VARIANT ADAPTER RECIPE: one arm, normal and blind, on the test images, same token budget for all
arm() {
  local label="$1" variant="$2" adapter="$3" recipe="$4" mode
  for mode in normal blind; do
    run_stage "eval_${variant}_${recipe}_${mode}" -- "${VLM_RUN[@]}" evaluate --model "$MODEL" --adapter "$adapter" \
      --data "$TEST" "${DATA_ARGS[@]}" "${MODEL_ARGS[@]}" --recipe "$recipe" --mode "$mode" --variant "$variant" --arm "$label" \
      --max_new_tokens "$MAX_NEW_TOKENS" "${LIMIT_ARGS[@]}" --out_dir "$RUN_DIR/eval/$variant/$recipe/$mode"
  done
}

# 4. The arms.
FINETUNED="$RUN_DIR/train/finetuned/adapter"
arm "baseline direct"            baseline  ""           direct
arm "baseline + scratchpad"      baseline  ""           scratchpad
arm "fine-tuned direct"          finetuned "$FINETUNED" direct
arm "fine-tuned + scratchpad"    finetuned "$FINETUNED" scratchpad
arm "baseline + self-correct"    baseline  ""           self-correct
arm "fine-tuned + $TRAIN_RECIPE" finetuned "$FINETUNED" "$TRAIN_RECIPE"

# 5. One report: the arms table, CoT vs direct with the reasoning rate, normal vs blind, loss curve.
run_stage report -- "${VLM[@]}" report "$RUN_DIR"
log "report: $RUN_DIR/report/report.md"
