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
# `python -m vlm assemble_cobra` on LLaVA-CoT-100k (images prepared with `python -m vlm prepare llava-cot`),
# evaluated on COCO Captions:
#   FULL_FINETUNE=1 LR=2e-5 EPOCHS=1 IMAGES_DIR=/data/LLaVA-CoT-100k \
#   EVAL_DATA=/data/coco/annotations/captions_val2017.json \
#     bash pipelines/structured_reasoning_pipeline.sh checkpoints/cobra-2.8b /data/LLaVA-CoT-100k/train.jsonl
#
# Environment (default):
#   IMAGES_DIR (DATA dir/images; A-OKVQA: DATA dir/<split>2017)  TRAIN_RECIPE (the benchmark's train_recipe in
#   vlm/benchmarks, e.g. rationale for A-OKVQA)  SPLIT (0.7 0.1 0.2: train / val / test shares of the images)
#   EVAL_DATA (the split's test part)  EVAL_IMAGES_DIR (EVAL_DATA's default images dir): every arm is evaluated
#   on EVAL_DATA (validated, its benchmark detected) instead; DATA is still split and its train part fine-tuned
#   on. The answer-prior floor needs one answer space: skipped when EVAL_DATA's benchmark differs from DATA's.
#   MAX_NEW_TOKENS (256: every arm's phase budget, so a fine-tuned model can reason before it concludes)
#   EPOCHS (20)  LR (2e-3)  FULL_FINETUNE (1: language model + projector; 0: LoRA)  BATCH_SIZE
#   These defaults suit the tiny zoo models (on the sample LoRA reached loss 3.9 in 10 epochs, a full fine-tune
#   1.2); for real models e.g. FULL_FINETUNE=0 LR=2e-4 EPOCHS=1 (or FULL_FINETUNE=1 LR=2e-5)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
if help_requested "$@"; then usage "$SCRIPT"; exit 0; fi
PIPELINE_ARGS="$*"

MODEL="${1:-zoo:llava-ov-teacher}"
DATA="${2:-llava_cot_dataset/sample/train.jsonl}"
require_file "$DATA" "data file"
BENCHMARK="$(benchmark_of "$DATA")"
IMAGES_DIR="${IMAGES_DIR:-$(images_of "$DATA" "$BENCHMARK")}"
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"
if [[ -n "${EVAL_DATA:-}" ]]; then
  require_file "$EVAL_DATA" "EVAL_DATA"
  EVAL_BENCHMARK="$(benchmark_of "$EVAL_DATA")"
  EVAL_IMAGES_DIR="${EVAL_IMAGES_DIR:-$(images_of "$EVAL_DATA" "$EVAL_BENCHMARK")}"
  require_file "$EVAL_IMAGES_DIR" "EVAL_DATA's images dir (set EVAL_IMAGES_DIR)"
fi
# The study's own settings; the stage flags it does not set keep their stage's default.
TRAIN_RECIPE="${TRAIN_RECIPE:-$(train_recipe_of "$BENCHMARK")}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-256}" EPOCHS="${EPOCHS:-20}" LR="${LR:-2e-3}" FULL_FINETUNE="${FULL_FINETUNE:-1}"
SPLIT="${SPLIT:-0.7 0.1 0.2}"

start_run "$MODEL" structured "$BENCHMARK${EVAL_DATA:+-eval-$EVAL_BENCHMARK}" MODEL DATA BENCHMARK IMAGES_DIR \
  EVAL_DATA EVAL_BENCHMARK EVAL_IMAGES_DIR TRAIN_RECIPE MAX_NEW_TOKENS EPOCHS LR BATCH_SIZE FULL_FINETUNE SPLIT SEED \
  LIMIT "${SCALE_VARS[@]}"
# The answer prior predicts from the training answers: comparable only when the arms face the same benchmark.
if [[ "${EVAL_BENCHMARK:-$BENCHMARK}" == "$BENCHMARK" ]]; then
  WITH_PRIOR=1; record_study --variants prior baseline finetuned --blind_only prior
else
  WITH_PRIOR=0; record_study --variants baseline finetuned
  log "answer-prior floor skipped: it needs the training answers' space ($BENCHMARK); the arms face $EVAL_BENCHMARK"
fi

