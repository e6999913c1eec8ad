"""evaluate: recipe x mode on a split, resumable predictions, metrics; resume after a kill mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import REPO
from vlm.io import append_jsonl, resume_jsonl

SAMPLE = REPO / "hypo_dataset" / "sample"


def test_resume_jsonl_cuts_a_partial_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    append_jsonl(path, [{"id": "a"}, {"id": "b"}])
    with path.open("a") as f:
        f.write('{"id": "c", "predic')  # killed mid-write
    assert list(resume_jsonl(path)) == ["a", "b"]
    append_jsonl(path, [{"id": "c"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_run_resumable_does_only_what_is_left_and_loads_the_model_only_for_it(tmp_path, capsys):
    """The loop evaluate and generate_cot share (vlm/generation.py), one process: records of an earlier run are
    kept, the rest is generated in batches and appended, and with nothing left no model is loaded."""
    from vlm.data import load_samples
    from vlm.distributed import Ranks
    from vlm.generation import run_resumable
    from vlm.recipes import load_recipe

    samples = load_samples(SAMPLE / "hypo3d.json")[:5]
    recipe = load_recipe("direct")
    batches, loads = [], []

    class Numbering:  # a model that answers with the position in its batch
        def generate(self, conversations, images, gen_cfg):
            batches.append((len(conversations), images, gen_cfg["max_new_tokens"]))
            return [f"a{i}" for i in range(len(conversations))]

    def load():
        loads.append(1)
        return Numbering()

    def record(s, answer, phases, seconds):
        return {"id": s.id, "answer": answer, "phases": phases, "timed": seconds >= 0}

    out = tmp_path / "predictions.jsonl"
    append_jsonl(out, [{"id": samples[1].id, "answer": "earlier"}])
    kwargs = dict(ranks=Ranks(), blind=True, batch_size=3, desc="test", stage="stage")
    adapter, records = run_resumable(samples, out, recipe, load, record, max_new_tokens=7, **kwargs)
    assert isinstance(adapter, Numbering) and loads == [1]
    assert batches == [(3, [None] * 3, 7), (1, [None], 7)]
    assert "stage: resuming" in capsys.readouterr().out
    left = [s.id for s in samples if s.id != samples[1].id]
    assert list(records) == [samples[1].id, *left]
    assert records[samples[1].id] == {"id": samples[1].id, "answer": "earlier"}
    assert [records[i]["answer"] for i in left] == ["a0", "a1", "a2", "a0"]
    assert records[left[0]]["phases"] == [{"name": "answer", "output": "a0"}] and records[left[0]]["timed"]
    assert list(resume_jsonl(out)) == list(records)
    adapter, again = run_resumable(samples, out, recipe, load, record, **kwargs)
    assert adapter is None and loads == [1] and again == records


def _evaluate(out, zoo_dir, *extra, background=False):
    cmd = [sys.executable, "-m", "vlm", "evaluate", "--model", "zoo:qwen2-vl-mirror", "--data", str(SAMPLE / "hypo3d.json"),
           "--images_dir", str(SAMPLE / "images"), "--out_dir", str(out), "--no_sbert", "--batch_size", "2", *extra]
    env = {**os.environ, "VLM_ZOO_DIR": str(zoo_dir)}
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_evaluate_resumes_after_kill_without_duplicates(tmp_path):
    zoo_dir, out = tmp_path / "zoo", tmp_path / "eval"
    proc = _evaluate(out, zoo_dir, "--limit", "40", "--recipe", "hypo3d-cot", background=True)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not pred.is_file() or len(pred.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(resume_jsonl(pred))
    assert 0 < first < 40, "the kill should land mid-run"
    r = _evaluate(out, zoo_dir, "--limit", "40", "--recipe", "hypo3d-cot")
    assert r.returncode == 0, r.stderr
    ids = [json.loads(line)["id"] for line in pred.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 40
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 40 and metrics["benchmark"] == "hypo3d"
    meta = json.loads((out / "eval_meta.json").read_text())
    assert meta["recipe"] == "hypo3d-cot" and meta["mode"] == "normal"
    rec = json.loads(pred.read_text().splitlines()[0])
    assert [p["name"] for p in rec["phases"]] == ["observe", "imagine", "answer"]


def test_evaluate_blind_and_bad_input(tmp_path):
    zoo_dir = tmp_path / "zoo"
    r = _evaluate(tmp_path / "blind", zoo_dir, "--limit", "4", "--mode", "blind")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "blind" / "predictions.jsonl").read_text().splitlines()[0])
    assert rec["mode"] == "blind" and rec["recipe"] == "direct"
    r = subprocess.run([sys.executable, "-m", "vlm", "evaluate", "--model", "zoo:qwen2-vl-mirror", "--data", str(SAMPLE / "hypo3d.json"),
                        "--out_dir", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "VLM_ZOO_DIR": str(zoo_dir)})
    assert r.returncode == 2 and "normal mode needs images" in r.stderr
    assert not (tmp_path / "x" / "predictions.jsonl").exists()
