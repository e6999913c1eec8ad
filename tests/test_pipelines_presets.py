"""Two more presets end to end on a tiny setting (mirror zoo models, LIMIT small): the modular ScanQA preset and
the env-only smoke preset (the hypo3d study end to end, killed and resumed: test_pipelines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_pipelines import check_run_dir, env, run  # noqa: F401  (env: the module fixture)

pytestmark = pytest.mark.slow


# End to end: the modular preset (ScanQA data through the ScanQA preset, Cobra student, KD fallback). The ScanQA
# and blind presets are the same study.sh with one or two settings changed: their dry runs
# (test_presets_dry_run_the_same_study) check those settings; running the whole study again for each added ~10
# minutes to the suite without reaching new code.
@pytest.mark.parametrize("script, args, benchmark", [
    ("scanqa_modular_cot_inference_pipeline.sh", ["zoo:llava-ov-mirror", "zoo:cobra-mirror"], "scanqa"),
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
