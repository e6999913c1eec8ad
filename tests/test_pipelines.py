"""The five study scripts end to end on a tiny setting (mirror zoo models, LIMIT small), resume after a kill
during the KD stage, and the RUN_DIR re-run that skips every stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import REPO

PIPELINES = REPO / "pipelines"
pytestmark = pytest.mark.slow  # ~16 min on 2 cores; CI runs it, `pytest -m "not slow"` is the quick loop
VARIANTS = ("teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora", "student_kd")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {**os.environ, "VLM_ZOO_DIR": str(root / "zoo"), "RUNS_DIR": str(root / "runs"), "LIMIT": "4", "EPOCHS": "1",
            "TEACHER_EPOCHS": "1", "BATCH_SIZE": "4"}


def run(script, *args, env, timeout=1200, background=False):
    cmd = ["bash", str(PIPELINES / script), *map(str, args)]
    if background:
        # own process group: the kill below takes the running stage with it, like Ctrl-C or a lost node would
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(env) -> Path:
    runs = sorted(Path(env["RUNS_DIR"]).glob("pipeline_run_*"), key=lambda p: p.stat().st_mtime)
    return runs[-1]


def check_run_dir(run_dir: Path, benchmark: str):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["git_commit"] and manifest["packages"]["transformers"]
    assert all(s["status"] == "done" for s in manifest["stages"].values()), manifest["stages"]
    assert all("wall_s" in s and "peak_rss_mb" in s for s in manifest["stages"].values())
    for variant in VARIANTS:
        for mode in ("normal", "blind"):
            metrics = json.loads((run_dir / "eval" / variant / "direct" / mode / "metrics.json").read_text())
            assert metrics["benchmark"] == benchmark
    report = (run_dir / "report" / "report.md").read_text()
    results = json.loads((run_dir / "report" / "results.json").read_text())
    rows = {(r["variant"], r["recipe"]) for r in results["tables"]["headline"]}
    assert {(v, "direct") for v in VARIANTS} <= rows
    assert all(r["normal"] and r["blind"] for r in results["tables"]["headline"] if r["variant"] in VARIANTS)
    for variant in VARIANTS:
        assert variant in report
    assert (run_dir / "report" / "normal_vs_blind.png").is_file() and (run_dir / "report" / "loss_curves.png").is_file()
    assert (run_dir / "cot" / "transcripts.jsonl").is_file() and (run_dir / "train" / "student_kd" / "adapter").is_dir()
    return results


@pytest.mark.fast
def test_nproc_and_scale_settings_reach_the_stage_commands():
    """NPROC=N launches model stages through torchrun; scale env vars become flags, and only those that are set."""
    show = 'source pipelines/lib/common.sh; printf "%s|" "${VLM_RUN[@]}"; echo; printf "%s|" "${MODEL_ARGS[@]}"; echo; ' \
           'printf "%s|" "${TRAIN_SCALE_ARGS[@]}"; echo'
    base = {k: v for k, v in os.environ.items() if k not in ("NPROC", "DTYPE", "MAX_IMAGE_TILES", "FSDP")}
    r = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True,
                       env={**base, "NPROC": "2", "DTYPE": "bfloat16", "MAX_PIXELS": "1000", "GRADIENT_CHECKPOINTING": "1",
                            "FSDP": "1", "LOGIT_CHUNK_ROWS": "16"})
    run_line, model_line, train_line = r.stdout.splitlines()
    assert run_line.split("|")[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    assert model_line == "--dtype|bfloat16|--max_pixels|1000|"
    assert train_line == "--logit_chunk_rows|16|--gradient_checkpointing|--fsdp|"
    r = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True, env={**base, "NPROC": "1"})
    assert r.stdout.splitlines()[0].split("|")[1:3] == ["-m", "vlm"] and r.stdout.splitlines()[1:] == ["|", "|"]  # empty arrays
    r = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True, env={**base, "NPROC": "two"})
    assert r.returncode != 0 and "NPROC must be a positive integer" in r.stderr


@pytest.mark.fast
def test_every_script_has_help():
    for script in sorted(PIPELINES.glob("*.sh")):
        r = subprocess.run(["bash", str(script), "--help"], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0 and ("Environment" in r.stdout or "Variables" in r.stdout), script.name


def test_hypo3d_study_killed_in_kd_resumes_then_reruns_with_everything_skipped(env):
    proc = run("cot_inference_pipeline_hypo3d.sh", "zoo:llava-ov-mirror", "zoo:qwen2-vl-mirror", env=env, background=True)
    deadline = time.time() + 900
    run_dir = None
    while time.time() < deadline:
        runs = list(Path(env["RUNS_DIR"]).glob("pipeline_run_*"))
        if runs and (runs[0] / "logs" / "student_kd.log").is_file():
            run_dir = runs[0]
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    assert run_dir is not None
    time.sleep(3)  # into the KD training itself
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime for p in run_dir.glob("*.done")}
    assert "student_lora.done" in before and "student_kd.done" not in before
    r = run("cot_inference_pipeline_hypo3d.sh", "zoo:llava-ov-mirror", "zoo:qwen2-vl-mirror", env={**env, "RUN_DIR": str(run_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    after = {p.name: p.stat().st_mtime for p in run_dir.glob("*.done")}
    assert all(after[name] == mtime for name, mtime in before.items()), "a stage before KD was recomputed"
    assert "skip teacher_cot (done)" in r.stderr
    check_run_dir(run_dir, "hypo3d")
    r = run("cot_inference_pipeline_hypo3d.sh", "zoo:llava-ov-mirror", "zoo:qwen2-vl-mirror", env={**env, "RUN_DIR": str(run_dir)})
    assert r.returncode == 0 and "stage " not in r.stderr.replace("skip ", "")  # every stage skipped, none re-run


@pytest.mark.parametrize("script, args, benchmark", [
    ("cot_inference_pipeline_scanqa.sh", ["zoo:llava-ov-mirror", "zoo:llava-ov-mirror"], "scanqa"),
    ("scanqa_modular_cot_inference_pipeline.sh", ["zoo:llava-ov-mirror", "zoo:cobra-mirror"], "scanqa"),
    ("blind_cot_inference_pipeline.sh", ["zoo:qwen2-vl-mirror", "zoo:cobra-mirror"], "hypo3d"),
])
def test_sister_scripts(env, script, args, benchmark):
    runs = Path(env["RUNS_DIR"])
    seen = set(runs.glob("pipeline_run_*"))
    r = run(script, *args, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = set(runs.glob("pipeline_run_*")) - seen
    check_run_dir(run_dir, benchmark)
    assert "report: " in r.stderr


def test_randomize_smoke_run_from_env_only(env):
    runs = Path(env["RUNS_DIR"])
    seen = set(runs.glob("pipeline_run_*"))
    # the scale settings pass through to every stage (NPROC's torchrun launch: test_nproc_… below; the 2-process
    # stages themselves: tests/test_distributed.py and test_distill.py)
    smoke = {**env, "TEACHER": "zoo:cobra-mirror", "STUDENT": "zoo:llava-ov-mirror", "MAX_IMAGE_TILES": "1",
             "GRADIENT_CHECKPOINTING": "1", "LOGIT_CHUNK_ROWS": "7"}
    r = run("randomize_test_cot_inference_pipeline.sh", env=smoke)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = set(runs.glob("pipeline_run_*")) - seen
    assert "smoke-hypo3d" in run_dir.name
    check_run_dir(run_dir, "hypo3d")
    train = json.loads((run_dir / "train" / "student_kd" / "train_config.json").read_text())
    assert (train["max_image_tiles"], train["gradient_checkpointing"], train["logit_chunk_rows"]) == (1, True, 7)
    assert train["model_loaded"]["image_budget"]["max_image_tiles"] == 1
    meta = json.loads((run_dir / "eval" / "student_kd" / "direct" / "normal" / "eval_meta.json").read_text())
    assert meta["processes"] == 1 and meta["model_loaded"]["image_budget"]["max_image_tiles"] == 1
    assert json.loads((run_dir / "cot" / "cot_meta.json").read_text())["logit_chunk_rows"] == 7
    r = run("randomize_test_cot_inference_pipeline.sh", env={**smoke, "TEST_DATA_PATH": "/nonexistent/test.json"})
    assert r.returncode != 0 and "TEST_DATA_PATH not found: /nonexistent/test.json" in r.stderr
    assert set(runs.glob("pipeline_run_*")) - seen == {run_dir}  # nothing half-made
