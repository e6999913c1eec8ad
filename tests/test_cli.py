"""The command line: every stage's --help, and bad flags as one DataError line each (exit 2) before any model loads."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

import pytest

from helpers import REPO, run_vlm
from vlm.__main__ import STAGES
from vlm.__main__ import main as vlm_main
from vlm.cli import parse_config

SAMPLE = REPO / "hypo_dataset" / "sample"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_help_lists_its_options(stage, capsys):
    config_cls = importlib.import_module(STAGES[stage][0]).Config
    with pytest.raises(SystemExit) as exit_:
        parse_config(config_cls, ["--help"], prog=f"python -m vlm {stage}")
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert f"python -m vlm {stage}" in out
    missing = [f.name for f in dataclasses.fields(config_cls) if f"--{f.name}" not in out]
    assert not missing, f"{stage} --help lacks {missing}"


def test_finetune_help_in_a_subprocess():
    r = run_vlm("finetune", "--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--alpha", "--divergence", "--logit_chunk_rows", "--warmup_ratio", "--lr_scheduler_type", "--report_to"):
        assert flag in r.stdout


# ------------------------------------------------------------------------------------------- bad flags
def finetune(capsys, tmp_path, *flags) -> list[str]:
    """Run ``python -m vlm finetune`` in-process on a model that does not exist: only the flag checks can answer."""
    code = vlm_main(["finetune", "--model", "zoo:no-such-entry", "--data", str(SAMPLE / "hypo3d.json"),
                     "--images_dir", str(SAMPLE / "images"), "--out_dir", str(tmp_path / "run"), *map(str, flags)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no-such-entry" not in err and not (tmp_path / "run").exists()  # failed before any model or folder
    return err.splitlines()


def _missing_reporter() -> str:
    from vlm.stages.finetune import REPORTERS

    return next((name for name, packages in REPORTERS.items()
                 if packages and not any(importlib.util.find_spec(p) for p in packages)), "")


@pytest.mark.parametrize("flag, value, says", [
    ("--alpha", 1.5, "must be in [0, 1]"),
    ("--temperature", 0, "must be > 0"),
    ("--divergence", "tvd", "unknown divergence 'tvd'"),
    ("--jsd_beta", -0.1, "must be in [0, 1]"),
    ("--report_to", "mlflow", "unknown backend 'mlflow'"),
    ("--warmup_ratio", 1.0, "must be in [0, 1)"),
    ("--lr_scheduler_type", "cosine_typo", "unknown schedule"),
    ("--alpha", "half", "invalid float value"),  # argparse's own error, in the same one-line form
])
def test_a_bad_flag_is_one_line_naming_it(capsys, tmp_path, flag, value, says):
    lines = finetune(capsys, tmp_path, flag, value)
    assert lines == [line for line in lines if line.startswith(f"flags: {flag}: ")], lines
    assert len(lines) == 1 and says in lines[0], lines


def test_a_reporting_backend_that_is_not_installed(capsys, tmp_path):
    backend = _missing_reporter()
    if not backend:
        pytest.skip("every --report_to backend is installed here")
    assert finetune(capsys, tmp_path, "--report_to", backend) == [f"flags: --report_to: {backend} is not installed "
                                                                 f"(pip install {backend})"]


def test_every_bad_flag_is_reported_at_once(capsys, tmp_path):
    lines = finetune(capsys, tmp_path, "--alpha", 2, "--temperature", -1, "--divergence", "tvd", "--jsd_beta", 3,
                     "--logit_chunk_rows", 0, "--batch_size", 0, "--weight_decay", -1, "--max_pixels", -1, "--loss", "kd")
    flags = [line.split(": ")[1] for line in lines]
    assert sorted(flags) == sorted(["--alpha", "--temperature", "--divergence", "--jsd_beta", "--logit_chunk_rows",
                                    "--batch_size", "--weight_decay", "--max_pixels", "--cot_dir"]), lines


def test_unknown_and_missing_options_are_data_errors(capsys, tmp_path):
    assert finetune(capsys, tmp_path, "--alphaa", 0.5) == ["flags: --alphaa: unknown option"]
    assert vlm_main(["finetune", "--model", "zoo:no-such-entry"]) == 2
    assert capsys.readouterr().err.splitlines() == ["flags: --data: required", "flags: --out_dir: required"]


def test_yaml_values_are_checked_like_flags(capsys, tmp_path):
    config = tmp_path / "finetune.yaml"
    config.write_text("alpha: 0.2\ndivergence: jsd\nreport_to: nonsense\n")
    assert finetune(capsys, tmp_path, "--config", config) == [
        "flags: --report_to: unknown backend 'nonsense' (known: none | tensorboard | wandb)"]
    config.write_text("alpha: 3\n")
    assert finetune(capsys, tmp_path, "--config", config, "--alpha", 0.4, "--batch_size", 0) == \
        ["flags: --batch_size: must be >= 1, got 0"]  # the command line overrides the YAML's alpha


def test_defaults_are_the_training_arguments_of_before(tmp_path):
    """The new TrainingArguments flags default to what finetune hard-coded, so results do not change."""
    from vlm.stages.finetune import Config, training_arguments

    cfg = Config(model="zoo:x", out_dir=str(tmp_path), data="d.json")
    args = training_arguments(cfg, tmp_path / "checkpoints", None, bf16=False)
    assert (args.warmup_steps, args.weight_decay, args.max_grad_norm, args.lr_scheduler_type, args.logging_steps,
            args.save_steps, args.save_total_limit, args.report_to) == (0.05, 0.0, 1.0, "cosine", 5, 50, 1, [])
    assert args.get_warmup_steps(200) == 10  # a ratio of the run, not 0.05 steps
    cfg = Config(model="zoo:x", out_dir=str(tmp_path), data="d.json", warmup_ratio=0.0, weight_decay=0.1, max_grad_norm=0.5,
                 lr_scheduler_type="linear", logging_steps=2, save_total_limit=3)
    args = training_arguments(cfg, tmp_path / "checkpoints", None, bf16=False)
    assert (args.warmup_steps, args.weight_decay, args.max_grad_norm, args.lr_scheduler_type, args.logging_steps,
            args.save_total_limit) == (0.0, 0.1, 0.5, "linear", 2, 3)


def test_kd_arguments_check_themselves():
    from vlm.data.errors import DataError
    from vlm.kd import DIVERGENCES, KDArguments

    assert KDArguments().divergence in DIVERGENCES
    with pytest.raises(DataError) as e:
        KDArguments(alpha=-0.1, temperature=0.0, divergence="kl", jsd_beta=1.5, logit_chunk_rows=0)
    assert [loc for _, loc, _ in e.value.lines] == ["--alpha", "--temperature", "--divergence", "--jsd_beta",
                                                   "--logit_chunk_rows"]
