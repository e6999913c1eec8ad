"""Report stage: a hand-built run dir with known answers -> headline numbers, paired CIs, tables, plots, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_vlm
from vlm.data.errors import DataError
from vlm.manifest import Study, declare_study
from vlm.metrics import bootstrap_ci, compute_metrics
from vlm.report import compute_results, render_markdown
from vlm.stages import report

REPO = Path(__file__).resolve().parents[1]
N_BOOT = 200  # small: the machine running the tests has 2 cores

# id -> (reference, question types, change type)
QUESTIONS = {
    "q1": ("two", ["Scale"], "Removal"),
    "q2": ("left", ["Direction"], "Movement"),
    "q3": ("red chair", ["Semantic"], "Attribute"),
    "q4": ("three", ["Scale", "Direction"], "Movement"),
}
WRONG = "purple lamp"
# the distillation study's design, as the pipeline records it in manifest.json (python -m vlm.manifest study)
STUDY = ("prior", "teacher_zeroshot", "teacher_lora", "student_zeroshot", "student_lora", "student_kd")


def _records(correct: set[str], ids=tuple(QUESTIONS), **extra) -> list[dict]:
    return [{"id": i, "benchmark": "hypo3d", "prediction": QUESTIONS[i][0] if i in correct else WRONG,
             "references": [QUESTIONS[i][0]], "question_type": QUESTIONS[i][1], "change_type": QUESTIONS[i][2], **extra}
            for i in ids]


def _eval(run: Path, rel: str, records: list[dict], meta: dict | None = None, metrics: bool = True) -> Path:
    d = run / "eval" / rel
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if metrics:
        m = compute_metrics(records, use_sbert=False, n_bootstrap=N_BOOT, seed=0)
        (d / "metrics.json").write_text(json.dumps({"predictions": str(d / "predictions.jsonl"), **m}, indent=2))
    if meta is not None:
        (d / "eval_meta.json").write_text(json.dumps({"model": "zoo:tiny", "adapter": None, "benchmark": "hypo3d",
                                                      "n": len(records), **meta}))
    return d


def make_run(root: Path) -> Path:
    """EM by hand: teacher direct 75 / 25 (gap 50), teacher CoT 100, student_kd 50 / 33.3 on 3 of 4 ids,
    student_lora predictions without metrics.json (incomplete), the answer prior (blind only, no eval_meta)."""
    run = root / "pipeline_run_test"
    _eval(run, "teacher_zeroshot/direct/normal", _records({"q1", "q2", "q3"}),
          {"variant": "teacher_zeroshot", "recipe": "direct", "mode": "normal"})
    _eval(run, "teacher_zeroshot/direct/blind", _records({"q1"}),
          {"variant": "teacher_zeroshot", "recipe": "direct", "mode": "blind"})
    _eval(run, "teacher_zeroshot/hypo3d-cot/normal", _records(set(QUESTIONS)),
          {"variant": "teacher_zeroshot", "recipe": "hypo3d-cot", "mode": "normal"})
    _eval(run, "student_kd/direct/normal", _records({"q1", "q2"}))  # no eval_meta: names from the path
    _eval(run, "student_kd/direct/blind", _records({"q1"}, ids=("q1", "q2", "q3")))
    _eval(run, "student_lora/direct/normal", _records({"q1"}), metrics=False)
    _eval(run, "prior", _records({"q1", "q2"}, model="prior", mode="blind"))
    logs = {
        "teacher_lora": [{"step": s, "epoch": s / 10, "loss": 2.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0}
                         for s in (1, 2, 3, 4)] + [{"train_runtime": 12.5, "train_loss": 1.0, "step": 4}],
        "student_kd": [{"step": s, "loss": 3.0 / s, "ce_loss": 2.0 / s, "kd_loss": 1.0 / s} for s in (1, 2, 3)],
    }
    for name, rows in logs.items():
        (run / "train" / name).mkdir(parents=True)
        (run / "train" / name / "trainer_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"command": ["bash", "pipelines/x.sh"], "git": {"commit": "abc1234", "dirty": True},
                "start_time": "2026-01-01T00:00:00Z", "stages": {"split": {"status": "ok", "wall_s": 3.2}},
                "study": {"variants": list(STUDY), "blind_only": ["prior"]}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report"))
    assert report.main(report.Config(run_dir=str(run), n_bootstrap=N_BOOT, seed=0)) == 0
    out = run / "report"
    return run, json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def _row(results, table, **match):
    rows = [r for r in results["tables"][table] if all(r[k] == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return rows[0]


def _paired_ci(diffs, seed=0):
    lo, hi = bootstrap_ci(np.array(diffs, dtype=float), N_BOOT, 0.95, seed)
    return [round(100 * lo, 4), round(100 * hi, 4)]


def test_headline_values_and_paired_gap(built):
    _, results, _ = built
    r = _row(results, "headline", variant="teacher_zeroshot", recipe="direct")
    assert r["metric"] == "em"
    assert (r["normal"]["value"], r["blind"]["value"], r["gap"]["value"]) == (75.0, 25.0, 50.0)
    assert r["normal"]["n"] == r["blind"]["n"] == r["gap"]["n_paired"] == 4
    lo, hi = r["gap"]["ci"]
    assert lo <= 50.0 <= hi
    assert r["gap"]["ci"] == _paired_ci([0, 1, 1, 0])  # per-id normal − blind, same ids resampled on both sides
    assert r["normal"]["ci"] is not None and r["normal"]["src"] != r["blind"]["src"]
    # student_kd blind lacks q4: the gap is of the full-set values, the paired CI over the 3 shared ids
    kd = _row(results, "headline", variant="student_kd")
    assert kd["normal"]["value"] == 50.0 and kd["blind"]["value"] == pytest.approx(33.3333)
    assert kd["gap"]["value"] == pytest.approx(16.6667) and kd["gap"]["n_paired"] == 3
    assert kd["gap"]["mean"] == pytest.approx(33.3333)  # q1..q3: normal [1,1,0] − blind [1,0,0]
    prior = _row(results, "headline", variant="prior")
    assert prior["normal"] is None and prior["blind"]["value"] == 50.0 and prior["gap"] is None


def test_gap_ci_is_deterministic_for_a_seed(built):
    run, results, _ = built
    again = compute_results(run, n_bootstrap=N_BOOT, seed=0)
    other = compute_results(run, n_bootstrap=N_BOOT, seed=1)
    key = dict(variant="teacher_zeroshot", recipe="direct")
    assert _row(again, "headline", **key)["gap"] == _row(results, "headline", **key)["gap"]
    gap = _row(other, "headline", **key)["gap"]
    assert gap["ci"] == _paired_ci([0, 1, 1, 0], seed=1) and gap["ci"][0] <= 50.0 <= gap["ci"][1]


def test_tables_cot_types_and_status_lists(built):
    _, results, md = built
    cot = _row(results, "cot_vs_direct", variant="teacher_zeroshot", recipe="hypo3d-cot", mode="normal")
    values = (cot["direct"]["value"], cot["cot"]["value"], cot["diff"]["value"], cot["diff"]["n_paired"])
    assert values == (75.0, 100.0, 25.0, 4)
    assert cot["diff"]["ci"] == _paired_ci([0, 0, 0, 1])
    qt = _row(results, "by_question_type", variant="teacher_zeroshot", recipe="direct")["groups"]
    assert qt["Scale"] == {"normal": {"value": 50.0, "n": 2}, "blind": {"value": 50.0, "n": 2}}  # q1 right, q4 wrong
    ct = _row(results, "by_change_type", variant="teacher_zeroshot", recipe="direct")["groups"]
    assert ct["Movement"]["normal"] == {"value": 50.0, "n": 2} and ct["Removal"]["blind"]["value"] == 100.0
    overall = _row(results, "overall", variant="teacher_zeroshot", recipe="direct", mode="normal")
    assert overall["metrics"]["em"]["value"] == 75.0 and overall["metrics"]["pm"]["value"] == 75.0
    assert [(i["variant"], i["mode"]) for i in results["incomplete"]] == [("student_lora", "normal")]
    missing = {(m["variant"], m["recipe"], m["mode"]) for m in results["missing"]}
    assert ("student_lora", "direct", "blind") in missing and ("teacher_zeroshot", "hypo3d-cot", "blind") in missing
    assert ("teacher_lora", None, None) in missing and ("student_zeroshot", None, None) in missing
    assert not any(m[0] == "prior" for m in missing)
    assert results["warnings"] == []  # every metrics.json matches its predictions.jsonl
    # sources: every number names its metrics.json
    srcs = {s["metrics"] for s in results["sources"].values()}
    assert "eval/teacher_zeroshot/direct/normal/metrics.json" in srcs and "eval/prior/metrics.json" in srcs
    assert results["provenance"]["git_commit"] == "abc1234" and results["provenance"]["git_dirty"] is True
    loss = {r["name"]: r for r in results["training"]}
    assert loss["teacher_lora"]["series"]["loss"]["last"] == 0.5 and loss["teacher_lora"]["train_runtime_s"] == 12.5
    assert set(loss["student_kd"]["series"]) == {"loss", "ce_loss", "kd_loss"}
    # the markdown is rendered from results.json alone
    assert render_markdown(results) == md
    assert "| teacher_zeroshot | direct" in md and "75.0 [" in md and "50.0 [" in md
    assert "eval/teacher_zeroshot/direct/normal/metrics.json" in md and "abc1234 (dirty)" in md
    assert "incomplete: eval/student_lora/direct/normal" in md and "only 3 ids in both modes" in md


def test_plots_are_png(built):
    run, results, md = built
    for name in ("loss_curves", "normal_vs_blind"):
        data = (run / "report" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 100 and height > 100
        assert results["plots"][name] == {"file": f"{name}.png", "skipped": None}
        assert f"![{name}]({name}.png)" in md


def test_empty_run_skips_plots_and_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "loss_curves.png").write_bytes(b"stale")
    assert report.main(report.Config(run_dir=str(tmp_path), out_dir=str(out))) == 0
    md = (out / "report.md").read_text()
    assert "loss_curves.png skipped" in md and "normal_vs_blind.png skipped" in md
    assert not (out / "loss_curves.png").exists() and not (out / "normal_vs_blind.png").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["tables"]["headline"] == [] and results["provenance"] is None
    assert "wrote" in capsys.readouterr().out


def test_malformed_metrics_and_meta_name_the_file(tmp_path):
    run = tmp_path / "run"
    d = _eval(run, "student_kd/direct/normal", _records({"q1"}))
    (d / "metrics.json").write_text('{"benchmark": "hypo3d", "n": 4, "overall": ')
    with pytest.raises(DataError) as e:
        compute_results(run)
    assert str(d / "metrics.json") in str(e.value) and "invalid JSON" in str(e.value)
    (d / "metrics.json").write_text(json.dumps({"benchmark": "hypo3d", "n": "four", "overall": {"em": "high"}}))
    with pytest.raises(DataError) as e:
        compute_results(run)
    assert "key 'n'" in str(e.value) and "key 'overall.em'" in str(e.value)
    (d / "metrics.json").unlink()
    (d / "eval_meta.json").write_text(json.dumps({"variant": "student_kd", "mode": "sideways"}))
    with pytest.raises(DataError) as e:
        compute_results(run)
    assert str(d / "eval_meta.json") in str(e.value) and "key 'mode'" in str(e.value)


def test_cli_exit_codes(tmp_path):
    run = tmp_path / "run"
    d = _eval(run, "teacher_zeroshot/direct/normal", _records({"q1"}))
    _eval(run, "teacher_zeroshot/direct/blind", _records(set()))
    r = run_vlm("report", run, "--n_bootstrap", "50", "--out_dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "| teacher_zeroshot |" in r.stdout and str(tmp_path / "rep" / "report.md") in r.stdout
    (d / "metrics.json").write_text("[1, 2]")
    r = run_vlm("report", run)
    assert r.returncode == 2 and str(d / "metrics.json") in r.stderr and "Traceback" not in r.stderr


def test_stage_never_imports_torch_or_transformers(built):
    run, _, _ = built
    code = ("import sys; from vlm.stages import report; "
            f"report.main(report.Config(run_dir={str(run)!r}, out_dir={str(run / 'report2')!r}, n_bootstrap=20)); "
            "print('HEAVY', 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "HEAVY False False" in r.stdout
    shutil.rmtree(run / "report2")


def _three_variant_run(root: Path, study: Study | None = None) -> Path:
    """zeta and alpha evaluated normal and blind, floor blind only (a baseline without the image)."""
    run = root / "run"
    _eval(run, "zeta/direct/normal", _records({"q1"}))
    _eval(run, "zeta/direct/blind", _records(set()))
    _eval(run, "alpha/direct/normal", _records({"q1", "q2"}))
    _eval(run, "alpha/direct/blind", _records({"q1"}))
    _eval(run, "floor/direct/blind", _records({"q1"}))
    if study is not None:
        declare_study(run, study)
    return run


def test_variants_follow_the_study_declared_in_the_manifest(tmp_path):
    run = _three_variant_run(tmp_path, Study(("zeta", "floor", "alpha", "ghost"), blind_only=("floor",)))
    results = compute_results(run, n_bootstrap=0)
    assert [r["variant"] for r in results["tables"]["headline"]] == ["zeta", "floor", "alpha"]
    assert [r["variant"] for r in results["tables"]["overall"]] == ["zeta", "zeta", "floor", "alpha", "alpha"]
    assert results["sources"]["M1"]["metrics"] == "eval/zeta/direct/normal/metrics.json"
    # declared but never evaluated: missing as a whole; floor is blind only, so no normal is missing for it
    assert results["missing"] == [{"variant": "ghost", "recipe": None, "mode": None,
                                   "reason": "not evaluated in this run"}]
    assert results["study"] == {"variants": ["zeta", "floor", "alpha", "ghost"], "blind_only": ["floor"]}
    md = render_markdown(results)
    assert "- missing: ghost: not evaluated in this run" in md
    assert "- study variants: zeta, floor, alpha, ghost (blind only: floor)" in md


def test_blind_only_is_what_skips_the_normal_blind_pair_check(tmp_path):
    run = _three_variant_run(tmp_path, Study(("zeta", "floor", "alpha")))
    missing = compute_results(run, n_bootstrap=0)["missing"]
    assert missing == [{"variant": "floor", "recipe": "direct", "mode": "normal", "reason": "no eval directory"}]


def test_without_a_study_variants_sort_by_name_and_nothing_is_declared_missing(tmp_path):
    run = _three_variant_run(tmp_path)
    results = compute_results(run, n_bootstrap=0)
    assert [r["variant"] for r in results["tables"]["headline"]] == ["alpha", "floor", "zeta"]
    assert results["missing"] == [] and results["study"] is None  # floor: evaluated blind only, so blind only


def test_malformed_study_in_the_manifest_names_the_key(tmp_path):
    run = _three_variant_run(tmp_path)
    (run / "manifest.json").write_text(json.dumps({"study": {"variants": ["alpha", "alpha"], "blind_only": ["x"]}}))
    with pytest.raises(DataError) as e:
        compute_results(run)
    assert str(e.value) == f"{run / 'manifest.json'}: key 'study.variants': names a variant twice: alpha alpha"
