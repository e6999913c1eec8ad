"""CoT generation with the raw logit cache, KD fine-tuning, torchrun, tokenizer checks (zoo models, toy data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import REPO
from vlm.kd.cache import LogitCache

SAMPLE = REPO / "hypo_dataset" / "sample"


def vlm(*args, zoo_dir=None, timeout=900):
    env = {**os.environ}
    if zoo_dir is not None:
        env["VLM_ZOO_DIR"] = str(zoo_dir)
    return subprocess.run([sys.executable, "-m", "vlm", *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def common(data=SAMPLE / "hypo3d.json"):
    return ["--data", data, "--images_dir", SAMPLE / "images"]


@pytest.fixture(scope="module")
def cot_run(tmp_path_factory):
    """Cross-family: a LLaVA-OV teacher's CoT + cache, for a Cobra student (the zoo shares one tokenizer)."""
    root = tmp_path_factory.mktemp("distill")
    zoo_dir = root / "zoo"
    r = vlm("generate_cot", "--teacher", "zoo:llava-ov-mirror", "--student", "zoo:cobra-mirror", *common(), "--limit", 6,
            "--batch_size", 3, "--out_dir", root / "cot", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr
    return root, zoo_dir


def test_cache_matches_transcripts_and_student_labels(cot_run):
    root, zoo_dir = cot_run
    os.environ["VLM_ZOO_DIR"] = str(zoo_dir)
    from vlm.data import load_samples
    from vlm.io import resume_jsonl
    from vlm.kd.losses import align_teacher
    from vlm.models import load_model
    from vlm.recipes import load_recipe
    from vlm.stages.finetune import Collator

    meta = json.loads((root / "cot" / "cot_meta.json").read_text())
    assert meta["kd"] is True and meta["recipe"] == "hypo3d-cot" and meta["top_k"] == 64
    cache = LogitCache(root / "cot" / "logits")
    transcripts = resume_jsonl(root / "cot" / "transcripts.jsonl")
    assert set(cache.ids()) == set(transcripts) and len(cache) == 6
    # the student's labels on the same transcript are exactly the cached targets (align_teacher checks it)
    student = load_model("zoo:cobra-mirror", device="cpu")
    samples = load_samples(SAMPLE / "hypo3d.json", images_dir=SAMPLE / "images")[:6]
    recipe = load_recipe("hypo3d-cot")
    rows = [(s, [p["output"] for p in transcripts[s.id]["phases"]]) for s in samples]
    batch = Collator(student, recipe, False, cache)(rows)
    assert batch["teacher_ids"].shape[:2] == batch["labels"].shape
    topk = align_teacher(batch["labels"], [cache.get(s.id) for s, _ in rows], [s.id for s, _ in rows])
    assert torch.equal(topk.ids, batch["teacher_ids"])


@pytest.mark.slow
def test_rescored_argmax_is_the_generated_token(tmp_path, zoo_dir):
    """Greedy CoT from a trained zoo teacher, re-scored teacher-forced: the cached top-1 is the generated token
    at every position of every transcript whose phases all ended on their own (not cut by max_new_tokens).
    The teacher comes from the session's shared zoo (built once, also used by the structured study's test)."""
    r = vlm("generate_cot", "--teacher", "zoo:llava-ov-teacher", *common(), "--limit", 24, "--out_dir", tmp_path / "cot",
            zoo_dir=zoo_dir, timeout=1800)
    assert r.returncode == 0, r.stderr
    cache = LogitCache(tmp_path / "cot" / "logits")
    from vlm.io import resume_jsonl
    from vlm.recipes import load_recipe

    recipe = load_recipe("hypo3d-cot")
    limits = {p.name: p.max_new_tokens for p in recipe.phases}
    checked = 0
    for sid, t in resume_jsonl(tmp_path / "cot" / "transcripts.jsonl").items():
        row = cache.get(sid)
        top1 = row.ids[:, 0].long()
        if all(len(p["output"].split()) < limits[p["name"]] // 2 for p in t["phases"]):  # ended by <|im_end|>
            assert torch.equal(top1, row.target_ids.long()), sid
            checked += 1
    assert checked >= 12


def test_kd_step_lowers_the_kl_term(cot_run):
    root, zoo_dir = cot_run
    os.environ["VLM_ZOO_DIR"] = str(zoo_dir)
    from peft import LoraConfig, get_peft_model

    from vlm.data import load_samples
    from vlm.io import resume_jsonl
    from vlm.kd.cache import TopK
    from vlm.kd.losses import kd_loss
    from vlm.models import load_model
    from vlm.recipes import load_recipe
    from vlm.stages.finetune import Collator

    torch.manual_seed(0)
    student = load_model("zoo:cobra-mirror", device="cpu")
    cache = LogitCache(root / "cot" / "logits")
    transcripts = resume_jsonl(root / "cot" / "transcripts.jsonl")
    samples = load_samples(SAMPLE / "hypo3d.json", images_dir=SAMPLE / "images")[:4]
    batch = Collator(student, load_recipe("hypo3d-cot"), False, cache)(
        [(s, [p["output"] for p in transcripts[s.id]["phases"]]) for s in samples])
    model = get_peft_model(student.model, LoraConfig(r=4, target_modules=student.lora_targets()))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    teacher = TopK(batch.pop("teacher_ids"), batch.pop("teacher_logprobs").float(), batch.pop("teacher_log_tail"))
    labels = batch.pop("labels")
    kls = []
    for _ in range(5):
        kd, n = kd_loss(model(**batch).logits.float(), labels, teacher)
        (kd / n).backward()
        opt.step()
        opt.zero_grad()
        kls.append(float(kd.detach() / n))
    assert kls[-1] < kls[0] * 0.9, kls


def test_kd_finetune_and_2_process_torchrun(cot_run, tmp_path):
    root, zoo_dir = cot_run
    args = ["--model", "zoo:cobra-mirror", *common(), "--limit", 6, "--loss", "kd", "--cot_dir", root / "cot",
            "--max_steps", 3, "--batch_size", 1, "--grad_accum", 2]
    r = vlm("finetune", *args, "--out_dir", tmp_path / "single", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "single" / "adapter" / "adapter_config.json").is_file()
    logs = [json.loads(line) for line in (tmp_path / "single" / "trainer_log.jsonl").read_text().splitlines()]
    assert any("kd_loss" in entry for entry in logs)
    env = {**os.environ, "VLM_ZOO_DIR": str(zoo_dir)}
    torchrun = shutil.which("torchrun", path=str(REPO / ".venv" / "bin")) or shutil.which("torchrun")
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "-m", "vlm", "finetune", *map(str, args), "--out_dir", str(tmp_path / "ddp")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "ddp" / "adapter" / "adapter_config.json").is_file()
    cfg = json.loads((tmp_path / "ddp" / "train_config.json").read_text())
    assert cfg["kd_active"] is True


def test_cot_loss_is_kd_without_the_cache(cot_run, tmp_path):
    """--loss cot: the kd rows (the transcripts), rendering and batches, with CE only: equal ce_loss at step 1."""
    root, zoo_dir = cot_run
    os.environ["VLM_ZOO_DIR"] = str(zoo_dir)
    from vlm.data import load_samples
    from vlm.io import resume_jsonl
    from vlm.recipes import load_recipe
    from vlm.stages.finetune import Config, training_rows

    transcripts = resume_jsonl(root / "cot" / "transcripts.jsonl")
    cfg = Config(model="zoo:cobra-mirror", out_dir=str(tmp_path / "unused"), data=str(SAMPLE / "hypo3d.json"),
                 loss="cot", cot_dir=str(root / "cot"))
    samples = load_samples(SAMPLE / "hypo3d.json", images_dir=SAMPLE / "images")
    rows = training_rows(cfg, samples, load_recipe("hypo3d-cot"))
    assert [(s.id, outputs) for s, outputs in rows] == [(i, [p["output"] for p in t["phases"]]) for i, t in transcripts.items()]
    logs = {}
    for loss in ("cot", "kd"):
        r = vlm("finetune", "--model", "zoo:cobra-mirror", *common(), "--limit", 6, "--loss", loss, "--cot_dir", root / "cot",
                "--max_steps", 2, "--batch_size", 2, "--out_dir", tmp_path / loss, zoo_dir=zoo_dir)
        assert r.returncode == 0, r.stderr
        logs[loss] = [json.loads(line) for line in (tmp_path / loss / "trainer_log.jsonl").read_text().splitlines()]
    cfg = json.loads((tmp_path / "cot" / "train_config.json").read_text())
    assert cfg["loss"] == "cot" and cfg["kd_active"] is False and cfg["examples"] == len(transcripts) == 6
    assert logs["cot"][0]["step"] == logs["kd"][0]["step"] == 1
    assert "kd_loss" in logs["kd"][0] and not any("kd_loss" in entry for entry in logs["cot"])
    assert logs["cot"][0]["ce_loss"] == logs["kd"][0]["ce_loss"], (logs["cot"][0], logs["kd"][0])


def test_blind_rescore_of_given_transcripts_is_a_cache_a_normal_student_trains_on(cot_run, tmp_path):
    """--transcripts + --mode blind: the same text and targets, the teacher's log-probs without the image."""
    root, zoo_dir = cot_run
    given = root / "cot" / "transcripts.jsonl"
    r = vlm("generate_cot", "--teacher", "zoo:llava-ov-mirror", *common(), "--limit", 6, "--batch_size", 3, "--mode", "blind",
            "--transcripts", given, "--out_dir", tmp_path / "blind", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "blind" / "cot_meta.json").read_text())
    assert meta["transcripts_from"] == str(given) and meta["mode"] == "blind" and meta["kd"] is True
    assert json.loads((root / "cot" / "cot_meta.json").read_text())["transcripts_from"] is None
    assert (tmp_path / "blind" / "transcripts.jsonl").read_bytes() == given.read_bytes()  # same ids, order, bytes
    normal, blind = LogitCache(root / "cot" / "logits"), LogitCache(tmp_path / "blind" / "logits")
    assert normal.ids() == blind.ids()
    differ = 0
    for sid in normal.ids():
        a, b = normal.get(sid), blind.get(sid)
        assert torch.equal(a.target_ids, b.target_ids), sid
        differ += not torch.equal(a.logprobs, b.logprobs)
    assert differ > 0  # the teacher reads the image: without it its distributions move
    r = vlm("finetune", "--model", "zoo:cobra-mirror", *common(), "--limit", 6, "--loss", "kd", "--cot_dir", tmp_path / "blind",
            "--max_steps", 1, "--batch_size", 3, "--out_dir", tmp_path / "student", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr  # a normal-mode student: the alignment check passes on the blind cache
    cfg = json.loads((tmp_path / "student" / "train_config.json").read_text())
    assert cfg["mode"] == "normal" and cfg["kd_active"] is True and cfg["examples"] == 6


def test_given_transcripts_are_checked_one_line_per_problem(tmp_path):
    from vlm.data import load_samples
    from vlm.data.errors import DataError
    from vlm.recipes import load_recipe
    from vlm.stages.generate_cot import given_transcripts

    recipe = load_recipe("hypo3d-cot")
    samples = load_samples(SAMPLE / "hypo3d.json", images_dir=SAMPLE / "images")[:4]

    def record(s, **kw):
        return {"id": s.id, "recipe": "hypo3d-cot", "phases": [{"name": p.name, "output": "x"} for p in recipe.active(s)], **kw}

    good = [record(s) for s in samples]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good))
    assert given_transcripts(path, samples, recipe) == {r["id"]: r for r in good}
    bad = [good[0], record(samples[1], recipe="direct"), {**good[2], "phases": good[2]["phases"][:1]}]  # samples[3]: absent
    path.write_text("".join(json.dumps(r) + "\n" for r in bad) + '{"id": "torn')
    with pytest.raises(DataError) as e:
        given_transcripts(path, samples, recipe)
    assert [loc for _, loc, _ in e.value.lines] == ["line 4", f"id '{samples[1].id}'", f"id '{samples[2].id}'",
                                                   f"id '{samples[3].id}'"], e.value.render()
    assert "not --recipe 'hypo3d-cot'" in e.value.render() and "no transcript" in e.value.render()


