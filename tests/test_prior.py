"""Answer-prior baseline: most frequent training answer per question pattern, in the predictions contract."""

from __future__ import annotations

import json

from helpers import write_json
from vlm.data import load_samples
from vlm.stages import prior


def _scanqa(records):
    return [{"scene_id": f"s{i}", "question_id": f"q{i}", "question": q, "answers": [a]} for i, (q, a) in enumerate(records)]


def test_prior_backs_off_from_pattern_to_global(tmp_path):
    train = write_json(tmp_path / "train.json", _scanqa([
        ("What colour is the chair?", "red"), ("What colour is the bed?", "red"), ("What colour is the lamp?", "blue"),
        ("How many chairs are there?", "two"), ("How many beds are there?", "two"), ("Where is the sofa?", "left"),
        ("Where is the lamp?", "left"), ("Is there a bed?", "yes"), ("How many sofas?", "two"),
    ]))
    test = write_json(tmp_path / "test.json", _scanqa([
        ("What colour is the sofa?", "green"), ("How many lamps are there?", "two"), ("Describe the room.", "nice"),
    ]))
    out = tmp_path / "p.jsonl"
    assert prior.main(prior.Config(train=str(train), test=str(test), out=str(out))) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prediction"] for r in rows] == ["red", "two", "two"]  # last one: no pattern match -> global mode
    assert rows[0]["references"] == ["green"] and rows[0]["id"] == "q0" and rows[0]["benchmark"] == "scanqa"
    assert rows[0]["mode"] == "blind" and rows[0]["model"] == "prior"


def test_prior_uses_question_types(hypo3d_files):
    path, _, _ = hypo3d_files
    samples = load_samples(path)
    table = prior.fit(samples)
    assert table[(("Scale",),)] == "two"
    assert prior.keys(samples[1])[0] == (("Direction", "Semantic"), ("how", "many"))
