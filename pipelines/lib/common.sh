# Shared runner for the study scripts: unique run directories, logged, resumable stages, the manifest.
# Source it from a pipeline:  source "$(dirname "$0")/lib/common.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
VLM=("$PYTHON" -m vlm)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# print the script's header comment (its --help)
usage() { sed -n '2,/^[^#]/p' "$1" | sed '$d; s/^# \{0,1\}//'; }

# path-safe id: llava-hf/llava-onevision-qwen2-7b-ov-hf -> llava-onevision-qwen2-7b-ov-hf, zoo:x -> zoo-x
slug() { printf '%s' "$1" | sed -E 's#/+$##; s#^.*/##; s#[^A-Za-z0-9._-]+#-#g; s#^-+|-+$##g' | cut -c1-40; }

# the model family from the checkpoint's config.json (never from the id string)
family() { "${VLM[@]}" family "$1"; }

# the benchmark format of a data file (hypo3d | scanqa | aokvqa | llava-cot), read from its structure;
# an unreadable or unrecognised file is one error (callers assign it under set -e, so the script stops)
benchmark_of() {
  local kind
  kind="$("$PYTHON" -c "
import sys
from vlm.data import DataError, detect_file
try:
    print(detect_file(sys.argv[1]) or '')
except DataError as e:
    sys.exit(e.render())" "$1")" || return
  [[ -n "$kind" ]] || die "cannot tell the format of $1 (LLaVA-CoT JSONL, A-OKVQA, Hypo3D or ScanQA JSON)"
  printf '%s\n' "$kind"
}

# where a data file's images live by default (DATA dir/images; A-OKVQA: DATA dir/<split>2017)
images_of() {
  "$PYTHON" -c "import sys; from vlm.data import default_images_dir; print(default_images_dir(sys.argv[1], sys.argv[2]))" "$1" "$2"
}

# start_run TEACHER STUDENT BENCHMARK VAR... : create (or, with RUN_DIR=<dir>, resume) the run directory,
# echo the configuration and record it with the provenance in manifest.json
start_run() {
  local teacher="$1" student="$2" bench="$3"; shift 3
  if [[ -n "${RUN_DIR:-}" ]]; then
    [[ -d "$RUN_DIR" ]] || die "RUN_DIR=$RUN_DIR does not exist"
    log "resuming $RUN_DIR (finished stages are skipped)"
  else
    local base
    base="${RUNS_DIR:-runs}/pipeline_run_$(date -u +%Y%m%dT%H%M%SZ)_$(slug "$teacher")_$(slug "$student")_$(slug "$bench")"
    # 4 random hex digits + mkdir (atomic): two pipelines started in the same second never share a dir
    until RUN_DIR="${base}_$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')" && mkdir -p "$(dirname "$RUN_DIR")" && mkdir "$RUN_DIR" 2>/dev/null; do :; done
  fi
  export RUN_DIR
  mkdir -p "$RUN_DIR/logs"
  local pairs=() var
  log "config:"
  for var in "$@"; do
    printf '    %-18s %s\n' "$var" "${!var:-}" >&2
    pairs+=("$var=${!var:-}")
  done
  printf '    %-18s %s\n' RUN_DIR "$RUN_DIR" >&2
  "$PYTHON" -m vlm.manifest init "$RUN_DIR" --command "$0 ${PIPELINE_ARGS:-}" --config "${pairs[@]}" \
    || die "cannot write $RUN_DIR/manifest.json"
}

# run_stage NAME -- command ... : skipped when RUN_DIR/NAME.done exists; otherwise runs the command through
# the manifest runner (log in logs/NAME.log, status / wall time / peak memory in manifest.json); the first
# failure stops the pipeline with the log's path
run_stage() {
  local name="$1"; shift; [[ "${1:-}" == "--" ]] && shift
  if [[ -f "$RUN_DIR/$name.done" ]]; then log "skip $name (done)"; return 0; fi
  log "stage $name"
  if "$PYTHON" -m vlm.manifest run "$RUN_DIR" "$name" -- "$@"; then
    date -u +%Y-%m-%dT%H:%M:%SZ > "$RUN_DIR/$name.done"
  else
    die "stage $name failed — see $RUN_DIR/logs/$name.log (fix and re-run with RUN_DIR=$RUN_DIR to resume)"
  fi
}