def test_different_tokenizer_refused_or_falls_back_to_ce(cot_run, tmp_path):
    root, zoo_dir = cot_run
    from vlm.models import zoo

    os.environ["VLM_ZOO_DIR"] = str(zoo_dir)
    other = tmp_path / "other-student"
    shutil.copytree(zoo.ensure("cobra-mirror"), other)
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["added_tokens"].append({**tok["added_tokens"][-1], "id": 5000, "content": "<|extra|>"})
    (other / "tokenizer.json").write_text(json.dumps(tok))
    base = ["--teacher", "zoo:llava-ov-mirror", "--student", other, *common(), "--limit", 2]
    r = vlm("generate_cot", *base, "--out_dir", tmp_path / "refused", zoo_dir=zoo_dir)
    assert r.returncode == 2 and "tokenizers of zoo:llava-ov-mirror and" in r.stderr and "--fallback_to_ce" in r.stderr
    r = vlm("generate_cot", *base, "--fallback_to_ce", "--out_dir", tmp_path / "fallback", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "fallback" / "cot_meta.json").read_text())
    assert meta["kd"] is False and "differ" in meta["fallback_reason"]
    assert not (tmp_path / "fallback" / "logits").exists()
    r = vlm("finetune", "--model", "zoo:cobra-mirror", *common(), "--limit", 2, "--loss", "kd", "--cot_dir", tmp_path / "fallback",
            "--max_steps", 1, "--out_dir", tmp_path / "ce", zoo_dir=zoo_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ce" / "train_config.json").read_text())["kd_active"] is False


def test_resume_point_is_the_newest_checkpoint_with_a_trainer_state(tmp_path):
    from vlm.stages.finetune import incomplete_checkpoints, last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path) is None
    for step, state in [(8, "{}"), (12, "{}"), (16, None), (20, '{"global_st')]:  # 16: killed before, 20: during the write
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-12"
    assert [p.name for p in incomplete_checkpoints(tmp_path)] == ["checkpoint-16", "checkpoint-20"]


