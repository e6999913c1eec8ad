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


# ------------------------------------------------------------------ declared comparisons and "gap recovered"
def _trained(run: Path, variant: str, recipe: str) -> None:
    """train/<variant>/train_config.json as finetune writes it: the recipe it trained on in recipe_resolved."""
    (run / "train" / variant).mkdir(parents=True)
    config = {"recipe": "direct", "recipe_resolved": recipe}
    (run / "train" / variant / "train_config.json").write_text(json.dumps(config))


def _comparison_run(root: Path) -> Path:
    """EM by hand (q1..q4). Names unknown to the report code: everything it compares comes from the manifest.
        teacher (trained on direct)  direct 100 / blind 25, hypo3d-cot 100, scratchpad 25
        zs      (never trained)      direct 0, hypo3d-cot 25 ({q1}), scratchpad 25
        arm_a   (trained on CoT)     hypo3d-cot 75 ({q1,q2,q3}) / blind 25 ({q1}), direct 25 (a distractor)
        arm_b   (trained on direct)  direct 25 ({q1}) / blind 0, hypo3d-cot 100 (a distractor)"""
    run = root / "cmp"
    every = set(QUESTIONS)
    for rel, correct in (("teacher/direct/normal", every), ("teacher/direct/blind", {"q1"}),
                         ("teacher/hypo3d-cot/normal", every), ("teacher/scratchpad/normal", {"q1"}),
                         ("zs/direct/normal", set()), ("zs/hypo3d-cot/normal", {"q1"}),
                         ("zs/scratchpad/normal", {"q1"}),
                         ("arm_a/hypo3d-cot/normal", {"q1", "q2", "q3"}), ("arm_a/hypo3d-cot/blind", {"q1"}),
                         ("arm_a/direct/normal", {"q1"}),
                         ("arm_b/direct/normal", {"q1"}), ("arm_b/direct/blind", set()),
                         ("arm_b/hypo3d-cot/normal", every)):
        _eval(run, rel, _records(correct))
    _trained(run, "teacher", "direct")
    _trained(run, "arm_a", "hypo3d-cot")
    _trained(run, "arm_b", "direct")
    declare_study(run, Study(("teacher", "zs", "arm_b", "arm_a"), compare=(("arm_a", "arm_b"), ("arm_a", "zs")),
                             gap_recovered=("zs", "teacher")))
    return run


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    run = _comparison_run(tmp_path_factory.mktemp("compare"))
    results = compute_results(run, n_bootstrap=N_BOOT, seed=0)
    return run, results, render_markdown(results)


def test_comparison_pairs_each_side_on_its_trained_recipe_with_a_paired_ci(compared):
    _, results, md = compared
    rows = {(r["a"], r["b"], r["mode"]): r for r in results["tables"]["comparisons"]}
    assert list(rows) == [("arm_a", "arm_b", "normal"), ("arm_a", "arm_b", "blind"), ("arm_a", "zs", "normal"),
                          ("arm_a", "zs", "blind")]
    r = rows["arm_a", "arm_b", "normal"]  # arm_a on hypo3d-cot [1,1,1,0] vs arm_b on direct [1,0,0,0]
    assert (r["a_recipe"], r["b_recipe"], r["metric"]) == ("hypo3d-cot", "direct", "em")
    assert (r["a_value"]["value"], r["b_value"]["value"], r["diff"]["value"]) == (75.0, 25.0, 50.0)
    assert r["diff"]["n_paired"] == 4 and r["diff"]["mean"] == 50.0
    assert r["diff"]["ci"] == _paired_ci([0, 1, 1, 0]) and r["diff"]["ci"][0] <= 50.0 <= r["diff"]["ci"][1]
    assert r["recipe_from"] == {"a": "train/arm_a/train_config.json", "b": "train/arm_b/train_config.json"}
    r = rows["arm_a", "arm_b", "blind"]  # [1,0,0,0] vs [0,0,0,0]
    assert (r["diff"]["value"], r["diff"]["ci"]) == (25.0, _paired_ci([1, 0, 0, 0]))
    # zs was never trained: compared on arm_a's recipe, hypo3d-cot [1,1,1,0] vs [1,0,0,0]; no blind zs evaluation
    r = rows["arm_a", "zs", "normal"]
    assert (r["b_recipe"], r["b_value"]["value"], r["diff"]["value"]) == ("hypo3d-cot", 25.0, 50.0)
    assert r["recipe_from"]["b"] == "not trained: arm_a's recipe"
    blind = rows["arm_a", "zs", "blind"]
    assert blind["b_value"] is None and blind["diff"] is None and blind["a_value"]["value"] == 25.0
    assert "## Comparisons (declared in manifest.json)" in md
    assert "| arm_a - arm_b | normal | em     | hypo3d-cot | direct     |" in md
    assert "- recipe of zs: hypo3d-cot (not trained: arm_a's recipe)" in md
    assert "Note: arm_a - zs (blind): only one side was evaluated." in md
    assert md.index("## Headline") < md.index("## Comparisons") < md.index("## All overall metrics")
    assert results["study"]["compare"] == [["arm_a", "arm_b"], ["arm_a", "zs"]]