# require_file PATH WHAT : one clear error for a missing input
require_file() { [[ -e "$1" ]] || die "$2 not found: $1"; }

# Scale settings of every model stage (evaluate, generate_cot, finetune); unset = the stage's own default, and only
# what is set is passed on (README "Scale"):
#   NPROC            1: plain python; N > 1: torchrun --standalone --nproc-per-node N (data-parallel inference, DDP)
#   DTYPE ATTN_IMPLEMENTATION MAX_IMAGE_TILES (LLaVA-OV) MIN_PIXELS MAX_PIXELS (Qwen2-VL)   every model stage
#   GRADIENT_CHECKPOINTING (1 = on) FSDP (1 = FSDP2 sharding, GPUs)                            training
#   LOGIT_CHUNK_ROWS                                                                           training, re-scoring
SCALE_VARS=(NPROC DTYPE ATTN_IMPLEMENTATION MAX_IMAGE_TILES MIN_PIXELS MAX_PIXELS GRADIENT_CHECKPOINTING FSDP LOGIT_CHUNK_ROWS)
VLM_RUN=("${VLM[@]}")
if [[ "${NPROC:-1}" != 1 ]]; then
  [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer, got '$NPROC'"
  VLM_RUN=("$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m vlm)
fi
MODEL_ARGS=()  # every model stage
for pair in DTYPE:dtype ATTN_IMPLEMENTATION:attn_implementation MAX_IMAGE_TILES:max_image_tiles MIN_PIXELS:min_pixels \
            MAX_PIXELS:max_pixels; do
  var="${pair%%:*}"
  if [[ -n "${!var:-}" ]]; then MODEL_ARGS+=("--${pair#*:}" "${!var}"); fi
done
CHUNK_ARGS=(); if [[ -n "${LOGIT_CHUNK_ROWS:-}" ]]; then CHUNK_ARGS=(--logit_chunk_rows "$LOGIT_CHUNK_ROWS"); fi
TRAIN_SCALE_ARGS=("${CHUNK_ARGS[@]}")
if [[ "${GRADIENT_CHECKPOINTING:-0}" == 1 ]]; then TRAIN_SCALE_ARGS+=(--gradient_checkpointing); fi
if [[ "${FSDP:-0}" == 1 ]]; then TRAIN_SCALE_ARGS+=(--fsdp); fi

# Study settings every script shares: environment value or default. (The scripts' --help lists them.)
STUDY_VARS=(TEACHER STUDENT DATA BENCHMARK IMAGES_DIR AXIS_DEFINITIONS RECIPE SEED LIMIT TEACHER_EPOCHS EPOCHS LR BATCH_SIZE
            ALPHA TEMPERATURE DIVERGENCE TOP_K KD_FALLBACK "${SCALE_VARS[@]}")
study_defaults() {
  RECIPE="${RECIPE:-hypo3d-cot}" SEED="${SEED:-42}" LIMIT="${LIMIT:-0}"
  TEACHER_EPOCHS="${TEACHER_EPOCHS:-3}" EPOCHS="${EPOCHS:-3}" LR="${LR:-1e-3}" BATCH_SIZE="${BATCH_SIZE:-8}"
  ALPHA="${ALPHA:-0.5}" TEMPERATURE="${TEMPERATURE:-1.0}" DIVERGENCE="${DIVERGENCE:-forward_kl}" TOP_K="${TOP_K:-64}"
  KD_FALLBACK="${KD_FALLBACK:-0}" AXIS_DEFINITIONS="${AXIS_DEFINITIONS:-}"
}
