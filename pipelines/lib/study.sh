# The CoT distillation study, top to bottom; the pipelines/*.sh presets set their defaults, then source it.
# Stages: validate, split (teacher LoRA vs CoT pool, then CoT train / val / test), answer-prior floor, teacher
# zero-shot, teacher LoRA, teacher CoT + raw top-k logit cache, the same CoT re-scored blind (a second cache),
# student zero-shot, then three student arms with one training budget: LoRA on gold answers, SFT on the teacher's
# CoT text only, KD (CoT + KL) — and the control KD from the blind cache; every variant evaluated direct and with
# the CoT recipe (the CoT-only and blind-cache arms: the CoT recipe only), normal and blind, on the same CoT-test
# ids; report with the declared comparisons (each arm on the recipe it was trained on) and "gap recovered".
# Everything lands in $RUNS_DIR/pipeline_run_*; RUN_DIR=<that dir> resumes (finished stages are skipped).
#
# Environment (default):
#   TEACHER STUDENT DATA (the arguments, when given; else zoo:llava-ov-teacher, zoo:llava-ov-student, the
#   preset's data: a generated toy world of TOY_SCENES (360) scenes in the Hypo3D format, in $RUNS_DIR/toyworld)
#   IMAGES_DIR (DATA dir/images)  AXIS_DEFINITIONS (DATA dir/axis_definition.xlsx, if present)
#   RECIPE (hypo3d-cot: the CoT recipe of the teacher's transcripts and of the CoT evaluations)
#   TEACHER_RECIPE (what the teacher LoRA learns: direct = gold answers; a recipe with gold phases, e.g. hypo3d-cot,
#   = the data's gold reasoning too. Default: RECIPE on the generated toy world, whose scene listings are gold
#   reasoning; direct on given data, since the published benchmark files have none)
#   TEACHER_EPOCHS  EPOCHS (the students')  LR (e.g. ~2e-4 for 7B models)  BATCH_SIZE   python -m vlm finetune
#   ALPHA  TEMPERATURE  DIVERGENCE                                                 python -m vlm finetune (KD)
#   ANSWER_WEIGHT (every student arm: weight of the answer turn against the reasoning turns; 1 = token mean)
#   TOP_K  KD_FALLBACK (1 = the student trains CE on the CoT if the tokenizers differ)   python -m vlm generate_cot
#   TRAIN_DATA_PATH TEST_DATA_PATH VAL_DATA_PATH: given splits instead of DATA (no split stage; the teacher LoRA,
#   the teacher's CoT and every student train on TRAIN_DATA_PATH; VAL_DATA_PATH is checked and recorded)
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
  # default: a generated toy world big enough for >= 300 CoT-test questions (TOY_SCENES scenes x 6 questions; the
  # CoT test split is 0.5 x 0.3 of the scenes); the 40-scene sample in hypo_dataset/sample stays for the tests
  # the teacher LoRA learns its gold reasoning (the scene listings) too, unless TEACHER_RECIPE says otherwise
  DATA="${3:-${DATA:-}}"
  if [[ -z "$DATA" ]]; then DATA="$(toy_world_data "${TOY_SCENES:-360}")"; TEACHER_RECIPE="${TEACHER_RECIPE:-$RECIPE}"; fi
  require_file "$DATA" "benchmark JSON"
fi
TEACHER_RECIPE="${TEACHER_RECIPE:-direct}"
IMAGES_DIR="${IMAGES_DIR:-$(dirname "$DATA")/images}"
axis_file="$(dirname "$DATA")/axis_definition.xlsx"  # Hypo3D's orientation definitions, where the data has them
if [[ -z "${AXIS_DEFINITIONS:-}" && -e "$axis_file" ]]; then AXIS_DEFINITIONS="$axis_file"; fi
require_file "$IMAGES_DIR" "images dir (set IMAGES_DIR)"
if [[ "$BENCHMARK" == auto ]]; then BENCHMARK="$(benchmark_of "$DATA")"; fi
for var in "${SPLIT_VARS[@]}"; do
  "${VLM[@]}" validate "${!var}" --images_dir "$IMAGES_DIR" --benchmark "$BENCHMARK" >/dev/null \
    || die "$var is not a valid $BENCHMARK file (see above)"
done

start_run "$TEACHER" "$STUDENT" "${RUN_TAG:+$RUN_TAG-}$BENCHMARK" "${SPLIT_VARS[@]}" TEACHER STUDENT DATA TOY_SCENES BENCHMARK \
  IMAGES_DIR AXIS_DEFINITIONS RECIPE TEACHER_RECIPE SEED LIMIT TEACHER_EPOCHS EPOCHS LR BATCH_SIZE ALPHA TEMPERATURE DIVERGENCE ANSWER_WEIGHT \
  TOP_K KD_FALLBACK "${SCALE_VARS[@]}"
# The variants in report order; every evaluate call below names one of them. The answer prior has no image.
VARIANTS=(prior teacher_zeroshot teacher_lora student_zeroshot student_lora student_cot_sft student_kd
  student_kd_blind_cache)
# The report's comparisons (A - B, each on the recipe it was trained on, paired CI): does KD beat gold-answer
# LoRA; what the teacher's logits add over its CoT text alone; and the negative control, KD from the teacher's
# distributions with the image vs without it. Gap recovered: 0 = the student zero-shot, 100 = the LoRA teacher.
record_study --variants "${VARIANTS[@]}" --blind_only prior \
  --compare student_kd:student_lora student_kd:student_cot_sft student_kd:student_kd_blind_cache \
  --gap_recovered student_zeroshot:teacher_lora

