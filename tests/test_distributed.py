"""Data-parallel inference under torchrun (2 CPU processes, gloo): evaluate and generate_cot shard the samples,
rank 0 merges into exactly what one process writes; a rank killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

SAMPLE = REPO / "hypo_dataset" / "sample"
MODEL = "zoo:qwen2-vl-mirror"  # the real Qwen2-VL processor path; random init (every phase runs to its token budget)
ENV_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo")
    env = {**os.environ, **ENV_THREADS, "VLM_ZOO_DIR": str(path)}
    subprocess.run([sys.executable, "-m", "vlm", "zoo", "build", MODEL[4:]], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    return path


def command(nproc: int, stage: str, *args) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else [sys.executable]
    return [*launcher, "-m", "vlm", stage, *map(str, args)]


def run(zoo_dir, nproc, stage, *args, timeout=600):
    env = {**os.environ, **ENV_THREADS, "VLM_ZOO_DIR": str(zoo_dir)}
    r = subprocess.run(command(nproc, stage, *args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def records(path: Path) -> list[dict]:
    """JSONL records in file order, without the timing field (the only one that may differ between runs)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def data_args(limit: int):
    return ["--data", SAMPLE / "hypo3d.json", "--images_dir", SAMPLE / "images", "--limit", limit, "--batch_size", 1]


def test_two_process_generate_cot_equals_one_process(zoo_dir, tmp_path):
    """(evaluate's merge is checked against one process in the kill-and-resume test below)"""
    cot = [*data_args(6), "--teacher", MODEL, "--recipe", "direct", "--top_k", 8]
    run(zoo_dir, 1, "generate_cot", *cot, "--out_dir", tmp_path / "cot1")
    run(zoo_dir, 2, "generate_cot", *cot, "--out_dir", tmp_path / "cot2")
    assert records(tmp_path / "cot2" / "transcripts.jsonl") == records(tmp_path / "cot1" / "transcripts.jsonl")
    files1 = sorted(p.name for p in (tmp_path / "cot1" / "logits").iterdir())
    assert files1 == sorted(p.name for p in (tmp_path / "cot2" / "logits").iterdir())
    for name in files1:  # the same cache, byte for byte (index.json included)
        assert (tmp_path / "cot1" / "logits" / name).read_bytes() == (tmp_path / "cot2" / "logits" / name).read_bytes()
    assert not list((tmp_path / "cot2").glob("*.rank*"))


def test_rank_killed_mid_run_then_rerun_loses_and_duplicates_nothing(zoo_dir, tmp_path):
    ev = [*data_args(10), "--model", MODEL, "--recipe", "hypo3d-cot", "--max_new_tokens", 12, "--no_sbert"]
    out = tmp_path / "ev"
    env = {**os.environ, **ENV_THREADS, "VLM_ZOO_DIR": str(zoo_dir)}
    proc = subprocess.Popen(command(2, "evaluate", *ev, "--out_dir", out), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        part = out / "predictions.rank1.jsonl"
        while time.time() < deadline and not (part.is_file() and part.read_text().count("\n") >= 1):
            time.sleep(0.2)
        assert part.is_file(), "rank 1 never wrote a prediction"
        import psutil

        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "vlm" in " ".join(c.cmdline())]
        rank1 = next(c for c in workers if c.environ().get("RANK") == "1")
        rank1.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert not (out / "metrics.json").exists()
    partial = sum(p.read_text().count("\n") for p in out.glob("predictions*.jsonl"))
    assert 1 <= partial < 10

    run(zoo_dir, 2, "evaluate", *ev, "--out_dir", out)
    merged = records(out / "predictions.jsonl")
    ids = [r["id"] for r in merged]
    assert len(ids) == len(set(ids)) == 10
    run(zoo_dir, 1, "evaluate", *ev, "--out_dir", tmp_path / "reference")
    assert merged == records(tmp_path / "reference" / "predictions.jsonl")
