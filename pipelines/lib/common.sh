# Shared runner for the study scripts: unique run directories, logged and resumable stages.
# Source it from a pipeline:  source "$(dirname "$0")/lib/common.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
VLM=("$PYTHON" -m vlm)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# sanitise NAME: model ids like llava-hf/llava-onevision-qwen2-7b-ov-hf or zoo:tiny become path-safe
slug() { printf '%s' "$1" | sed -E 's#^.*/##; s#[^A-Za-z0-9._-]+#-#g; s#^-+|-+$##g' | cut -c1-40; }

# make_run_dir TEACHER STUDENT BENCHMARK -> sets RUN_DIR (or resumes the existing $RUN_DIR)
make_run_dir() {
  if [[ -n "${RUN_DIR:-}" ]]; then
    [[ -d "$RUN_DIR" ]] || { log "RUN_DIR=$RUN_DIR does not exist"; exit 2; }
    log "resuming $RUN_DIR"
  else
    local base
    base="runs/pipeline_run_$(date -u +%Y%m%dT%H%M%SZ)_$(slug "$1")_$(slug "$2")_$(slug "$3")"
    # 4 random hex digits + mkdir (atomic): two pipelines started in the same second never share a dir
    until RUN_DIR="${base}_$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')" && mkdir "$RUN_DIR" 2>/dev/null; do :; done
  fi
  mkdir -p "$RUN_DIR/logs"
  export RUN_DIR
}

# run_stage NAME -- command ... : logs to $RUN_DIR/logs/NAME.log, skips when NAME.done exists
run_stage() {
  local name="$1"; shift; [[ "$1" == "--" ]] && shift
  local done_marker="$RUN_DIR/$name.done" logfile="$RUN_DIR/logs/$name.log" start
  if [[ -f "$done_marker" ]]; then log "skip $name (done)"; return 0; fi
  log "stage $name"
  start=$(date +%s)
  if "$@" 2>&1 | tee "$logfile"; then
    echo "$(( $(date +%s) - start ))" > "$done_marker"
  else
    log "stage $name FAILED — see $logfile"; exit 1
  fi
}
