"""The study scripts on a tiny setting (mirror zoo models, LIMIT small): dry runs of every preset, the hypo3d study
end to end with a kill during the KD stage, the resume and the RUN_DIR re-run that skips every stage. Two other
presets end to end: test_pipelines_presets.py."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

PIPELINES = REPO / "pipelines"
pytestmark = pytest.mark.slow  # CI runs it; `pytest -m "not slow"` is the quicker loop
VARIANTS = ("teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora", "student_kd")
# the arms that separate the CoT text from the logits: evaluated with the study's CoT recipe only
COT_ONLY = ("student_cot_sft", "student_kd_blind_cache")
STUDENTS = ("student_lora", "student_cot_sft", "student_kd", "student_kd_blind_cache")
STUDY = {"variants": ["prior", "teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora",
                      "student_cot_sft", "student_kd", "student_kd_blind_cache"], "blind_only": ["prior"],
         "compare": [["student_kd", "student_lora"], ["student_kd", "student_cot_sft"],
                     ["student_kd", "student_kd_blind_cache"]],
         "gap_recovered": {"low": "student_zeroshot", "high": "teacher_lora"}}


@pytest.fixture(scope="module")
def env(tmp_path_factory, zoo_dir):
    root = tmp_path_factory.mktemp("pipelines")
    return {**os.environ, "VLM_ZOO_DIR": str(zoo_dir), "RUNS_DIR": str(root / "runs"), "LIMIT": "4", "EPOCHS": "1",
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
    recipe = manifest["config"]["RECIPE"]
    for variant in COT_ONLY:
        assert sorted(p.name for p in (run_dir / "eval" / variant).iterdir()) == [recipe]
        for mode in ("normal", "blind"):
            assert (run_dir / "eval" / variant / recipe / mode / "metrics.json").is_file()
    report = (run_dir / "report" / "report.md").read_text()
    results = json.loads((run_dir / "report" / "results.json").read_text())
    rows = {(r["variant"], r["recipe"]) for r in results["tables"]["headline"]}
    assert {(v, "direct") for v in VARIANTS} <= rows
    assert all(r["normal"] and r["blind"] for r in results["tables"]["headline"] if r["variant"] in VARIANTS)
    for variant in VARIANTS:
        assert variant in report
    # every declared comparison, normal and blind, each student on the recipe it was trained on
    compared = {(r["a"], r["b"], r["mode"]): r for r in results["tables"]["comparisons"]}
    assert set(compared) == {(a, b, m) for a, b in STUDY["compare"] for m in ("normal", "blind")}
    for (_, b, _), r in compared.items():  # student_lora trained on gold answers (direct), the others on the CoT
        assert r["diff"] and (r["a_recipe"], r["b_recipe"]) == (recipe, "direct" if b == "student_lora" else recipe)
    assert "## Comparisons" in report and "gap recovered %" in report
    assert (run_dir / "report" / "normal_vs_blind.png").is_file() and (run_dir / "report" / "loss_curves.png").is_file()
    assert (run_dir / "cot" / "transcripts.jsonl").is_file() and (run_dir / "train" / "student_kd" / "adapter").is_dir()
    assert (run_dir / "cot_blind" / "cot_meta.json").is_file()
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


# A PYTHON for dry runs: each stage command is appended to $STAGE_LOG (shell-quoted, one line per stage) instead
# of being run, except validate and split (their files are real); everything outside a stage is the real python.
DRY_PYTHON = """#!/usr/bin/env bash
if [[ "$1 $2 $3" == "-m vlm.manifest run" ]]; then
  name="$5"; shift 6
  printf '%q ' "$name" "$@" >> "$STAGE_LOG"; echo >> "$STAGE_LOG"
  case "$name" in validate*|split*) exec "$@" ;; esac
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def fake_checkpoint(path: Path, model_type: str = "llava_onevision") -> Path:
    """A folder whose config.json names a family: enough for `vlm family`, never loaded in a dry run."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def dry_run(tmp: Path, script: str, *args, **env_vars):
    """Run a study script with every model stage replaced by a record of its command: (result, run dir, manifest,
    {stage name: argv})."""
    stub = tmp / "dry_python"
    stub.write_text(DRY_PYTHON)
    stub.chmod(0o755)
    log = tmp / f"stages_{len(list(tmp.glob('stages_*')))}.txt"
    runs = tmp / "runs"
    seen = set(runs.glob("pipeline_run_*"))
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_DIR", "LIMIT", "EPOCHS", "LR", "SEED", "NPROC")}
    env.update(PYTHON=str(stub), REAL_PYTHON=sys.executable, STAGE_LOG=str(log), RUNS_DIR=str(runs), **env_vars)
    r = subprocess.run(["bash", str(PIPELINES / script), *map(str, args)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = set(runs.glob("pipeline_run_*")) - seen
    stages = {}
    for line in log.read_text().splitlines():
        name, *argv = shlex.split(line)
        stages[name] = argv
    return r, run_dir, json.loads((run_dir / "manifest.json").read_text()), stages


def flag(argv: list[str], name: str):
    """The value after --name (True for a bare switch), None when absent."""
    if name not in argv:
        return None
    i = argv.index(name)
    return argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True


def without(argv: list[str], *names: str) -> list[str]:
    """argv less the named flags and their values."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a in names:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        else:
            out.append(a)
    return out