AXIS_ARGS=(); if [[ -e "${AXIS_DEFINITIONS:-}" ]]; then AXIS_ARGS=(--axis_definitions "$AXIS_DEFINITIONS"); fi
DATA_ARGS=(--images_dir "$IMAGES_DIR" "${AXIS_ARGS[@]}" --benchmark "$BENCHMARK")
env_flags TRAIN_ARGS LR:lr BATCH_SIZE:batch_size SEED:seed; TRAIN_ARGS+=("${LIMIT_ARGS[@]}")
env_flags TEACHER_EPOCHS_ARGS TEACHER_EPOCHS:epochs
env_flags EPOCHS_ARGS EPOCHS:epochs
env_flags STUDENT_LOSS_ARGS ANSWER_WEIGHT:answer_weight
env_flags KD_ARGS ALPHA:alpha TEMPERATURE:temperature DIVERGENCE:divergence
env_flags COT_ARGS TOP_K:top_k KD_FALLBACK=1:fallback_to_ce
zoo_build "$TEACHER" "$STUDENT"
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

# evaluate VARIANT MODEL ADAPTER [RECIPE...]: the variant with each recipe (default: the direct prompt and the CoT
# recipe), normal and blind, always on the same CoT-test ids
evaluate() {
  local variant="$1" model="$2" adapter="$3" recipe mode; shift 3
  local recipes=("$@"); (( ${#recipes[@]} )) || recipes=(direct "$RECIPE")
  [[ " ${VARIANTS[*]} " == *" $variant "* ]] || die "evaluate $variant: not in VARIANTS (${VARIANTS[*]})"
  for recipe in "${recipes[@]}"; do
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

# 3. Teacher: zero-shot, then LoRA on its own split (CE on the gold targets of TEACHER_RECIPE: answers, or the
#    data's gold reasoning + answers).
evaluate teacher_zeroshot "$TEACHER" ""
run_stage teacher_lora -- "${VLM_RUN[@]}" finetune --model "$TEACHER" --data "$TEACHER_TRAIN" "${DATA_ARGS[@]}" \
  --recipe "$TEACHER_RECIPE" "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" "${TEACHER_EPOCHS_ARGS[@]}" "${TRAIN_ARGS[@]}" \
  --out_dir "$RUN_DIR/train/teacher_lora"

# teacher_cache STAGE OUT_DIR [FLAG...]: the LoRA teacher with the CoT recipe on the CoT-train split, its raw top-k
# distributions cached in OUT_DIR
teacher_cache() {
  local name="$1" out="$2"; shift 2
  run_stage "$name" -- "${VLM_RUN[@]}" generate_cot --teacher "$TEACHER" \
    --adapter "$RUN_DIR/train/teacher_lora/adapter" "${MODEL_ARGS[@]}" "${CHUNK_ARGS[@]}" --student "$STUDENT" \
    "${COT_ARGS[@]}" --data "$COT_TRAIN" "${DATA_ARGS[@]}" --recipe "$RECIPE" "${LIMIT_ARGS[@]}" "$@" --out_dir "$out"
}

# 4. The teacher reasons on the CoT-train split; its RAW top-k distributions over those tokens are cached. Then the
#    same transcripts re-scored WITHOUT the image (no generation): the negative control's cache, which differs
#    from the first only in what the teacher saw.
teacher_cache teacher_cot "$RUN_DIR/cot"
teacher_cache teacher_cot_blind "$RUN_DIR/cot_blind" --transcripts "$RUN_DIR/cot/transcripts.jsonl" --mode blind

# student NAME [FLAG...]: one student arm into train/NAME. Every arm gets the same data, epochs, LR, batch size,
# answer weight, seed and limit, so the arms differ only in their loss.
student() {
  local name="$1"; shift
  run_stage "$name" -- "${VLM_RUN[@]}" finetune --model "$STUDENT" --data "$COT_TRAIN" "${DATA_ARGS[@]}" "$@" \
    "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" "${EPOCHS_ARGS[@]}" "${STUDENT_LOSS_ARGS[@]}" "${TRAIN_ARGS[@]}" \
    --out_dir "$RUN_DIR/train/$name"
}

# 5. Student: zero-shot; LoRA on gold answers (the standard baseline); SFT on the teacher's CoT text only
#    (sequence-level KD: CE, no cache); KD LoRA (CE on the teacher's CoT + KL to its cached distributions); and the
#    control, the same KD from the blind cache.
evaluate student_zeroshot "$STUDENT" ""
student student_lora
student student_cot_sft --loss cot --cot_dir "$RUN_DIR/cot"
student student_kd --loss kd --cot_dir "$RUN_DIR/cot" "${KD_ARGS[@]}"
student student_kd_blind_cache --loss kd --cot_dir "$RUN_DIR/cot_blind" "${KD_ARGS[@]}"

# 6. Every trained variant, normal and blind, on the same CoT-test ids. The CoT-only and blind-cache arms exist for
#    the comparisons, made on the recipe they were trained on: the CoT recipe only (half the evaluations).
evaluate teacher_lora "$TEACHER" "$RUN_DIR/train/teacher_lora/adapter"
evaluate student_lora "$STUDENT" "$RUN_DIR/train/student_lora/adapter"
evaluate student_cot_sft "$STUDENT" "$RUN_DIR/train/student_cot_sft/adapter" "$RECIPE"
evaluate student_kd "$STUDENT" "$RUN_DIR/train/student_kd/adapter"
evaluate student_kd_blind_cache "$STUDENT" "$RUN_DIR/train/student_kd_blind_cache/adapter" "$RECIPE"

# 7. One report: variants x {normal, blind, gap, gap recovered} with CIs, the comparisons, per question / change
#    type, CoT vs direct, plots.
run_stage report -- "${VLM[@]}" report "$RUN_DIR"
log "report: $RUN_DIR/report/report.md"