DATA_ARGS=(--images_dir "$IMAGES_DIR" --benchmark "$BENCHMARK")
EVAL_ARGS=("${DATA_ARGS[@]}")
if [[ -n "${EVAL_DATA:-}" ]]; then EVAL_ARGS=(--images_dir "$EVAL_IMAGES_DIR" --benchmark "$EVAL_BENCHMARK"); fi
env_flags TRAIN_ARGS EPOCHS:epochs LR:lr BATCH_SIZE:batch_size SEED:seed FULL_FINETUNE=1:full_finetune
EXT="${DATA##*.}"; [[ "$EXT" == jsonl ]] || EXT=json
log "model family: $(family "$MODEL"), benchmark: $BENCHMARK, training recipe: $TRAIN_RECIPE," \
    "arms evaluated on: ${EVAL_DATA:-the test split} (${EVAL_BENCHMARK:-$BENCHMARK})"

# 1. Validate, then an image-disjoint split: train (fine-tuning) / val / test (every arm, unless EVAL_DATA).
run_stage validate -- "${VLM[@]}" validate "$DATA" "${DATA_ARGS[@]}"
if [[ -n "${EVAL_DATA:-}" ]]; then run_stage validate_eval -- "${VLM[@]}" validate "$EVAL_DATA" "${EVAL_ARGS[@]}"; fi
# shellcheck disable=SC2086  # SPLIT is three numbers
run_stage split -- "${VLM[@]}" split "$DATA" --out_dir "$RUN_DIR/split" --ratios $SPLIT --names train val test --seed "$SEED"
TRAIN="$RUN_DIR/split/train.$EXT"; TEST="${EVAL_DATA:-$RUN_DIR/split/test.$EXT}"

# 2. The floor: answer priors of the training split (no image, no model).
if [[ "$WITH_PRIOR" == 1 ]]; then
  run_stage eval_prior -- "${VLM[@]}" prior --train "$TRAIN" --test "$TEST" --benchmark "$BENCHMARK" \
    --out "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl"
  run_stage metrics_prior -- "${VLM[@]}" metrics "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl" --no_sbert
fi

# 3. Fine-tune on the structured CoT: CE on every gold assistant turn of TRAIN_RECIPE (the four-tag answer,
#    the rationale + answer, or the Hypo3D phases).
run_stage finetune -- "${VLM_RUN[@]}" finetune --model "$MODEL" --data "$TRAIN" "${DATA_ARGS[@]}" --recipe "$TRAIN_RECIPE" \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" "${TRAIN_ARGS[@]}" "${LIMIT_ARGS[@]}" --out_dir "$RUN_DIR/train/finetuned"

# arm LABEL VARIANT ADAPTER RECIPE: one arm, normal and blind, on the test images, same token budget for all
arm() {
  local label="$1" variant="$2" adapter="$3" recipe="$4" mode
  for mode in normal blind; do
    run_stage "eval_${variant}_${recipe}_${mode}" -- "${VLM_RUN[@]}" evaluate --model "$MODEL" --adapter "$adapter" \
      --data "$TEST" "${EVAL_ARGS[@]}" "${MODEL_ARGS[@]}" --recipe "$recipe" --mode "$mode" --variant "$variant" --arm "$label" \
      --max_new_tokens "$MAX_NEW_TOKENS" "${LIMIT_ARGS[@]}" --out_dir "$RUN_DIR/eval/$variant/$recipe/$mode"
  done
}

# 4. The arms. The evaluation benchmark picks its own form of each generic recipe (COCO Captions: caption, caption-scratchpad).
FINETUNED="$RUN_DIR/train/finetuned/adapter"
{ read -r DIRECT; read -r SCRATCHPAD; read -r SELF_CORRECT; } < <(recipes_for "${EVAL_BENCHMARK:-$BENCHMARK}" direct scratchpad self-correct)
[[ -n "${SELF_CORRECT:-}" ]] || die "cannot read the recipes of ${EVAL_BENCHMARK:-$BENCHMARK}"
arm "baseline direct"            baseline  ""           "$DIRECT"
arm "baseline + scratchpad"      baseline  ""           "$SCRATCHPAD"
arm "fine-tuned direct"          finetuned "$FINETUNED" "$DIRECT"
arm "fine-tuned + scratchpad"    finetuned "$FINETUNED" "$SCRATCHPAD"
arm "baseline + self-correct"    baseline  ""           "$SELF_CORRECT"
arm "fine-tuned + $TRAIN_RECIPE" finetuned "$FINETUNED" "$TRAIN_RECIPE"

# 5. One report: the arms table, CoT vs direct with the reasoning rate, normal vs blind, loss curve.
run_stage report -- "${VLM[@]}" report "$RUN_DIR"
log "report: $RUN_DIR/report/report.md"