def check_student_arms(stages, run_dir: Path):
    """The four student arms train with the same command but for the loss, its cache and the output folder; the
    blind-cache control's teacher re-scores the first teacher's transcripts blind, with the same settings."""
    loss_flags = ("--loss", "--cot_dir", "--alpha", "--temperature", "--divergence", "--out_dir")
    budgets = {name: without(stages[name], *loss_flags) for name in STUDENTS}
    assert all(b == budgets["student_lora"] for b in budgets.values()), budgets
    assert [(flag(stages[n], "--loss"), flag(stages[n], "--cot_dir")) for n in STUDENTS] == [
        (None, None), ("cot", f"{run_dir}/cot"), ("kd", f"{run_dir}/cot"), ("kd", f"{run_dir}/cot_blind")]
    kd, control = (without(stages[n], "--cot_dir", "--out_dir") for n in ("student_kd", "student_kd_blind_cache"))
    assert kd == control
    assert [flag(stages[n], "--out_dir") for n in STUDENTS] == [f"{run_dir}/train/{n}" for n in STUDENTS]
    blind = stages["teacher_cot_blind"]
    assert flag(blind, "--transcripts") == f"{run_dir}/cot/transcripts.jsonl" and flag(blind, "--mode") == "blind"
    assert flag(blind, "--out_dir") == f"{run_dir}/cot_blind" and flag(stages["teacher_cot"], "--mode") is None
    assert without(blind, "--transcripts", "--mode", "--out_dir") == without(stages["teacher_cot"], "--out_dir")


@pytest.mark.fast
def test_env_flags_passes_only_the_settings_that_are_set():
    show = ('source pipelines/lib/common.sh; env_flags OUT LR:lr TOP_K:top_k FSDP=1:fsdp KD_FALLBACK=1:fallback_to_ce; '
            'printf "%s|" "${OUT[@]}"')
    base = {k: v for k, v in os.environ.items() if k not in ("LR", "TOP_K", "FSDP", "KD_FALLBACK", "NPROC")}
    r = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True,
                       env={**base, "LR": "2e-4", "TOP_K": "", "FSDP": "0", "KD_FALLBACK": "1"})
    assert r.returncode == 0 and r.stdout == "--lr|2e-4|--fallback_to_ce|", r.stderr  # empty and 0: stage default
    r = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True, env=base)
    assert r.returncode == 0 and r.stdout == "|"