def test_gap_recovered_per_headline_row_on_the_rows_recipe(compared):
    _, results, md = compared
    got = {(r["variant"], r["recipe"]): r["gap_recovered"]["value"] for r in results["tables"]["headline"]}
    assert got == {("teacher", "direct"): 100.0, ("teacher", "hypo3d-cot"): 100.0, ("teacher", "scratchpad"): None,
                   ("zs", "direct"): 0.0, ("zs", "hypo3d-cot"): 0.0, ("zs", "scratchpad"): None,
                   ("arm_b", "direct"): 25.0, ("arm_b", "hypo3d-cot"): 100.0,
                   ("arm_a", "direct"): 25.0, ("arm_a", "hypo3d-cot"): pytest.approx(66.6667)}  # (75-25)/(100-25)
    row = _row(results, "headline", variant="arm_a", recipe="direct")  # direct: zs 0, teacher 100
    assert row["gap_recovered"] == {"value": 25.0, "low": 0.0, "high": 100.0, "note": None}
    flat = _row(results, "headline", variant="zs", recipe="scratchpad")["gap_recovered"]  # zs = teacher = 25
    assert flat["value"] is None and "~0" in flat["note"]
    assert "gap recovered %" in md and " 66.7 | M12, M13 |" in md and " n/a | M4 " in md
    assert "gap recovered %: (variant - zs) / (teacher - zs) x 100" in md
    assert "Note: zs / scratchpad: gap recovered n/a: high - low = 0, ~0: nothing to recover." in md
    # the teacher's normal - blind gap on a recipe, with its paired CI, stays in the headline table
    gap = _row(results, "headline", variant="teacher", recipe="direct")["gap"]
    assert (gap["value"], gap["ci"]) == (75.0, _paired_ci([0, 1, 1, 1]))


def test_gap_recovered_by_hand():
    from vlm.report.stats import MIN_SPAN, gap_recovered

    assert gap_recovered(50.0, 25.0, 75.0) == {"value": 50.0, "low": 25.0, "high": 75.0, "note": None}
    assert gap_recovered(20.0, 40.0, 80.0)["value"] == -50.0  # below the low end: negative
    assert gap_recovered(90.0, 40.0, 80.0)["value"] == 125.0  # above the high end: over 100
    for high in (40.0, 40.0 + MIN_SPAN / 2):
        g = gap_recovered(60.0, 40.0, high)
        assert g["value"] is None and "~0" in g["note"]
    reversed_ = gap_recovered(50.0, 60.0, 40.0)
    assert reversed_["value"] == 50.0 and "negative gap" in reversed_["note"]
    assert gap_recovered(None, 40.0, 80.0)["value"] is None


def test_a_compared_variant_without_recipe_resolved_names_the_file(tmp_path):
    run = _comparison_run(tmp_path)
    (run / "train" / "arm_b" / "train_config.json").write_text(json.dumps({"recipe": "direct"}))
    with pytest.raises(DataError) as e:
        compute_results(run, n_bootstrap=0)
    path = run / "train" / "arm_b" / "train_config.json"
    assert str(e.value) == f"{path}: key 'recipe_resolved': missing or not a recipe name"


def test_without_declared_pairs_there_is_no_comparison_nor_gap_recovered(built):
    _, results, md = built
    assert results["tables"]["comparisons"] == [] and "## Comparisons" not in md
    assert all("gap_recovered" not in r for r in results["tables"]["headline"]) and "gap recovered" not in md


def test_the_report_code_names_no_study_variant():
    """The study's design reaches the report through manifest.json only."""
    study = (REPO / "pipelines" / "lib" / "study.sh").read_text()
    variants = study.split("VARIANTS=(", 1)[1].split(")", 1)[0].split()
    assert "student_kd" in variants
    for path in [*(REPO / "vlm" / "report").glob("*.py"), REPO / "vlm" / "stages" / "report.py"]:
        text = path.read_text()
        assert not [v for v in variants if v in text], path
