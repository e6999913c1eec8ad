# The CoT distillation study, top to bottom; the pipelines/*.sh presets set their defaults, then source it.
# Stages: validate, split (teacher LoRA vs CoT pool, then CoT train / val / test), answer-prior floor, teacher
# zero-shot, teacher LoRA, teacher CoT + raw top-k logit cache, student zero-shot, student LoRA, student KD LoRA;
# every variant evaluated direct and with the CoT recipe, normal and blind, on the same CoT-test ids; report.
# Everything lands in $RUNS_DIR/pipeline_run_*; RUN_DIR=<that dir> resumes (finished stages are skipped).
#
# Environment (default):
#   TEACHER STUDENT DATA (the arguments, when given; else zoo:llava-ov-teacher, zoo:llava-ov-student, the
#   preset's sample)  IMAGES_DIR (DATA dir/images)  AXIS_DEFINITIONS (DATA dir/axis_definition.xlsx, if present)
#   RECIPE (hypo3d-cot: the CoT recipe of the teacher's transcripts and of the CoT evaluations)
#   TEACHER_EPOCHS  EPOCHS (the students')  LR (e.g. ~2e-4 for 7B models)  BATCH_SIZE   python -m vlm finetune
#   ALPHA  TEMPERATURE  DIVERGENCE                                                 python -m vlm finetune (KD)
#   TOP_K  KD_FALLBACK (1 = the student trains CE on the CoT if the tokenizers differ)   python -m vlm generate_cot
#   TRAIN_DATA_PATH TEST_DATA_PATH VAL_DATA_PATH: given splits instead of DATA (no split stage; the teacher LoRA,
#   the teacher's CoT and both students train on TRAIN_DATA_PATH; VAL_DATA_PATH is checked and recorded)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if help_requested "$@"; then usage "$SCRIPT" "$REPO_ROOT/pipelines/lib/study.sh"; exit 0; fi
PIPELINE_ARGS="$*"

# The study's own settings (not stage flags); every stage flag left unset keeps its stage's default.
TEACHER="${1:-${TEACHER:-zoo:llava-ov-teacher}}"
STUDENT="${2:-${STUDENT:-zoo:llava-ov-student}}"
RECIPE="${RECIPE:-hypo3d-cot}"
SPLIT_VARS=()  # the given splits, recorded when used
if [[ -n "${TRAIN_DATA_PATH:-}" ]]; then
  SPLIT_VARS=(TRAIN_DATA_PATH VAL_DATA_PATH TEST_DATA_PATH)
  for var in "${SPLIT_VARS[@]}"; do require_file "${!var:-}" "$var"; done
  DATA="$TRAIN_DATA_PATH"
else
  DATA="${3:-${DATA:-hypo_dataset/sample/hypo3d.json}}"
  require_file "$DATA" "benchmark JSON"
fi
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
axis_file="$(dirname "$DATA")/axis_definition.xlsx"  # Hypo3D's orientation definitions, where the data has them
if [[ -z "${AXIS_DEFINITIONS:-}" && -e "$axis_file" ]]; then AXIS_DEFINITIONS="$axis_file"; fi
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"
if [[ "$BENCHMARK" == auto ]]; then BENCHMARK="$(benchmark_of "$DATA")"; fi
for var in "${SPLIT_VARS[@]}"; do
  "${VLM[@]}" validate "${!var}" --images_dir "$IMAGES_DIR" --benchmark "$BENCHMARK" >/dev/null \
    || die "$var is not a valid $BENCHMARK file (see above)"
done

start_run "$TEACHER" "$STUDENT" "${RUN_TAG:+$RUN_TAG-}$BENCHMARK" "${SPLIT_VARS[@]}" TEACHER STUDENT DATA BENCHMARK \
  IMAGES_DIR AXIS_DEFINITIONS RECIPE SEED LIMIT TEACHER_EPOCHS EPOCHS LR BATCH_SIZE ALPHA TEMPERATURE DIVERGENCE TOP_K \
  KD_FALLBACK "${SCALE_VARS[@]}"
# The variants in report order; every evaluate call below names one of them. The answer prior has no image.
VARIANTS=(prior teacher_zeroshot teacher_lora student_zeroshot student_lora student_kd)
record_study --variants "${VARIANTS[@]}" --blind_only prior

AXIS_ARGS=(); if [[ -e "${AXIS_DEFINITIONS:-}" ]]; then AXIS_ARGS=(--axis_definitions "$AXIS_DEFINITIONS"); fi
DATA_ARGS=(--images_dir "$IMAGES_DIR" "${AXIS_ARGS[@]}" --benchmark "$BENCHMARK")
env_flags TRAIN_ARGS LR:lr BATCH_SIZE:batch_size SEED:seed; TRAIN_ARGS+=("${LIMIT_ARGS[@]}")
env_flags TEACHER_EPOCHS_ARGS TEACHER_EPOCHS:epochs
env_flags EPOCHS_ARGS EPOCHS:epochs
env_flags KD_ARGS ALPHA:alpha TEMPERATURE:temperature DIVERGENCE:divergence
env_flags COT_ARGS TOP_K:top_k KD_FALLBACK=1:fallback_to_ce
log "teacher family: $(family "$TEACHER"), student family: $(family "$STUDENT")"