@pytest.mark.fast
def test_distillation_study_dry_run_splits_as_the_seed_script_and_passes_only_set_flags(tmp_path):
    """The whole study with its model stages recorded, not run: `vlm split` writes exactly what the seed's
    positional split script writes; unset stage settings stay off the command lines (the stage defaults apply);
    the study's variants are in the manifest."""
    teacher, student = fake_checkpoint(tmp_path / "teacher"), fake_checkpoint(tmp_path / "student", "qwen2_vl")
    # the default data: a generated toy world (TOY_SCENES scenes, seed 0), of which the committed sample is the
    # first 40 scenes — so 40 reproduce the sample byte for byte and split as the seed script splits the sample
    r, run_dir, manifest, stages = dry_run(tmp_path, "cot_inference_pipeline_hypo3d.sh", teacher, student, TOY_SCENES="40")
    world = tmp_path / "runs" / "toyworld" / "hypo3d-seed0-40"
    assert manifest["config"]["DATA"] == str(world / "hypo3d.json") and manifest["config"]["TOY_SCENES"] == "40"
    for name in ("hypo3d.json", "axis_definition.xlsx", "images/toy0039.png"):
        assert (world / name).read_bytes() == (REPO / "hypo_dataset" / "sample" / name).read_bytes(), name
    assert manifest["study"] == STUDY
    assert manifest["config"]["LR"] == manifest["config"]["TOP_K"] == "" and manifest["config"]["SEED"] == "42"
    assert manifest["config"]["RECIPE"] == "hypo3d-cot" and manifest["seed"] == "42"
    # today's split: the seed's script (positional form) into another run dir gives the same bytes
    ref = tmp_path / "ref"
    for args in (["0.4", "0.1", "0.5", "hypo_dataset/sample/hypo3d.json", "1"],  # as the study used to call it
                 ["0.6", "0.1", "0.3", ref / "split" / "cot_pool.json", "2"]):
        subprocess.run([sys.executable, "hypo_dataset/dataset_split.py", *args, ref, "--seed", "42"], cwd=REPO,
                       check=True, capture_output=True)
    made = sorted(p.name for p in (run_dir / "split").iterdir())
    assert made == sorted(p.name for p in (ref / "split").iterdir()) and "cot_test.json" in made
    for name in made:
        ours, theirs = (run_dir / "split" / name).read_bytes(), (ref / "split" / name).read_bytes()
        if name.endswith("_manifest.json"):  # names its input: the generated world, each run dir's cot_pool.json
            ours, theirs = (json.loads(b) | {"input": ""} for b in (ours, theirs))
        assert ours == theirs, name
    evals = [n for n in stages if n.startswith("eval_") and n != "eval_prior"]
    assert len(evals) == 5 * 4 + 2 * 2 and {flag(stages[n], "--variant") for n in evals} == {*VARIANTS, *COT_ONLY}
    # the CoT-only and blind-cache arms: the CoT recipe they were trained on, normal and blind
    cot_only = sorted((flag(stages[n], "--recipe"), flag(stages[n], "--mode")) for n in evals
                      if flag(stages[n], "--variant") in COT_ONLY)
    assert cot_only == [("hypo3d-cot", "blind")] * 2 + [("hypo3d-cot", "normal")] * 2
    check_student_arms(stages, run_dir)
    for name in ("teacher_lora", *STUDENTS):
        argv = stages[name]
        assert flag(argv, "--seed") == "42"
        assert flag(argv, "--lr") is flag(argv, "--epochs") is flag(argv, "--limit") is None
    assert flag(stages["student_kd"], "--alpha") is None and flag(stages["student_kd"], "--divergence") is None
    assert flag(stages["teacher_cot"], "--top_k") is flag(stages["teacher_cot"], "--fallback_to_ce") is None
    assert flag(stages["teacher_cot"], "--recipe") == "hypo3d-cot"
    assert flag(stages["teacher_cot"], "--axis_definitions") == str(world / "axis_definition.xlsx")
    assert flag(stages["split_teacher"], "--seed") == flag(stages["split_cot"], "--seed") == "42"


@pytest.mark.fast
def test_sister_preset_dry_run_forwards_what_is_set(tmp_path):
    """The modular preset (ScanQA data, KD fallback on): settings given in the environment reach their stages."""
    teacher, student = fake_checkpoint(tmp_path / "teacher"), fake_checkpoint(tmp_path / "student", "qwen2_vl")
    r, run_dir, manifest, stages = dry_run(tmp_path, "scanqa_modular_cot_inference_pipeline.sh", teacher, student,
                                           LR="2e-4", EPOCHS="2", TEACHER_EPOCHS="1", ALPHA="0.3", TOP_K="8", LIMIT="4",
                                           SEED="7", RECIPE="direct", ANSWER_WEIGHT="4")
    assert manifest["config"]["KD_FALLBACK"] == "1" and manifest["config"]["BENCHMARK"] == "scanqa"
    assert manifest["config"]["AXIS_DEFINITIONS"] == "" and flag(stages["teacher_lora"], "--axis_definitions") is None
    assert flag(stages["teacher_cot"], "--fallback_to_ce") is True and flag(stages["teacher_cot"], "--top_k") == "8"
    assert flag(stages["teacher_lora"], "--epochs") == "1" and flag(stages["student_lora"], "--epochs") == "2"
    for name in ("teacher_lora", *STUDENTS):
        argv = stages[name]
        assert (flag(argv, "--lr"), flag(argv, "--seed"), flag(argv, "--limit")) == ("2e-4", "7", "4")
    check_student_arms(stages, run_dir)
    assert {flag(stages[n], "--epochs") for n in STUDENTS} == {"2"}
    # the answer weight is a student-arm setting: every arm alike, not the teacher LoRA
    assert {flag(stages[n], "--answer_weight") for n in STUDENTS} == {"4"}
    assert flag(stages["teacher_lora"], "--answer_weight") is None and manifest["config"]["ANSWER_WEIGHT"] == "4"
    assert flag(stages["student_cot_sft"], "--alpha") is None
    assert flag(stages["student_kd_blind_cache"], "--alpha") == "0.3"
    assert flag(stages["teacher_cot_blind"], "--top_k") == "8" and flag(stages["teacher_cot_blind"], "--fallback_to_ce")
    assert flag(stages["student_kd"], "--alpha") == "0.3" and flag(stages["split_cot"], "--seed") == "7"
    assert "eval_student_kd_direct_blind" in stages and flag(stages["validate"], "--benchmark") == "scanqa"


