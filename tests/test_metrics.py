"""Metrics: hand-computed cases from the official Hypo3D / ScanQA code, aggregation, bootstrap, CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlm import metrics as M
from vlm.data.errors import DataError
from vlm.benchmarks.hypo3d import (
    change_category,
    hypo3d_exact_match,
    hypo3d_partial_match,
    normalize_hypo3d,
    partial_match_score,
)
from vlm.benchmarks.scanqa import scanqa_exact_match
from vlm.metrics import (
    bootstrap_ci,
    caption_scores,
    compute_metrics,
    infer_benchmark,
    load_predictions,
    packaged_minilm_path,
    ptb_tokenize,
    ptb_tokenize_batch,
    ptb_tokenize_java,
    resolve_sbert_model,
)

REPO = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is not on PATH")


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _h(id: str, pred: str, ref: str, qtypes: list[str], change: str | None) -> dict:
    return {"id": id, "benchmark": "hypo3d", "prediction": pred, "references": [ref],
            "question_type": qtypes, "change_type": change}


# -- Hypo3D normalisation (derived by hand from metric_compute.py) --------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("To the front and left.", "front left"),  # 'to the' → '', 'front and left' → 'front left'
        ("Two", "2"),
        ("near the door", "door"),  # 'near' → '', article dropped, stripped
        ("two chairs", "2"),  # official quirk: words after a number are dropped
        ("in front of the sofa", "front sofa"),  # longest phrase 'in front of' wins over 'front of'
        ("The chair is behind and to the left", "chair is back left"),
        ("three", "3"),
        ("3", "3"),
        ("northwest", "front left"),  # 'northwest' is tried before 'north'
        ("North-west", "frontleft"),  # \b splits at '-': north→front, west→left, then '-' removed
        ("On the left side", "left side"),  # one pass: 'on the left' consumed, 'left side' never seen
        ("Bottom", "back"),
        ("", ""),
    ],
)
def test_normalize_official(text: str, expected: str) -> None:
    assert normalize_hypo3d(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("To the left of the chair", "left of  chair"),  # no phrase table; articles removed, no strip
        ("Three chairs.", "3"),  # starts with a number word: only the first word is kept
        ("The chair is behind", " chair is behind"),
        ("front 2 chairs", "front 2 chairs"),  # words after a number are kept
    ],
)
def test_normalize_per_model(text: str, expected: str) -> None:
    assert normalize_hypo3d(text, "per_model") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("two chairs", "2 chairs"),  # words after a number are kept (official and per_model: '2')
        ("To the front and left.", "front left"),  # the phrase table, as metric_compute.py
        ("Behind the sofa", "back sofa"),
        ("There are three", "there are 3"),
    ],
)
def test_normalize_per_model_6152577(text: str, expected: str) -> None:
    assert normalize_hypo3d(text, "per_model_6152577") == expected


def test_per_model_variants_differ() -> None:
    assert normalize_hypo3d("two chairs", "per_model") == normalize_hypo3d("two chairs") == "2"
    assert normalize_hypo3d("To the front and left.", "per_model") == "front and left"
    r = compute_metrics(HYPO, use_sbert=False, n_bootstrap=0, normalization="per_model_6152577")
    assert r["normalization"] == "per_model_6152577"


def test_normalize_unknown_variant() -> None:
    with pytest.raises(ValueError, match="per_model"):
        normalize_hypo3d("x", "fancy")  # type: ignore[arg-type]


def test_exact_and_partial_match() -> None:
    assert hypo3d_exact_match("three", "3") == 1.0
    assert hypo3d_exact_match("To the front and left.", "front left") == 1.0
    assert hypo3d_exact_match("front", "front left") == 0.0
    assert hypo3d_partial_match("front", "front left") == 0.5
    assert hypo3d_partial_match("front left", "front") == 1.0  # recall-like: extra pred words are free
    assert partial_match_score("left left", "left right") == 0.5  # sets, divided by ref token count
    assert partial_match_score("a", "") == 0.0  # empty reference scores 0, not an error


def test_change_category() -> None:
    assert change_category("Object Movement Change") == "Movement"
    assert change_category("Movement") == "Movement"


# -- Hypo3D aggregation ---------------------------------------------------------------------------

HYPO = [
    _h("q1", "To the front and left.", "front left", ["Direction"], "Movement"),  # em 1, pm 1
    _h("q2", "front", "front left", ["Direction", "Semantic"], "Movement"),  # em 0, pm .5
    _h("q3", "two chairs", "3", ["Scale"], "Object Removal Change"),  # em 0, pm 0
    _h("q4", "near the door", "door", ["Semantic"], "Removal"),  # em 1, pm 1
]


def test_hypo3d_aggregation_by_hand() -> None:
    r = compute_metrics(HYPO, use_sbert=False, n_bootstrap=200)
    assert r["benchmark"] == "hypo3d" and r["n"] == 4
    assert r["overall"] == {"em": 50.0, "pm": 62.5}
    assert set(r["ci"]) == {"em", "pm"}
    qt = r["by_question_type"]
    assert qt["Direction"] == {"n": 2, "em": 50.0, "pm": 75.0}
    assert qt["Semantic"] == {"n": 2, "em": 50.0, "pm": 75.0}  # q2 counts here too (multi-label)
    assert qt["Scale"] == {"n": 1, "em": 0.0, "pm": 0.0}
    ct = r["by_change_type"]
    assert ct == {"Movement": {"n": 2, "em": 50.0, "pm": 75.0}, "Removal": {"n": 2, "em": 50.0, "pm": 50.0}}
    both = r["by_change_and_question_type"]
    assert both["Movement"]["Semantic"] == {"n": 1, "em": 0.0, "pm": 50.0}
    assert both["Removal"] == {"Scale": {"n": 1, "em": 0.0, "pm": 0.0}, "Semantic": {"n": 1, "em": 100.0, "pm": 100.0}}
    json.dumps(r, allow_nan=False)


def test_hypo3d_per_model_variant_changes_scores() -> None:
    r = compute_metrics(HYPO, use_sbert=False, n_bootstrap=0, normalization="per_model")
    # per_model: 'front and left' ≠ 'front left', 'front' ≠ 'front left', '2' ≠ '3', 'near  door' ≠ 'door'
    assert r["overall"]["em"] == 0.0 and r["ci"] == {} and r["normalization"] == "per_model"


def test_benchmark_inference() -> None:
    assert infer_benchmark(HYPO) == "hypo3d"
    mixed = HYPO + [{**HYPO[0], "id": "s", "benchmark": "scanqa"}]
    with pytest.raises(ValueError, match="mix"):
        compute_metrics(mixed, use_sbert=False)
    r = compute_metrics(mixed, benchmark="hypo3d", use_sbert=False, n_bootstrap=0)
    assert r["n"] == 5


# -- ScanQA ---------------------------------------------------------------------------------------

def test_scanqa_em_multiple_references() -> None:
    refs = ["brown", "dark brown"]
    assert scanqa_exact_match("dark brown", refs) == 1.0
    assert scanqa_exact_match("brown", refs) == 1.0
    assert scanqa_exact_match("Brown.", refs) == 0.0  # official: raw string membership
    assert scanqa_exact_match("Brown.", refs, clean=True) == 1.0
    assert scanqa_exact_match("light brown", refs, clean=True) == 0.0


@pytest.mark.parametrize(
    "text, expected",  # every expected value is the Java PTBTokenizer's output + the official filter
    [
        ("Brown.", "brown"),
        ('The "big" (white) T-shirt...', "the big -lrb- white -rrb- t-shirt"),  # -LRB- is filtered, -lrb- is not
        ("It isn't 1.5 m!", "it is n't 1.5 m"),
        ("{curly} [square]", "-lcb- curly -rcb- -lsb- square -rsb-"),
        ("black/white left/right 1/2 cup", "black/white left/right 1/2 cup"),
        ("the u.s. flag at 10 p.m.", "the u.s. flag at 10 p.m."),
        ("Mr. Smith, Dr. Lee etc. 5 ft.", "mr. smith dr. lee etc. 5 ft."),
        ("fig. 3 vs. fig.", "fig. 3 vs. fig"),  # 'fig.' keeps its period only before a number
        ("plan B. in. min.", "plan b. in min"),
        ("cannot gonna wanna gotta lemme 'tis", "can not gon na wan na got ta lem me 't is"),
        ("it's 5 o'clock, rock 'n' roll in the '90s", "it 's 5 o'clock rock 'n' roll in the '90s"),
        ("doesn’t ‘quoted’ “double”", "does n't quoted double"),
        ("wait — what… a – b", "wait what a b"),
        ("3.5-inch 10:30am 5pm 1,000 $5.99 50%", "3.5-inch 10:30 am 5pm 1,000 $ 5.99 50 %"),
        ("3 1/2 what?!", "3\xa01/2 what ?!"),  # the lexer joins a number and a fraction with a no-break space
        ("", ""),
    ],
)
def test_ptb_tokenize(text: str, expected: str) -> None:
    assert ptb_tokenize(text) == expected


_COLORS = ["brown", "black", "white", "red", "blue", "gray", "black/white", "dark-brown", "light blue"]
_OBJECTS = ["chair", "table", "desk", "t-shirt", "tv", "sofa", "trash can", "night-stand", "bookshelf", "monitor",
            "window", "door", "lamp", "bed", "pillow", "x-ray", "cabinet", "refrigerator", "towel", "3d printer"]
_PLACES = ["on the left", "to the right", "in front of the desk", "behind the sofa", "next to the bed", "left/right",
           "near the door", "under the table", "on top of the cabinet", "in the corner", "at the u.s. flag"]
_NUMBERS = ["2", "3", "two", "1.5", "10", "1,000", "3-4", "1/2", "3 1/2", "5 ft.", "10:30", "2nd", "50%", "$5.99",
            "5pm", "3.5-inch", "'90s"]
_ABBREVIATIONS = ["Mr. Smith", "Dr. Lee", "etc.", "e.g.", "i.e.", "u.s.", "a.m.", "Jan. 5", "No. 5", "fig. 3",
                  "St. Louis", "vs.", "Inc.", "plan B."]
_CONTRACTIONS = ["isn't", "it's", "don't", "can't", "cannot", "won't", "they're", "I'm", "we'll", "you've", "it'd",
                 "gonna", "wanna", "gotta", "o'clock", "doesn’t", "there’s", "'tis", "lemme"]
_VERBS = ["is", "sits", "stands", "is placed", "lies", "hangs", "is located"]
_PUNCT = [".", ",", "!", "?", "...", ";", ":", " —", "…", " -", " --", "?!", ""]
_WRAPS = [("(", ")"), ("[", "]"), ("{", "}"), ('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("", "")]


def _short_answer(r: random.Random) -> str:
    """A ScanQA-style answer: a colour, an object, a place, a count, possibly bracketed, capitalised, punctuated."""
    s = [lambda: r.choice(_COLORS), lambda: f"{r.choice(_COLORS)} {r.choice(_OBJECTS)}", lambda: r.choice(_PLACES),
         lambda: f"{r.choice(_NUMBERS)} {r.choice(_OBJECTS)}s", lambda: r.choice(_OBJECTS),
         lambda: f"{r.choice(['the', 'a', ''])} {r.choice(_OBJECTS)} {r.choice(_PLACES)}".strip()][r.randrange(6)]()
    if r.random() < 0.3:
        a, b = r.choice(_WRAPS)
        s = f"{a}{s}{b}"
    if r.random() < 0.3:
        s = s.capitalize()
    return s + (r.choice(_PUNCT) if r.random() < 0.4 else "")


def _caption(r: random.Random) -> str:
    """A caption-like sentence with abbreviations, contractions, numbers, brackets, quotes and unicode dashes."""
    parts = [r.choice(["The", "A", "This", "That", "It", "There"]), r.choice(_COLORS), r.choice(_OBJECTS),
             r.choice(_VERBS), r.choice(_PLACES)]
    for _ in range(r.randint(1, 3)):
        extra = r.choice([r.choice(_ABBREVIATIONS), r.choice(_CONTRACTIONS), r.choice(_NUMBERS), f"({r.choice(_OBJECTS)})",
                          f"[{r.choice(_NUMBERS)}]", r.choice(_COLORS), r.choice(_PUNCT).strip() or ",", "and", "with",
                          f'"{r.choice(_OBJECTS)}"', f"{r.choice(_OBJECTS)}'s", "—", "…", "–"])
        parts.insert(r.randint(1, len(parts)), extra)
    return " ".join(p for p in parts if p) + r.choice([".", ".", "!", "?", "...", "…", "", " ."])


def generated_answers(n: int = 4000, seed: int = 0) -> list[str]:
    r = random.Random(seed)
    return [_short_answer(r) if i % 2 else _caption(r) for i in range(n)]


@needs_java
def test_ptb_fallback_agrees_with_java_tokenizer() -> None:
    texts = generated_answers()
    java = ptb_tokenize_java(texts)  # one Java call for all of them
    python = [ptb_tokenize(t) for t in texts]
    differ = [(t, j, p) for t, j, p in zip(texts, java, python) if j != p]
    agreement = 1 - len(differ) / len(texts)
    print(f"PTB fallback agreement with the Java tokenizer: {agreement:.4%} of {len(texts)} strings; differ: {differ[:10]}")
    assert agreement >= 0.995, differ[:20]


@needs_java
def test_ptb_tokenize_java_batch_keeps_alignment() -> None:
    texts = ["", "a\nb", "(x)", "c\rd", "Mr. Smith's", "", ""]  # empty and multi-line strings keep their slots
    assert ptb_tokenize_java(texts) == ["", "a b", "-lrb- x -rrb-", "c d", "mr. smith 's", "", ""]
    assert ptb_tokenize_batch(["(x)"]) == (["-lrb- x -rrb-"], "ptb-java")


def test_ptb_tokenize_batch_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M.text.shutil, "which", lambda name: None)
    assert ptb_tokenize_batch(["(x)", "Brown."]) == (["-lrb- x -rrb-", "brown"], "ptb-python-fallback")
    assert "meteor" not in caption_scores(["brown chair"], [["brown chair"]])  # absent, not 0
    r = compute_metrics(SCANQA_OFFICIAL, use_sbert=False, n_bootstrap=0)
    assert r["tokenizer"] == "ptb-python-fallback" and r["overall"]["meteor"] is None
    assert all(g["meteor"] is None for g in r["by_question_type"].values())
    assert any("meteor" in note for note in r["notes"])
    json.dumps(r, allow_nan=False)


# ScanQA-style answers: several references, punctuation, brackets, slashes, abbreviations, contractions.
_SCANQA_FIXTURE = [
    ("Brown wooden chair.", ["brown chair", "wooden chair"], "Color"),
    ("(left)", ["left", "on the left side"], "Place"),
    ("black/white", ["black and white", "white"], "Color"),
    ("2 chairs", ["two", "2"], "Number"),
    ("It's next to the t-shirt", ["next to t-shirt", "beside the shirt"], "Place"),
    ("the U.S. flag", ["u.s. flag", "american flag"], "Object"),
    ("It isn't there — it's gone…", ["it is gone", "nowhere"], "Other"),
    ("a 5 ft. tall lamp", ["tall lamp", "floor lamp"], "Object"),
    ("rectangular", ["rectangle", "rectangular"], "Object nature"),
    ("in front of the desk", ["in front of desk", "in front of the desk"], "Place"),
]
SCANQA_OFFICIAL = [
    {"id": f"q{i}", "benchmark": "scanqa", "prediction": p, "references": refs, "question_type": [qt]}
    for i, (p, refs, qt) in enumerate(_SCANQA_FIXTURE)
]


@needs_java
def test_caption_metrics_equal_official_scanqa_pipeline() -> None:
    """ATR-DBI/ScanQA scripts/score.py eval_pycoco: PTBTokenizer on refs and preds, then Bleu(4), Meteor,
    Rouge, Cider — run here with pycocoevalcap directly, and compared with ours for exact equality."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({r["id"]: [{"caption": a} for a in r["references"]] for r in SCANQA_OFFICIAL})
    res = tokenizer.tokenize({r["id"]: [{"caption": r["prediction"]}] for r in SCANQA_OFFICIAL})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    official = {"bleu-1": bleu[0], "bleu-2": bleu[1], "bleu-3": bleu[2], "bleu-4": bleu[3],
                "meteor": Meteor().compute_score(gts, res)[0], "rouge-l": Rouge().compute_score(gts, res)[0],
                "cider": Cider().compute_score(gts, res)[0]}

    ours = caption_scores([r["prediction"] for r in SCANQA_OFFICIAL], [r["references"] for r in SCANQA_OFFICIAL])
    assert ours == {k: float(v) for k, v in official.items()}  # exactly, every metric
    r = compute_metrics(SCANQA_OFFICIAL, use_sbert=False, n_bootstrap=0)
    assert r["tokenizer"] == "ptb-java" and "notes" not in r
    assert {k: r["overall"][k] for k in official} == {k: round(100 * v, 4) for k, v in official.items()}


