# The CoT distillation study, top to bottom. Sourced by the pipelines/*.sh scripts after they set:
#   TEACHER STUDENT BENCHMARK DATA IMAGES_DIR AXIS_DEFINITIONS RECIPE SEED LIMIT ALPHA TEMPERATURE DIVERGENCE
#   TEACHER_EPOCHS EPOCHS LR BATCH_SIZE TOP_K KD_FALLBACK, and optionally TRAIN_DATA_PATH / VAL_DATA_PATH /
#   TEST_DATA_PATH (given splits: the split stages are skipped).
# Every artifact lands in $RUN_DIR; every stage is skipped when its .done marker exists (resume).

AXIS_ARGS=(); [[ -n "${AXIS_DEFINITIONS:-}" && -e "${AXIS_DEFINITIONS:-}" ]] && AXIS_ARGS=(--axis_definitions "$AXIS_DEFINITIONS")
DATA_ARGS=(--images_dir "$IMAGES_DIR" "${AXIS_ARGS[@]}" --benchmark "$BENCHMARK")
LIMIT_ARGS=(); [[ "${LIMIT:-0}" != 0 ]] && LIMIT_ARGS=(--limit "$LIMIT")
TRAIN_ARGS=(--lr "$LR" --batch_size "$BATCH_SIZE" --seed "$SEED" "${LIMIT_ARGS[@]}")
log "teacher family: $(family "$TEACHER"), student family: $(family "$STUDENT")"

# 1. Seeded, scene-disjoint splits: teacher-LoRA train/val vs the CoT pool, then CoT train / val / test.
if [[ -n "${TRAIN_DATA_PATH:-}" ]]; then
  TEACHER_TRAIN="$TRAIN_DATA_PATH"; COT_TRAIN="$TRAIN_DATA_PATH"; COT_TEST="$TEST_DATA_PATH"
else
  run_stage validate -- "${VLM[@]}" validate "$DATA" "${DATA_ARGS[@]}"
  run_stage split_teacher -- "$PYTHON" hypo_dataset/dataset_split.py 0.4 0.1 0.5 "$DATA" 1 "$RUN_DIR" --seed "$SEED"
  run_stage split_cot -- "$PYTHON" hypo_dataset/dataset_split.py 0.6 0.1 0.3 "$RUN_DIR/split/cot_pool.json" 2 "$RUN_DIR" --seed "$SEED"
  TEACHER_TRAIN="$RUN_DIR/split/teacher_train.json"; COT_TRAIN="$RUN_DIR/split/cot_train.json"; COT_TEST="$RUN_DIR/split/cot_test.json"
fi

# evaluate VARIANT MODEL ADAPTER: the variant with the direct prompt and with the CoT recipe, normal and blind,
# always on the same CoT-test ids
evaluate() {
  local variant="$1" model="$2" adapter="$3" recipe mode
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
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" --epochs "$TEACHER_EPOCHS" "${TRAIN_ARGS[@]}" --out_dir "$RUN_DIR/train/teacher_lora"

# 4. The teacher reasons on the CoT-train split; its RAW top-k distributions over those tokens are cached.
run_stage teacher_cot -- "${VLM_RUN[@]}" generate_cot --teacher "$TEACHER" --adapter "$RUN_DIR/train/teacher_lora/adapter" \
  "${MODEL_ARGS[@]}" "${CHUNK_ARGS[@]}" \
  --student "$STUDENT" $([[ "${KD_FALLBACK:-0}" == 1 ]] && echo --fallback_to_ce) --data "$COT_TRAIN" "${DATA_ARGS[@]}" \
  --recipe "$RECIPE" --top_k "$TOP_K" "${LIMIT_ARGS[@]}" --out_dir "$RUN_DIR/cot"

# 5. Student: zero-shot, the standard LoRA baseline (CE on gold answers), and KD LoRA (CE on the teacher's CoT + KL).
evaluate student_zeroshot "$STUDENT" ""
run_stage student_lora -- "${VLM_RUN[@]}" finetune --model "$STUDENT" --data "$COT_TRAIN" "${DATA_ARGS[@]}" \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" --epochs "$EPOCHS" "${TRAIN_ARGS[@]}" --out_dir "$RUN_DIR/train/student_lora"
run_stage student_kd -- "${VLM_RUN[@]}" finetune --model "$STUDENT" --data "$COT_TRAIN" "${DATA_ARGS[@]}" --loss kd \
  "${MODEL_ARGS[@]}" "${TRAIN_SCALE_ARGS[@]}" \
  --cot_dir "$RUN_DIR/cot" --alpha "$ALPHA" --temperature "$TEMPERATURE" --divergence "$DIVERGENCE" \
  --epochs "$EPOCHS" "${TRAIN_ARGS[@]}" --out_dir "$RUN_DIR/train/student_kd"

# 6. Every trained variant, normal and blind, on the same CoT-test ids.
evaluate teacher_lora "$TEACHER" "$RUN_DIR/train/teacher_lora/adapter"
evaluate student_lora "$STUDENT" "$RUN_DIR/train/student_lora/adapter"
evaluate student_kd "$STUDENT" "$RUN_DIR/train/student_kd/adapter"

# 7. One report: variants x {normal, blind, gap} with CIs, per question / change type, CoT vs direct, plots.
run_stage report -- "${VLM[@]}" report "$RUN_DIR"
log "report: $RUN_DIR/report/report.md"
