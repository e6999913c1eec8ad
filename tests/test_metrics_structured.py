"""Metrics of the structured benchmarks (A-OKVQA MC / DA, LLaVA-CoT) and has_reasoning: hand-computed cases,
the predictions.jsonl round trip, record validation and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, run_vlm

import vlm.metrics as M
from vlm.benchmarks import BENCHMARKS
from vlm.benchmarks import aokvqa as ak
from vlm.data.errors import DataError
from vlm.data.sample import Sample

AOKVQA_SAMPLE = REPO / "aokvqa_dataset" / "sample" / "aokvqa_val.json"


def _a(qid: str, pred: str, choices: list[str], idx: int, direct: list[str], difficult: bool = False, **extra) -> dict:
    """An A-OKVQA prediction record, built the way evaluate builds it."""
    sample = Sample(id=qid, benchmark="aokvqa", scene_id="1", image=None, question=f"question {qid}?",
                    answers=[choices[idx], *direct],
                    context={"choices": choices, "correct_choice_idx": idx, "direct_answers": direct,
                             "difficult_direct_answer": difficult, "rationales": [], "image_id": 1})
    return M.prediction_record(sample, pred, **extra)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# Per question: MC (strict: cleaned exact choice or option letter) and DA = min(1, matches / 3).
AOK = [
    # exact choice after cleaning ('Cab.' -> 'cab'): MC 1; 'cab' is 4 of the direct answers: DA min(1, 4/3) = 1
    _a("q1", "Cab.", ["skateboarder", "train", "delivery", "cab"], 3,
       ["cab"] * 4 + ["taxi"] * 3 + ["bus", "ride", "train"]),
    # option letter '(b)' -> choices[1] = 'bus', correct: MC 1; '(b)' is no direct answer: DA 0
    _a("q2", "(b)", ["car", "bus", "train", "bike"], 1, ["bus"] * 8 + ["coach"] * 2),
    # a wrong choice: MC 0; 'blue' is 2 of the direct answers: DA 2/3
    _a("q3", "blue", ["red", "blue", "green", "white"], 0, ["red"] * 6 + ["blue"] * 2 + ["maroon"] * 2),
    # free text naming no choice: MC 0 (unmapped = wrong); 'the kitchen' is 1 direct answer: DA 1/3
    _a("q4", "the kitchen", ["kitchen", "bathroom", "garage", "bedroom"], 0, ["kitchen"] * 9 + ["the kitchen"]),
    # difficult question, right choice: MC 1; DA would be 1 ('dog' x3) but difficult questions are not scored
    _a("q5", "dog", ["dog", "cat", "horse", "cow"], 0, ["dog"] * 3 + ["puppy"] * 3 + ["pet"] * 4, difficult=True),
]
# MC over all 5: (1 + 1 + 0 + 0 + 1) / 5 = 60 %  (50 % if the difficult question were dropped from MC)
# DA over the 4 non-difficult: (1 + 0 + 2/3 + 1/3) / 4 = 50 %  (60 % if the difficult one counted)
AOK_MC, AOK_DA, AOK_DA_VALUES = 60.0, 50.0, [1.0, 0.0, 2 / 3, 1 / 3]


# -- A-OKVQA ------------------------------------------------------------------------------------

def test_aokvqa_record_carries_the_scoring_keys() -> None:
    rec = AOK[0]
    assert rec["choices"] == ["skateboarder", "train", "delivery", "cab"] and rec["correct_choice_idx"] == 3
    assert rec["direct_answers"][0] == "cab" and rec["difficult_direct_answer"] is False
    assert rec["references"][0] == "cab" and "rationales" not in rec and "image_id" not in rec


def test_aokvqa_mc_da_by_hand() -> None:
    rows = M.score_records(AOK, "aokvqa", use_sbert=False)
    assert [r["mc"] for r in rows] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert [r["da"] for r in rows[:4]] == pytest.approx(AOK_DA_VALUES)
    assert math.isnan(rows[4]["da"])  # difficult: not applicable, not 0
    r = M.compute_metrics(AOK, use_sbert=False, n_bootstrap=300, seed=5)
    assert r["benchmark"] == "aokvqa" and r["n"] == 5 and r["n_da"] == 4
    assert r["overall"] == {"mc": AOK_MC, "da": AOK_DA}
    # DA's CI resamples the 4 non-difficult questions only; MC's all 5.
    low, high = M.bootstrap_ci(AOK_DA_VALUES, 300, 0.95, 5)
    assert r["ci"]["da"] == [M.aggregate._pct(low), M.aggregate._pct(high)]
    low, high = M.bootstrap_ci([1, 1, 0, 0, 1], 300, 0.95, 5)
    assert r["ci"]["mc"] == [M.aggregate._pct(low), M.aggregate._pct(high)]
    # The same numbers as the benchmark module's official-metric helpers on the Samples.
    samples = [M.Prediction.from_dict(d).as_sample() for d in AOK]
    preds = [d["prediction"] for d in AOK]
    assert r["overall"]["mc"] == pytest.approx(100 * ak.mc_accuracy(preds, samples))
    assert r["overall"]["da"] == pytest.approx(100 * ak.da_accuracy(preds, samples))
    json.dumps(r, allow_nan=False)


def test_aokvqa_all_difficult_da_is_nan_without_ci() -> None:
    recs = [{**AOK[4], "id": f"d{i}"} for i in range(3)]
    r = M.compute_metrics(recs, use_sbert=False, n_bootstrap=50)
    assert r["n_da"] == 0 and math.isnan(r["overall"]["da"]) and r["overall"]["mc"] == 100.0
    assert "da" not in r["ci"] and "mc" in r["ci"]
    table = M.format_table(r)
    assert "da over 0" in table and "nan" not in table.lower()


class _BagOfWords:
    """Stand-in for the SBERT model: unit-norm bag-of-words vectors (cosine = word overlap)."""

    def encode(self, texts, **_):
        vocab = sorted({w for t in texts for w in t.lower().split()})
        emb = np.array([[float(w in t.lower().split()) for w in vocab] for t in texts]) + 1e-9
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_aokvqa_sbert_mapped_mc(monkeypatch) -> None:
    monkeypatch.setattr(M.text, "load_sbert", lambda name=None: _BagOfWords())
    r = M.compute_metrics(AOK, n_bootstrap=0)
    # Mapping by embedding only changes q4: 'the kitchen' is nearest to 'kitchen' (correct) -> 4/5.
    # q3 'blue' is a choice already (wrong) and stays wrong; the strict mc is unchanged.
    assert r["overall"]["mc"] == AOK_MC and r["overall"]["mc_sbert_mapped"] == 80.0
    assert 0.0 < r["overall"]["sbert"] <= 100.0
    assert list(r["overall"]) == ["mc", "da", "mc_sbert_mapped", "sbert"]


def test_aokvqa_jsonl_round_trip(tmp_path: Path) -> None:
    samples = ak.load_aokvqa(AOKVQA_SAMPLE)  # the committed toy sample, 100 questions, some difficult
    kinds = [lambda s: s.answers[0], lambda s: "ABCD"[s.context["correct_choice_idx"]],
             lambda s: s.context["direct_answers"][-1], lambda s: "no idea"]
    preds = [kinds[i % 4](s) for i, s in enumerate(samples)]
    phases = lambda p: [{"name": "answer", "output": f"<REASONING>look</REASONING> <CONCLUSION>{p}</CONCLUSION>"}]
    records = [M.prediction_record(s, p, recipe="llava-cot", mode="normal", phases=phases(p), seconds=0.1)
               for s, p in zip(samples, preds)]
    path = _write_jsonl(tmp_path / "predictions.jsonl", records)
    loaded = M.load_predictions(path)
    assert loaded[0].context == {k: records[0][k] for k in BENCHMARKS["aokvqa"].record_keys}
    assert loaded[0].phases == records[0]["phases"]
    from_file = M.compute_metrics(loaded, use_sbert=False, n_bootstrap=100)
    assert from_file == M.compute_metrics(records, use_sbert=False, n_bootstrap=100)
    assert from_file["n_da"] == sum(not s.context["difficult_direct_answer"] for s in samples) < len(samples)
    assert from_file["overall"]["mc"] == pytest.approx(100 * ak.mc_accuracy(preds, samples), abs=1e-4)
    assert from_file["overall"]["da"] == pytest.approx(100 * ak.da_accuracy(preds, samples), abs=1e-4)
    assert from_file["overall"]["has_reasoning"] == 100.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"choices": None}, "key 'choices': missing (written by prediction_record from the A-OKVQA sample)"),
        ({"choices": ["a", 3]}, "key 'choices': expected a non-empty list of strings"),  # "" is allowed (real files)
        ({"correct_choice_idx": 4}, "key 'correct_choice_idx': expected an integer in 0..3, got 4"),
        ({"correct_choice_idx": True}, "key 'correct_choice_idx': expected an integer in 0..3, got true"),
        ({"direct_answers": []}, "key 'direct_answers': expected a non-empty list of strings, got []"),
        ({"difficult_direct_answer": "no"}, "key 'difficult_direct_answer': expected true or false, got \"no\""),
        ({"difficult_direct_answer": None}, "key 'difficult_direct_answer': missing"),
        ({"phases": [{"name": "answer"}]}, "key 'phases': item 0: 'output': expected a string, got null"),
    ],
)
def test_bad_aokvqa_record_one_clear_error(tmp_path: Path, change: dict, message: str) -> None:
    bad = {k: v for k, v in {**AOK[1], **change}.items() if v is not None or k not in change}
    path = _write_jsonl(tmp_path / "p.jsonl", [AOK[0], bad])
    with pytest.raises(DataError) as exc:
        M.load_predictions(path)
    lines = exc.value.render().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: line 2: {message}"), lines


def test_aokvqa_keys_checked_only_for_aokvqa(tmp_path: Path) -> None:
    rec = {"id": "x", "benchmark": "scanqa", "prediction": "a", "references": ["a"]}
    assert M.load_predictions(_write_jsonl(tmp_path / "p.jsonl", [rec]))[0].context == {}
    with pytest.raises(ValueError, match="lacks choices, correct_choice_idx"):
        M.compute_metrics([rec], benchmark="aokvqa", use_sbert=False)


# -- LLaVA-CoT ------------------------------------------------------------------------------------

def _l(id: str, pred: str, ref: str, qtype: str) -> dict:
    return {"id": id, "benchmark": "llava-cot", "prediction": pred, "references": [ref], "question_type": [qtype]}


LLAVA = [
    _l("l1", "Two.", "two", "count"),  # em 1 after PTB cleaning
    _l("l2", "red", "blue", "colour"),  # em 0
    _l("l3", "The cat sits on the mat.", "the cat sits on the mat", "scene"),  # em 1: a sentence answer
]


def test_llava_cot_em_and_caption_metrics() -> None:
    r = M.compute_metrics(LLAVA, use_sbert=False, n_bootstrap=100)
    assert r["overall"]["em"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    for key in ("bleu-1", "bleu-2", "bleu-3", "bleu-4", "rouge-l", "cider"):
        assert key in r["overall"]
    assert 0.0 < r["overall"]["bleu-1"] < 100.0
    assert set(r["ci"]) == {"em"}  # corpus metrics have no per-sample CI
    scene = r["by_question_type"]["scene"]
    assert scene["n"] == 1 and scene["em"] == 100.0 and scene["bleu-1"] == pytest.approx(100.0, abs=1e-3)
    assert r["by_question_type"]["colour"]["bleu-1"] == pytest.approx(0.0, abs=1e-3)
    json.dumps(r, allow_nan=False)


# -- has_reasoning ---------------------------------------------------------------------------------

def _ph(*outputs: str) -> list[dict]:
    return [{"name": f"phase{i}", "output": o} for i, o in enumerate(outputs)]


@pytest.mark.parametrize(
    "phases, expected",
    [
        (_ph("<SUMMARY>s</SUMMARY> <REASONING> Chair is left. </REASONING> <CONCLUSION>left</CONCLUSION>"), "Chair is left."),
        (_ph("<REASONING>  </REASONING><CONCLUSION>left</CONCLUSION>"), ""),  # tag present but empty
        (_ph("<SUMMARY>s</SUMMARY> <REASONING>The chair is left of"), "The chair is left of"),  # truncated
        (_ph("I see a chair.", "  ", "left"), "I see a chair."),  # scratchpad: every phase but the last
        (_ph("notes", "more notes", "left"), "notes\nmore notes"),
        (_ph("left"), ""),  # direct answer, one phase, no tags
        (_ph("<REASONING>r</REASONING>", "left"), "r"),  # a tag in an earlier phase
        (_ph("scratch", "<REASONING></REASONING> left"), ""),  # a tag wins over the scratchpad rule
        (_ph("<REASONING>a</REASONING> x <REASONING>b"), "a\nb"),  # every tag
        ([], ""),
        (_ph("The cab is yellow.\nAnswer: yellow"), "The cab is yellow."),  # rationale before the answer line
        (_ph("Answer: yellow"), ""),  # the answer line alone
        (_ph("plan", "why\nAnswer: yes"), "plan\nwhy"),
    ],
)
def test_reasoning_part(phases: list[dict], expected: str) -> None:
    assert M.reasoning_part(phases) == expected


def test_has_reasoning_metric() -> None:
    recs = [
        {**LLAVA[0], "phases": _ph("<REASONING>two chairs</REASONING><CONCLUSION>two</CONCLUSION>")},  # 1
        {**LLAVA[1], "phases": _ph("<REASONING></REASONING><CONCLUSION>red</CONCLUSION>")},  # 0
        {**LLAVA[2], "phases": _ph("The cat sits on the mat.")},  # 0: direct
    ]
    r = M.compute_metrics(recs, use_sbert=False, n_bootstrap=50)
    assert r["overall"]["has_reasoning"] == pytest.approx(100 / 3, abs=1e-3) and "has_reasoning" in r["ci"]
    assert r["by_question_type"]["count"]["has_reasoning"] == 100.0
    # A record without phases (e.g. the answer-prior baseline): no has_reasoning metric at all.
    r = M.compute_metrics(recs[:2] + [LLAVA[2]], use_sbert=False, n_bootstrap=0)
    assert "has_reasoning" not in r["overall"]
    for bench in BENCHMARKS:
        assert "has_reasoning" in BENCHMARKS[bench].per_sample_metrics and bench in M.HEADLINE


def test_metric_in_some_rows_only_is_an_error(monkeypatch) -> None:
    rows = [{"em": 1.0, "has_reasoning": 1.0}, {"em": 0.0}]
    monkeypatch.setattr(M.aggregate, "score_records", lambda *a, **k: rows)
    with pytest.raises(ValueError, match="has_reasoning missing from some rows"):
        M.compute_metrics(LLAVA[:2], use_sbert=False)


# -- CLI ------------------------------------------------------------------------------------------

def test_cli_aokvqa(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "preds.jsonl", AOK)
    proc = run_vlm("metrics", path, "--no_sbert", "--n_bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["overall"] == {"mc": AOK_MC, "da": AOK_DA} and out["n_da"] == 4 and out["sbert_model"] is None
    assert "aokvqa: 5 predictions  (da over 4)" in proc.stdout and "60.00" in proc.stdout


def test_cli_all_difficult_writes_null(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "preds.jsonl", [{**AOK[4], "id": f"d{i}"} for i in range(2)])
    proc = run_vlm("metrics", path, "--no_sbert", "--n_bootstrap", "20")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["overall"]["da"] is None and out["n_da"] == 0


def test_cli_benchmark_override_on_other_records_exits_2(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "preds.jsonl", LLAVA)
    proc = run_vlm("metrics", path, "--no_sbert", "--benchmark", "aokvqa")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}: benchmark 'aokvqa': A-OKVQA record 'l1' lacks choices" in proc.stderr


def test_cli_aokvqa_with_packaged_minilm(tmp_path: Path) -> None:
    """The real SBERT path (packaged MiniLM, offline): free text 'the kitchen' maps to 'kitchen'."""
    path = _write_jsonl(tmp_path / "preds.jsonl", AOK)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = run_vlm("metrics", path, "--n_bootstrap", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["overall"]["mc"] == AOK_MC and out["overall"]["mc_sbert_mapped"] == 80.0
    assert 50.0 < out["overall"]["sbert"] <= 100.0
    assert "mc_sbert_mapped" in proc.stdout