def test_caption_scores_sanity() -> None:
    same = caption_scores(["brown chair", "white table"], [["brown chair"], ["white table"]])
    assert same["bleu-1"] == pytest.approx(1.0, abs=1e-6)
    assert same["rouge-l"] == pytest.approx(1.0)
    disjoint = caption_scores(["red lamp", "black door"], [["brown chair"], ["white table"]])
    assert disjoint["bleu-1"] == pytest.approx(0.0, abs=1e-6)
    assert disjoint["rouge-l"] == 0.0 and disjoint["cider"] == 0.0
    assert same["cider"] > 0.0
    # One sample: CIDEr's IDF log(1/1) is 0, so CIDEr is 0 by construction; an empty prediction is no error.
    assert caption_scores(["brown chair"], [["brown chair"]])["cider"] == 0.0
    assert caption_scores([""], [["brown chair"]])["bleu-1"] == pytest.approx(0.0, abs=1e-6)
    assert caption_scores(["."], [["?"]])["cider"] == 0.0  # references without tokens: guarded
    assert caption_scores([], [])["bleu-4"] == 0.0


def test_scanqa_compute_metrics() -> None:
    recs = [
        {"id": "s1", "benchmark": "scanqa", "prediction": "dark brown", "references": ["brown", "dark brown"],
         "question_type": ["Color"], "change_type": None},
        {"id": "s2", "benchmark": "scanqa", "prediction": "White table.", "references": ["white table"],
         "question_type": ["Object"], "change_type": None},
    ]
    r = compute_metrics(recs, use_sbert=False, n_bootstrap=100)
    assert r["overall"]["em@1"] == 50.0 and r["overall"]["em@1_clean"] == 100.0
    assert r["overall"]["bleu-1"] == pytest.approx(100.0, abs=1e-3)
    assert set(r["ci"]) == {"em@1", "em@1_clean"}  # corpus metrics have no per-sample CI
    assert r["by_question_type"]["Color"]["n"] == 1
    json.dumps(r, allow_nan=False)