@pytest.mark.fast
@pytest.mark.parametrize("script, benchmark, tag", [("cot_inference_pipeline_scanqa.sh", "scanqa", "scanqa"),
                                                    ("blind_cot_inference_pipeline.sh", "hypo3d", "blind-hypo3d")])
def test_presets_dry_run_the_same_study(tmp_path, script, benchmark, tag):
    """The ScanQA and blind presets run the hypo3d preset's stages (same names, same study) on their data: the
    ScanQA sample, or (blind: BENCHMARK=auto) the generated toy world, detected as Hypo3D."""
    teacher, student = fake_checkpoint(tmp_path / "teacher"), fake_checkpoint(tmp_path / "student", "qwen2_vl")
    _, _, reference, ref_stages = dry_run(tmp_path, "cot_inference_pipeline_hypo3d.sh", teacher, student, TOY_SCENES="40")
    _, run_dir, manifest, stages = dry_run(tmp_path, script, teacher, student, TOY_SCENES="40")
    assert f"_{tag}_" in run_dir.name and manifest["config"]["BENCHMARK"] == benchmark
    assert list(stages) == list(ref_stages) and manifest["study"] == reference["study"] == STUDY
    assert flag(stages["validate"], "--benchmark") == benchmark
    # the teacher LoRA learns the generated toy world's gold reasoning (its listings); given data: gold answers
    assert flag(ref_stages["teacher_lora"], "--recipe") == reference["config"]["TEACHER_RECIPE"] == "hypo3d-cot"
    taught = "direct" if benchmark == "scanqa" else "hypo3d-cot"
    assert flag(stages["teacher_lora"], "--recipe") == manifest["config"]["TEACHER_RECIPE"] == taught
    if benchmark == "scanqa":
        assert manifest["config"]["DATA"] == "scanqa_dataset/sample/scanqa.json"
    else:
        assert manifest["config"]["DATA"] == reference["config"]["DATA"]


@pytest.mark.fast
def test_given_splits_preset_dry_run(tmp_path):
    """The randomize preset: no split stage, its own defaults (LIMIT 8, one epoch each), models from the environment."""
    teacher, student = fake_checkpoint(tmp_path / "teacher"), fake_checkpoint(tmp_path / "student")
    r, run_dir, manifest, stages = dry_run(tmp_path, "randomize_test_cot_inference_pipeline.sh", TEACHER=str(teacher),
                                           STUDENT=str(student))
    assert "smoke-hypo3d" in run_dir.name and not {"validate", "split_teacher", "split_cot"} & set(stages)
    assert manifest["config"]["TEST_DATA_PATH"] == "hypo_dataset/sample/splits/test.json"
    train, test = "hypo_dataset/sample/splits/train.json", "hypo_dataset/sample/splits/test.json"
    assert flag(stages["teacher_lora"], "--data") == flag(stages["student_kd"], "--data") == train
    assert flag(stages["eval_student_kd_direct_normal"], "--data") == test and (REPO / test).is_file()
    for name in ("teacher_lora", *STUDENTS):
        assert (flag(stages[name], "--epochs"), flag(stages[name], "--limit")) == ("1", "8")
    assert flag(stages["teacher_cot_blind"], "--data") == train
    assert flag(stages["teacher_lora"], "--recipe") == "direct"  # given files: gold answers, not gold reasoning


@pytest.mark.fast
def test_help_lists_the_settings_without_python():
    for script in sorted(PIPELINES.glob("*.sh")):
        r = subprocess.run(["bash", str(script), "--help"], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHON": "/nonexistent/python"})
        assert r.returncode == 0, (script.name, r.stderr)
        for var in ("SEED", "LIMIT", "LR", "EPOCHS", "NPROC", "LOGIT_CHUNK_ROWS", "RUN_DIR", "python -m vlm"):
            assert var in r.stdout, (script.name, var)


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
