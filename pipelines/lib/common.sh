# Shared runner for the study scripts: unique run directories, logged, resumable stages, the manifest, and the
# environment settings turned into stage flags. Source it from a study:  source "$(dirname "$0")/lib/common.sh"

SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"  # resolved before the cd below: --help reads it
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
VLM=("$PYTHON" -m vlm)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# usage FILE... : the --help text, without Python (fast): each FILE's header comment (from after the shebang to
# the first line of code), then the settings every study shares
usage() {
  local file
  for file in "$@"; do sed -n -e '1{/^#!/d;}' -e '/^#/!q' -e 's/^# \{0,1\}//p' "$file"; done
  cat <<'HELP'
  SEED (42: every split and every training run)  LIMIT (first N samples of every stage; unset: all)
  RUN_DIR (resume that run: finished stages are skipped)  RUNS_DIR (runs)  PYTHON (.venv/bin/python if present)
  Scale (README "Scale"): NPROC (1; N = torchrun on N GPUs/processes)  DTYPE  ATTN_IMPLEMENTATION
  MAX_IMAGE_TILES (LLaVA-OV)  MIN_PIXELS  MAX_PIXELS (Qwen2-VL)  GRADIENT_CHECKPOINTING (1 = on)
  FSDP (1 = FSDP2 sharding, GPUs)  LOGIT_CHUNK_ROWS
A setting listed without a value reaches its stage only when set; unset, the stage default applies (the manifest
records "") — see python -m vlm <stage> --help, e.g. python -m vlm finetune --help.
HELP
}
help_requested() { [[ "${1:-}" == -h || "${1:-}" == --help ]]; }

# path-safe id: llava-hf/llava-onevision-qwen2-7b-ov-hf -> llava-onevision-qwen2-7b-ov-hf, zoo:x -> zoo-x
slug() { printf '%s' "$1" | sed -E 's#/+$##; s#^.*/##; s#[^A-Za-z0-9._-]+#-#g; s#^-+|-+$##g' | cut -c1-40; }

# zoo_build MODEL... : the zoo: entries among MODEL... that are not built yet, built side by side (one process
# and one torch thread each) before any stage needs them; other models are left alone
zoo_build() {
  local names=() m
  for m in "$@"; do if [[ "$m" == zoo:* ]]; then names+=("${m#zoo:}"); fi; done
  if (( ${#names[@]} )); then "${VLM[@]}" zoo build "${names[@]}" >&2 || die "could not build ${names[*]}"; fi
}

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

# the recipe a benchmark's training targets follow by default (its entry in the benchmark registry)
train_recipe_of() {
  "$PYTHON" -c "import sys; from vlm.benchmarks import get; print(get(sys.argv[1]).train_recipe)" "$1"
}

# recipes_for BENCH NAME... : the recipe each generic arm recipe (direct, scratchpad, …) runs on BENCH, one per line
# (COCO Captions: direct -> caption); unchanged where the benchmark has no form of its own
recipes_for() {
  "$PYTHON" -c "import sys; from vlm.benchmarks import get; b = get(sys.argv[1]); print(*map(b.recipe_for, sys.argv[2:]), sep='\n')" "$@"
}

# toy_world_data SCENES : the embedded study's default data, the toy world in the real Hypo3D format (SCENES
# scenes, seed 0: the committed 40-scene sample is its prefix), generated once into $RUNS_DIR/toyworld and reused
# (deterministic: same scenes and seed, same bytes); prints the path of its hypo3d.json
toy_world_data() {
  local dir="${RUNS_DIR:-runs}/toyworld/hypo3d-seed0-$1"
  if [[ ! -f "$dir/hypo3d.json" ]]; then
    log "generating the default data: $1 toy-world scenes in the Hypo3D format -> $dir"
    mkdir -p "$(dirname "$dir")"; rm -rf "$dir.tmp.$$"
    "${VLM[@]}" toyworld --hypo3d_out "$dir.tmp.$$" --scenes "$1" >&2 || die "could not generate $dir"
    mv -T "$dir.tmp.$$" "$dir" 2>/dev/null || rm -rf "$dir.tmp.$$"  # another run got there first: same bytes
  fi
  printf '%s\n' "$dir/hypo3d.json"
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

# record_study --variants V... [--blind_only V...] [--compare A:B...] [--gap_recovered LOW:HIGH] : the study's
# design in manifest.json: variants in report order, the pairs the report compares, the gap-recovered ends (the
# report reads them from there; python -m vlm.manifest --help)
record_study() { "$PYTHON" -m vlm.manifest study "$RUN_DIR" "$@" || die "cannot record the study in $RUN_DIR"; }

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

# env_flags ARRAY SPEC... : ARRAY = the stage flags of the settings that are set, so every other flag keeps its
# stage's default (written once, in the stage's config dataclass). VAR:flag gives --flag "$VAR" when VAR is
# non-empty; VAR=1:flag gives a bare --flag when VAR is 1.
env_flags() {
  local -n flags_out="$1"; shift
  flags_out=()
  local spec var flag
  for spec in "$@"; do
    var="${spec%%:*}" flag="--${spec#*:}"
    if [[ "$var" == *=1 ]]; then
      var="${var%=1}"
      if [[ "${!var:-}" == 1 ]]; then flags_out+=("$flag"); fi
    elif [[ -n "${!var:-}" ]]; then
      flags_out+=("$flag" "${!var}")
    fi
  done
}

# The scale settings of every model stage (usage above lists them): NPROC > 1 launches evaluate, generate_cot and
# finetune through torchrun (data-parallel inference, DDP); the others become flags.
SCALE_VARS=(NPROC DTYPE ATTN_IMPLEMENTATION MAX_IMAGE_TILES MIN_PIXELS MAX_PIXELS GRADIENT_CHECKPOINTING FSDP LOGIT_CHUNK_ROWS)
VLM_RUN=("${VLM[@]}")
if [[ "${NPROC:-1}" != 1 ]]; then
  [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer, got '$NPROC'"
  VLM_RUN=("$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m vlm)
fi
env_flags MODEL_ARGS DTYPE:dtype ATTN_IMPLEMENTATION:attn_implementation MAX_IMAGE_TILES:max_image_tiles \
  MIN_PIXELS:min_pixels MAX_PIXELS:max_pixels                                   # every model stage
env_flags CHUNK_ARGS LOGIT_CHUNK_ROWS:logit_chunk_rows                          # re-scoring (generate_cot)
env_flags TRAIN_SCALE_ARGS LOGIT_CHUNK_ROWS:logit_chunk_rows GRADIENT_CHECKPOINTING=1:gradient_checkpointing \
  FSDP=1:fsdp                                                                   # training
env_flags LIMIT_ARGS LIMIT:limit                                                # every stage that reads samples

# A study's one seed, for its splits and every training run: a run is reproduced from its manifest. Always passed,
# because the stages' own defaults differ (vlm split: 42, finetune: 0); 42 has been the studies' seed from the start.
SEED="${SEED:-42}"