# -- bootstrap ------------------------------------------------------------------------------------

def test_bootstrap_ci() -> None:
    values = np.random.default_rng(1).random(200)
    low, high = bootstrap_ci(values, n_resamples=500, seed=3)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, n_resamples=500, seed=3)
    assert (low, high) != bootstrap_ci(values, n_resamples=500, seed=4)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([])))


# -- loading --------------------------------------------------------------------------------------

def test_load_predictions_collects_all_problems(tmp_path: Path) -> None:
    good = _h("q1", "x", "y", ["Direction"], "Movement")
    path = tmp_path / "preds.jsonl"
    path.write_text(
        json.dumps(good) + "\n"
        + "{not json\n"
        + json.dumps({**good, "id": "q2", "references": []}) + "\n"
        + "\n"
        + json.dumps({k: v for k, v in good.items() if k != "prediction"} | {"id": "q3"}) + "\n"
    )
    with pytest.raises(DataError) as exc:
        load_predictions(path)
    lines = exc.value.render().splitlines()
    assert lines[0].startswith(f"{path}: line 2: invalid JSON")
    assert lines[1].startswith(f"{path}: line 3: key 'references': empty list")
    assert lines[2] == f"{path}: line 5: key 'prediction': missing"
    assert len(lines) == 3


def test_load_predictions_ok(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", HYPO)
    recs = load_predictions(path)
    assert [r.id for r in recs] == ["q1", "q2", "q3", "q4"]
    assert recs[1].question_type == ["Direction", "Semantic"]
    with pytest.raises(DataError, match="file not found"):
        load_predictions(tmp_path / "missing.jsonl")


# -- CLI ------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlm", "metrics", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_cli_end_to_end(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "preds.jsonl", HYPO)
    proc = _cli(str(path), "--no_sbert", "--n_bootstrap", "100")
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    assert out["overall"] == {"em": 50.0, "pm": 62.5} and out["sbert_model"] is None
    assert "Direction" in proc.stdout and "Movement" in proc.stdout
    assert not list(tmp_path.glob(".metrics.json.*"))  # no temp file left behind


def test_cli_bad_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(HYPO[0]) + "\n" + json.dumps({**HYPO[1], "prediction": 7}) + "\n")
    proc = _cli(str(path), "--no_sbert")
    assert proc.returncode == 2
    assert f"{path}: line 2: key 'prediction': expected a string, got int" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_cli_help() -> None:
    proc = _cli("preds.jsonl", "--help")
    assert proc.returncode == 0 and "--normalization" in proc.stdout and "--no_sbert" in proc.stdout


# -- SBERT (loads the packaged MiniLM; a few seconds) ---------------------------------------------

def test_packaged_minilm_is_default() -> None:
    path = packaged_minilm_path()
    assert path is not None and (Path(path) / "model.safetensors").is_file()
    assert resolve_sbert_model(None) == path == resolve_sbert_model("all-MiniLM-L6-v2")
    assert resolve_sbert_model("/some/local/model") == "/some/local/model"


def test_sbert_similarity_offline() -> None:
    # A fresh process, so HF_HUB_OFFLINE=1 is in force before huggingface_hub is imported.
    code = (
        "import json; from vlm.metrics import sbert_similarity, load_sbert;"
        "s = sbert_similarity(['front left', 'front left'], ['front left', 'banana bread']);"
        "print(json.dumps({'s': s, 'cached': load_sbert() is load_sbert()}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    identical, unrelated = (100 * x for x in res["s"])
    assert identical == pytest.approx(100.0, abs=1e-3)
    assert unrelated < identical - 20
    assert res["cached"]
