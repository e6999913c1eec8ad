"""``python -m vlm.manifest study``: the study's design (variants, blind-only ones, compared pairs, gap-recovered
ends) recorded in manifest.json, idempotent on resume; bad flags one line each, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO
from vlm.data.errors import DataError
from vlm.manifest import read_study

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


def test_comparisons_and_gap_recovered_are_recorded_and_a_rerun_changes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    flags = ["--variants", *STUDY, "student_cot_sft", "--blind_only", "prior",
             "--compare", "student_kd:student_lora", "student_kd:student_cot_sft",
             "--gap_recovered", "student_zeroshot:teacher_lora"]
    r = _study(run, *flags)
    assert r.returncode == 0, r.stderr
    first = (run / "manifest.json").read_bytes()
    assert json.loads(first)["study"] == {
        "variants": [*STUDY, "student_cot_sft"], "blind_only": ["prior"],
        "compare": [["student_kd", "student_lora"], ["student_kd", "student_cot_sft"]],
        "gap_recovered": {"low": "student_zeroshot", "high": "teacher_lora"}}
    r = _study(run, *flags)
    assert r.returncode == 0 and r.stderr == "" and (run / "manifest.json").read_bytes() == first
    study = read_study(run)
    assert study.compare == (("student_kd", "student_lora"), ("student_kd", "student_cot_sft"))
    assert study.gap_recovered == ("student_zeroshot", "teacher_lora")


def test_bad_comparison_flags_exit_2_one_line_each_and_write_nothing(tmp_path):
    base = ["--variants", "a", "b", "c"]
    for flags, message in ((["--compare", "a"], "flags: --compare: expected VARIANT:VARIANT, got 'a'"),
                           (["--compare", "a:b:c"], "flags: --compare: expected VARIANT:VARIANT, got 'a:b:c'"),
                           (["--compare", "a:"], "flags: --compare: expected VARIANT:VARIANT, got 'a:'"),
                           (["--compare", "a:z"], "flags: --compare: not among the variants: z"),
                           (["--compare", "a:a"], "flags: --compare: compares a variant with itself: a:a"),
                           (["--compare", "a:b", "c:b", "a:b"], "flags: --compare: names a pair twice: a:b"),
                           (["--gap_recovered", "a"], "flags: --gap_recovered: expected VARIANT:VARIANT, got 'a'"),
                           (["--gap_recovered", "a:q"], "flags: --gap_recovered: not among the variants: q")):
        r = _study(tmp_path / "run", *base, *flags)
        assert r.returncode == 2 and r.stderr == message + "\n", (flags, r.stderr)
    r = _study(tmp_path / "run", *base, "--compare", "x", "a:a", "--gap_recovered", "b:b")  # every problem, once
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 3 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_malformed_comparison_in_the_manifest_names_the_key(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"study": {"variants": ["a", "b"], "compare": [["a", "c"]],
                                                                  "gap_recovered": {"low": "a"}}}))
    with pytest.raises(DataError) as e:
        read_study(tmp_path)
    assert str(e.value).splitlines() == [
        f"{tmp_path / 'manifest.json'}: key 'study.compare': not among the variants: c",
        f"{tmp_path / 'manifest.json'}: key 'study.gap_recovered': expected {{low, high}}, got {{\"low\": \"a\"}}"]
