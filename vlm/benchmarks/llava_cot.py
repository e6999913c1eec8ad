"""LLaVA-CoT-100k: ``train.jsonl``, one LLaVA conversation per line (a JSON list file is read too)::

    {"id": "...", "image": "coco/train2017/000000123456.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ...?"},
                       {"from": "gpt", "value": "<SUMMARY>…</SUMMARY> <CAPTION>…</CAPTION> "
                                                "<REASONING>…</REASONING> <CONCLUSION>…</CONCLUSION>"}]}

``image`` is relative to an image root holding one folder per source dataset (``coco/``, ``sqa/``, …).

The real file is written by the official generator (PKU-YuanGroup/LLaVA-CoT, ``dataset_generation/generate.py``),
which strips ``<image>\\n`` / ``\\n<image>`` from the human turn, and a record may hold several human/gpt pairs.
So the ``<image>`` placeholder is optional: a record with an ``image`` has at most one placeholder (0 or 1,
in any human turn), and its image is always shown on the *first* user turn, as the official training loader
does. A placeholder in a record without an ``image``, or more than one placeholder, is an error.

One record is one Sample (id = the record's id), whatever its number of turns:

* the last human/gpt pair is the sample's question and reference: ``question``, ``answers`` (its
  ``<CONCLUSION>``) and ``context`` (``summary`` / ``caption`` / ``reasoning`` / ``conclusion`` / ``cot``)
  come from the last pair;
* earlier pairs go to ``context["history"]`` as ``[[question, answer], …]`` (``<image>`` removed). A recipe
  renders them first (``Recipe.conversation``): user turn with the image, the record's own gpt answer, …,
  then the recipe's prompt for the last question. Training therefore labels every gpt turn of the record
  (``VLMAdapter.training_batch`` labels every assistant turn); evaluation gives the earlier turns, with
  their gold answers, as context and scores the model's answer to the last question against the last gpt
  turn (one prediction per record, so a record never counts twice in the metrics or in a split).
``validate_record`` lists every reason a record is bad (it never raises); ``load_llava_cot`` turns good
records into Samples (strict: one DataError naming every bad record, ``FILE: line N (id X): reason``;
non-strict: bad records are skipped); ``scan`` counts good and bad records by reason for
``python -m vlm prepare llava-cot``.

A reason reads ``KIND`` or ``KIND: detail``; ``reason_kind`` keeps the part before ``": "`` so a report can
count 100k records by a handful of kinds (``image not found``, ``missing tag <CAPTION>``, …).

Metrics (the paper evaluates task accuracy of the ``<CONCLUSION>``; references are the conclusion text):
``em`` = exact match after ``ptb_tokenize`` (ScanQA's ``em@1_clean``) against any reference — task accuracy
where answers are short words or phrases; our caption-style additions for sentence answers: BLEU-1..4,
ROUGE-L, CIDEr, METEOR (``vlm.metrics.caption_scores``, overall and per group, as for ScanQA) and ``sbert``
(best reference).

The committed toy sample (``llava_cot_dataset/sample``) is written by ``vlm.data.toyworld.write_llava_cot_sample``:
``python -m vlm.benchmarks.llava_cot --write-sample llava_cot_dataset/sample`` (deterministic per ``--seed``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm.benchmarks.base import Benchmark, Log, Row
from vlm.data.common import check_images_dir, is_json_list, read_json
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample

NAME = "llava-cot"
TAGS = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
RECORD_KEYS = {"id": str, "image": str, "conversations": list}


# ---------------------------------------------------------------------------------------------------
# Checks (each returns reasons, never raises)
# ---------------------------------------------------------------------------------------------------


def reason_kind(reason: str) -> str:
    """The countable part of a reason: 'image not found: coco/x.jpg' -> 'image not found'."""
    return reason.split(": ", 1)[0]


def tag_problems(text: str) -> list[str]:
    """Why a gpt answer is not four non-empty tags, each exactly once, in the order SUMMARY, CAPTION,
    REASONING, CONCLUSION ([] when it is)."""
    reasons: list[str] = []
    spans: list[tuple[str, int, int]] = []  # (tag, start of <TAG>, end of </TAG>)
    for tag in TAGS:
        opens, closes = text.count(f"<{tag}>"), text.count(f"</{tag}>")
        if opens == 0 and closes == 0:
            reasons.append(f"missing tag <{tag}>")
        elif opens > 1 or closes > 1:
            reasons.append(f"duplicated tag <{tag}>: {opens} <{tag}>, {closes} </{tag}>")
        elif opens != closes:
            reasons.append(f"unbalanced tag <{tag}>: {opens} <{tag}>, {closes} </{tag}>")
        else:
            start, end = text.index(f"<{tag}>"), text.index(f"</{tag}>")
            if end < start:
                reasons.append(f"unbalanced tag <{tag}>: </{tag}> comes before <{tag}>")
            elif not text[start + len(tag) + 2 : end].strip():
                reasons.append(f"empty tag <{tag}>")
            else:
                spans.append((tag, start, end + len(tag) + 3))
    if len(spans) == len(TAGS):
        for (_, _, a_end), (_, b_start, _) in itertools.pairwise(spans):
            if b_start < a_end:
                order = " ".join(t for t, _, _ in sorted(spans, key=lambda s: s[1]))
                reasons.append(f"tags out of order: found {order}, expected {' '.join(TAGS)}")
                break
    return reasons


def parse_cot(text: str) -> dict[str, str]:
    """{'summary': …, 'caption': …, 'reasoning': …, 'conclusion': …} (stripped); '' for a missing tag."""
    out = {}
    for tag in TAGS:
        m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
        out[tag.lower()] = m.group(1).strip() if m else ""
    return out


def image_path_problem(image: str, image_root: str | Path | None) -> str | None:
    """Lexical check (symlinked source folders such as ``coco -> /data/coco`` are fine): the path must stay
    inside the root; with a root, the file must exist."""
    norm = os.path.normpath(image)
    if os.path.isabs(image) or norm == ".." or norm.startswith(".." + os.sep):
        return f"image path escapes the image root: {image}"
    if image_root is not None and not os.path.isfile(os.path.join(image_root, norm)):
        return f"image not found: {image}"
    return None


def _turns(conversations: list, reasons: list[str]) -> list[tuple[str, str]]:
    """(question, answer) pairs of an alternating human/gpt conversation; reasons for anything else."""
    turns: list[tuple[str, str]] = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            reasons.append(f"bad turn: turn {k} is a {type(turn).__name__}, expected an object with 'from' and 'value'")
        elif not isinstance(turn.get("value"), str):
            reasons.append(f"bad turn: turn {k} has no string 'value'")
        elif turn.get("from") not in ROLES:
            reasons.append(f"unknown role: turn {k} is from {turn.get('from')!r} (expected 'human' or 'gpt')")
        else:
            turns.append((turn["from"], turn["value"]))
    if len(turns) != len(conversations):
        return []
    roles = [r for r, _ in turns]
    if "human" not in roles:
        reasons.append("no human turn")
    if "gpt" not in roles:
        reasons.append("no gpt turn")
    if "human" not in roles or "gpt" not in roles:
        return []
    expected = ["human", "gpt"] * ((len(roles) + 1) // 2)
    if roles != expected[: len(roles)] or len(roles) % 2:
        k = next((i for i, (r, e) in enumerate(zip(roles, expected)) if r != e), len(roles) - 1)
        reasons.append(f"turns do not alternate human/gpt: turn {k} is from '{roles[k]}'")
        return []
    return [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns), 2)]


def validate_record(rec: Any, image_root: str | Path | None = None) -> list[str]:
    """Every reason this record is unusable; [] for a good record. Never raises."""
    if not isinstance(rec, dict):
        return [f"record is not a JSON object: {type(rec).__name__}"]
    reasons: list[str] = []
    for key, typ in RECORD_KEYS.items():
        value = rec.get(key)
        if key not in rec:
            reasons.append(f"missing key '{key}'")
        elif key == "id" and isinstance(value, int) and not isinstance(value, bool):
            pass  # numeric ids are common in LLaVA-format files; they are still ids
        elif not isinstance(value, typ):
            reasons.append(f"wrong type of '{key}': {type(value).__name__} (expected {'a list' if typ is list else 'a string'})")
        elif typ is str and not value.strip():
            reasons.append(f"empty '{key}'")
    conversations = rec.get("conversations")
    pairs = _turns(conversations, reasons) if isinstance(conversations, list) else []
    if pairs:
        n_images = sum(q.count(IMAGE_TOKEN) for q, _ in pairs)
        if isinstance(rec.get("image"), str) and n_images > 1:  # 0 is the official generator's layout
            reasons.append(f"wrong <image> count: {n_images} in the human turns (expected at most 1, for one image)")
        elif "image" not in rec and n_images:
            reasons.append(f"wrong <image> count: {n_images} in the human turns but the record has no image")
        for k, (_, answer) in enumerate(pairs):
            for r in tag_problems(answer):
                if len(pairs) > 1:  # name the turn, after the kind so reasons still count by kind
                    r = f"{r} (gpt turn {2 * k + 1})" if ": " in r else f"{r}: gpt turn {2 * k + 1}"
                reasons.append(r)
    image = rec.get("image")
    if isinstance(image, str) and image.strip():
        problem = image_path_problem(image, image_root)
        if problem:
            reasons.append(problem)
    return reasons


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def iter_records(path: str | Path) -> Iterator[tuple[str, Any, str | None]]:
    """(location, record or None, reason the line is unreadable or None) for JSONL or a JSON list file.
    Streams JSONL line by line (100k records need not sit in memory twice)."""
    path = Path(path)
    if is_json_list(path):
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError.single(path, "top level", f"expected a list of records, got {type(data).__name__}")
        for i, rec in enumerate(data):
            yield f"[{i}]", rec, None
        return
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield f"line {n}", None, f"not UTF-8 text: byte {e.start}"
                continue
            if not line.strip():
                continue
            try:
                yield f"line {n}", json.loads(line), None
            except json.JSONDecodeError as e:
                yield f"line {n}", None, f"not JSON: {e.msg} at col {e.colno}"


def _record_id(rec: Any) -> str | None:
    if isinstance(rec, dict) and isinstance(rec.get("id"), (str, int)) and not isinstance(rec.get("id"), bool):
        return str(rec["id"])
    return None


def checked_records(path: str | Path, image_root: str | Path | None) -> Iterator[tuple[str, Any, list[str]]]:
    """(location with id, record, reasons) for every record; duplicate ids are a reason too."""
    first_seen: dict[str, str] = {}
    for where, rec, unreadable in iter_records(path):
        if unreadable:
            yield where, None, [unreadable]
            continue
        reasons = validate_record(rec, image_root)
        rid = _record_id(rec)
        if rid is not None:
            if rid in first_seen:
                reasons.append(f"duplicate id: '{rid}' (first at {first_seen[rid]})")
            else:
                first_seen[rid] = where
            where = f"{where} (id {rid})"
        yield where, rec, reasons


def scene_id_of(image: str) -> str:
    """A record's scene: its image path without the extension, so questions about one image stay on one
    side of a split."""
    return os.path.splitext(os.path.normpath(image))[0]


def record_samples(rec: dict, image_root: str | Path | None) -> list[Sample]:
    """The Sample of a validated record (a list, for the loaders): the last human/gpt pair is the question
    and reference, earlier pairs are ``context["history"]`` (see the module docstring)."""
    pairs = [(q.replace(IMAGE_TOKEN, "").strip(), a) for q, a in _turns(rec["conversations"], [])]
    image_rel = os.path.normpath(rec["image"])
    image = os.path.abspath(os.path.join(image_root, image_rel)) if image_root is not None else None
    question, answer = pairs[-1]
    parts = parse_cot(answer)
    context: dict[str, Any] = {**parts, "cot": answer, "source": image_rel.split(os.sep, 1)[0]}
    if len(pairs) > 1:
        context["history"] = [list(p) for p in pairs[:-1]]
    return [Sample(
        id=str(rec["id"]),
        benchmark=NAME,
        scene_id=scene_id_of(image_rel),
        image=image,
        question=question,
        answers=[parts["conclusion"]],
        question_type=[],
        context=context,
    )]


def load_llava_cot(path: str | Path, image_root: str | Path | None = None, strict: bool = True) -> list[Sample]:
    """Samples of every good record. strict: raise one DataError listing every bad record; else skip them.
    Without ``image_root`` images are not checked on disk and ``Sample.image`` is None (text only)."""
    root = check_images_dir(image_root)
    problems = Problems(path)
    samples: list[Sample] = []
    for where, rec, reasons in checked_records(path, root):
        if reasons:
            for reason in reasons:
                problems.add(where, reason)
            continue
        samples.extend(record_samples(rec, root))
    if strict:
        problems.raise_if_any()
    return samples


@dataclass
class ScanReport:
    """Counts of one file: good / bad records, bad records by reason kind (a record counts once per kind)."""

    file: str
    total: int = 0
    good: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first 'location: reason'
    sources: Counter = field(default_factory=Counter)  # good records per source folder

    @property
    def bad(self) -> int:
        return self.total - self.good

    def render(self) -> str:
        lines = [f"{self.file}: {self.total} records, {self.good} good, {self.bad} bad"]
        if self.reasons:
            lines.append("  bad records by reason:")
            width = max(map(len, self.reasons))
            for kind, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {n:>8}  {kind:<{width}}  e.g. {self.examples[kind]}")
        if self.sources:
            lines.append("  good records by source: " + ", ".join(f"{s} {n}" for s, n in sorted(self.sources.items())))
        return "\n".join(lines)


def scan(path: str | Path, image_root: str | Path | None = None) -> ScanReport:
    report = ScanReport(str(path))
    for where, rec, reasons in checked_records(path, image_root):
        report.total += 1
        if not reasons:
            report.good += 1
            report.sources[os.path.normpath(rec["image"]).split(os.sep, 1)[0]] += 1
            continue
        for reason in reasons:
            kind = reason_kind(reason)
            report.examples.setdefault(kind, f"{where}: {reason}")
        report.reasons.update(set(map(reason_kind, reasons)))
    return report


# ---------------------------------------------------------------------------------------------------
# The download (``python -m vlm prepare llava-cot``) and the benchmark
# ---------------------------------------------------------------------------------------------------

IMAGE_ROOT_CANDIDATES = (".", "images", "image")


def find_image_root(root: Path, train: Path, probe: int = 200) -> tuple[Path, int, int]:
    """(image root, images found, images probed) among IMAGE_ROOT_CANDIDATES, by the first ``probe`` records."""
    images = []
    for _, rec, _ in iter_records(train):
        if isinstance(rec, dict) and isinstance(rec.get("image"), str) and rec["image"].strip():
            images.append(rec["image"])
            if len(images) >= probe:
                break
    best = (root, -1)
    for name in IMAGE_ROOT_CANDIDATES:
        cand = (root / name) if name != "." else root
        if cand.is_dir():
            found = sum(image_path_problem(im, cand) is None for im in images)
            if found > best[1]:
                best = (cand, found)
    return best[0], max(best[1], 0), len(images)


class LLaVACoT(Benchmark):
    name = NAME
    headline = "em"
    metrics = ("em",)
    corpus_captions = True
    group_noun = "images"
    jsonl = True
    image_archive = True

    def claims(self, data: Any) -> bool:
        return isinstance(data, dict) and "conversations" in data  # a one-line JSONL file read as JSON

    def claims_record(self, record: Any) -> bool:
        return isinstance(record, dict) and "conversations" in record

    def load(self, path, images_dir=None, *, data=None, **options) -> list[Sample]:
        """``images_dir``: the image root the records' relative paths start from."""
        return load_llava_cot(path, images_dir)

    def split_group(self, record: dict) -> str:
        return scene_id_of(record["image"])  # every record about one image

    def score(self, preds, *, sbert_model, normalization) -> list[Row]:
        from vlm.metrics.text import ptb_exact_match  # vlm.metrics imports the registry, so not at the top

        return [{"em": ptb_exact_match(p.prediction, p.references)} for p in preds]  # ScanQA's em@1_clean

    def check_download(self, root: Path, log: Log) -> None:
        """Validate every record of ``root/train.jsonl`` against the image root (``root``, or ``root/images`` /
        ``root/image`` when the records' images are found there) and log good / bad counts by reason."""
        train = root / "train.jsonl"
        if not train.is_file():
            raise DataError.single(train, "-", "file not found (LLaVA-CoT-100k ships train.jsonl next to the image parts)")
        image_root, found, probed = find_image_root(root, train)
        log(f"image root: {image_root} ({found} of the first {probed} records' images found there)")
        log(scan(train, image_root).render())


if __name__ == "__main__":  # the committed toy sample (vlm.data.toyworld writes it)
    from vlm.data import toyworld
    from vlm.data.common import write_sample_cli

    write_sample_cli(toyworld.write_llava_cot_sample, "write the toy-world LLaVA-CoT sample (train.jsonl + images/toy/*.png)",
                     "llava-cot sample: {n} records -> {out}")