def test_finetune_resumes_from_its_last_checkpoint(tmp_path):
    import signal
    import time

    zoo_dir, out = tmp_path / "zoo", tmp_path / "run"
    cmd = [sys.executable, "-m", "vlm", "finetune", "--model", "zoo:qwen2-vl-mirror", *map(str, common()), "--limit", "16",
           "--max_steps", "200", "--save_steps", "4", "--batch_size", "2", "--out_dir", str(out)]
    env = {**os.environ, "VLM_ZOO_DIR": str(zoo_dir)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists(), "the kill should land before the end"
    # a kill during a save leaves a newer, half-written checkpoint (CI hit one): plant one so it always happens
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    partial = out / "checkpoints" / f"checkpoint-{int(ckpts[-1].name.split('-')[1]) + 4}"
    partial.mkdir(exist_ok=True)
    (partial / "trainer_state.json").unlink(missing_ok=True)
    (partial / "adapter_config.json").write_text("{}")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from the last checkpoint" in r.stdout and f"removing {partial.name}" in r.stdout
    steps = [json.loads(line)["step"] for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert steps[-1] == 200 and (out / "adapter" / "adapter_config.json").is_file()
    # the second run started after step 1: its first logged step is past the checkpoint, not 1 again
    restart = [s for a, s in zip(steps, steps[1:]) if s <= a]
    assert restart and restart[0] > 1, steps