# 1. Seeded, scene-disjoint splits: teacher-LoRA train/val vs the CoT pool (40/10/50), then the pool into CoT
#    train / val / test (60/10/30).
if [[ -n "${TRAIN_DATA_PATH:-}" ]]; then
  TEACHER_TRAIN="$TRAIN_DATA_PATH"; COT_TRAIN="$TRAIN_DATA_PATH"; COT_TEST="$TEST_DATA_PATH"
else
  run_stage validate -- "${VLM[@]}" validate "$DATA" "${DATA_ARGS[@]}"
  run_stage split_teacher -- "${VLM[@]}" split "$DATA" --out_dir "$RUN_DIR/split" --ratios 0.4 0.1 0.5 \
    --names teacher_train teacher_val cot_pool --seed "$SEED" --manifest_name mode1_manifest.json
  run_stage split_cot -- "${VLM[@]}" split "$RUN_DIR/split/cot_pool.json" --out_dir "$RUN_DIR/split" \
    --ratios 0.6 0.1 0.3 --names cot_train cot_val cot_test --seed "$SEED" --manifest_name mode2_manifest.json
  TEACHER_TRAIN="$RUN_DIR/split/teacher_train.json"; COT_TRAIN="$RUN_DIR/split/cot_train.json"; COT_TEST="$RUN_DIR/split/cot_test.json"
fi

# evaluate VARIANT MODEL ADAPTER: the variant with the direct prompt and with the CoT recipe, normal and blind,
# always on the same CoT-test ids
evaluate() {
  local variant="$1" model="$2" adapter="$3" recipe mode
  [[ " ${VARIANTS[*]} " == *" $variant "* ]] || die "evaluate $variant: not in VARIANTS (${VARIANTS[*]})"
  for recipe in direct "$RECIPE"; do
    for mode in normal blind; do
      run_stage "eval_${variant}_${recipe}_${mode}" -- "${VLM_RUN[@]}" evaluate --model "$model" --adapter "$adapter" \
        --data "$COT_TEST" "${DATA_ARGS[@]}" "${MODEL_ARGS[@]}" --recipe "$recipe" --mode "$mode" --variant "$variant" "${LIMIT_ARGS[@]}" \
        --out_dir "$RUN_DIR/eval/$variant/$recipe/$mode"
    done
  done
}

# 2. The floor every model must clear: answer priors of the CoT-train split, no image, no model.
run_stage eval_prior -- "${VLM[@]}" prior --train "$COT_TRAIN" --test "$COT_TEST" --benchmark "$BENCHMARK" \
  --out "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl"
run_stage metrics_prior -- "${VLM[@]}" metrics "$RUN_DIR/eval/prior/direct/blind/predictions.jsonl" --no_sbert

# 3. Teacher: zero-shot, then LoRA on its own split (CE on gold answers).
evaluate teacher_zeroshot "$TEACHER" ""
run_stage teacher_lora -- "${VLM_RUN[@]}" finetune --model "$TEACHER" --data "$TEACHER_TRAIN" "${DATA_ARGS[@]}" \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" "${TEACHER_EPOCHS_ARGS[@]}" "${TRAIN_ARGS[@]}" \
  --out_dir "$RUN_DIR/train/teacher_lora"

# 4. The teacher reasons on the CoT-train split; its RAW top-k distributions over those tokens are cached.
run_stage teacher_cot -- "${VLM_RUN[@]}" generate_cot --teacher "$TEACHER" --adapter "$RUN_DIR/train/teacher_lora/adapter" \
  "${MODEL_ARGS[@]}" "${CHUNK_ARGS[@]}" --student "$STUDENT" "${COT_ARGS[@]}" --data "$COT_TRAIN" "${DATA_ARGS[@]}" \
  --recipe "$RECIPE" "${LIMIT_ARGS[@]}" --out_dir "$RUN_DIR/cot"

# 5. Student: zero-shot, the standard LoRA baseline (CE on gold answers), and KD LoRA (CE on the teacher's CoT + KL).
evaluate student_zeroshot "$STUDENT" ""
run_stage student_lora -- "${VLM_RUN[@]}" finetune --model "$STUDENT" --data "$COT_TRAIN" "${DATA_ARGS[@]}" \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" "${EPOCHS_ARGS[@]}" "${TRAIN_ARGS[@]}" \
  --out_dir "$RUN_DIR/train/student_lora"
run_stage student_kd -- "${VLM_RUN[@]}" finetune --model "$STUDENT" --data "$COT_TRAIN" "${DATA_ARGS[@]}" --loss kd \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" --cot_dir "$RUN_DIR/cot" "${KD_ARGS[@]}" \
  "${EPOCHS_ARGS[@]}" "${TRAIN_ARGS[@]}" --out_dir "$RUN_DIR/train/student_kd"

# 6. Every trained variant, normal and blind, on the same CoT-test ids.
evaluate teacher_lora "$TEACHER" "$RUN_DIR/train/teacher_lora/adapter"
evaluate student_lora "$STUDENT" "$RUN_DIR/train/student_lora/adapter"
evaluate student_kd "$STUDENT" "$RUN_DIR/train/student_kd/adapter"

# 7. One report: variants x {normal, blind, gap} with CIs, per question / change type, CoT vs direct, plots.
run_stage report -- "${VLM[@]}" report "$RUN_DIR"
log "report: $RUN_DIR/report/report.md"
