"""``python -m vlm.manifest study``: the study's design recorded in manifest.json, idempotent on resume."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import REPO

STUDY = ["prior", "teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora", "student_kd"]


def _study(run_dir, *flags):
    return subprocess.run([sys.executable, "-m", "vlm.manifest", "study", str(run_dir), *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_study_is_recorded_once_and_a_rerun_changes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"command": "bash x.sh", "stages": {"split": {"status": "done"}}}))
    flags = ["--variants", *STUDY, "--blind_only", "prior"]
    r = _study(run, *flags)
    assert r.returncode == 0, r.stderr
    first = (run / "manifest.json").read_bytes()
    manifest = json.loads(first)
    assert manifest["study"] == {"variants": STUDY, "blind_only": ["prior"]}
    assert manifest["command"] == "bash x.sh" and manifest["stages"] == {"split": {"status": "done"}}
    stamp = (run / "manifest.json").stat().st_mtime_ns
    r = _study(run, *flags)  # a resumed pipeline declares it again
    assert r.returncode == 0 and r.stderr == ""
    assert (run / "manifest.json").read_bytes() == first and (run / "manifest.json").stat().st_mtime_ns == stamp
    r = _study(run, "--variants", "baseline", "finetuned")  # a different design replaces it, and says so
    assert r.returncode == 0 and "replaced by" in r.stderr
    assert json.loads((run / "manifest.json").read_text())["study"] == {"variants": ["baseline", "finetuned"],
                                                                      "blind_only": []}


def test_bad_study_flags_exit_2_and_write_nothing(tmp_path):
    for flags, message in ((["--variants", "a", "b", "--blind_only", "c"], "--blind_only: not among the variants: c"),
                           (["--variants", "a", "a"], "--variants: names a variant twice: a a"),
                           (["--variants", "a/b"], "--variants: expected a list of variant names")):
        r = _study(tmp_path / "run", *flags)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
