"""Reasoning recipes as data: ``vlm/recipes/<name>.yaml`` (or any YAML path).

A recipe is an ordered list of phases; each phase is a prompt template, whether the image is attached,
``max_new_tokens``, optionally ``when`` (a sample field that must be non-empty, e.g. ``context_change``) and
``gold`` (the sample field holding that phase's reference text, for CE training on gold CoT). Running a recipe
gives one multi-turn conversation: user prompt, model output, next prompt, …; the final phase's output is the
answer. Students train on every assistant turn of that conversation. A sample with ``context["history"]``
(the earlier turns of a multi-turn LLaVA-CoT record) starts with those turns, the image on the first user turn.

Answer extraction from the final output: the text inside ``answer_tag`` (e.g. LLaVA-CoT's ``<CONCLUSION>``),
or after the last ``answer_after`` marker (e.g. ``Answer:``); a structured output's ``<CONCLUSION>`` is its
answer under every recipe, and so is a last line "Answer: …" (a model fine-tuned on LLaVA-CoT data or on
A-OKVQA rationales writes that format even when asked directly);
otherwise the whole output. Gold of the final phase: the sample's ``gold`` field when it has one (the full
four-tag CoT of a LLaVA-CoT record, an A-OKVQA rationale target), else the gold answer in the recipe's
answer format.

Template fields: ``{question}``, ``{task}`` (the benchmark's question block, ``Benchmark.task_text``: context
change + question for Hypo3D, question + the four choices for A-OKVQA, the question elsewhere),
``{context_change}``, ``{orientation}``, ``{orientation_line}`` ("Scene
orientation: …\\n" or ""), and the outputs of earlier phases by phase name.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlm.benchmarks import get as get_benchmark
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample

RECIPES_DIR = Path(__file__).resolve().parent
SAMPLE_FIELDS = ("question", "task", "context_change", "orientation", "orientation_line")
PHASE_KEYS = {"name", "prompt", "image", "max_new_tokens", "when", "gold"}
RECIPE_KEYS = {"name", "description", "phases", "answer_tag", "answer_after"}
STRUCTURED_ANSWER_TAG = "CONCLUSION"  # LLaVA-CoT
ANSWER_LINE = re.compile(r"^[ \t]*Answer:", re.M)  # A-OKVQA rationale targets end on a line "Answer: …"

Conversation = list[dict[str, Any]]


@dataclass(frozen=True)
class Phase:
    name: str
    prompt: str
    image: bool = False
    max_new_tokens: int = 64
    when: str | None = None
    gold: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    answer_tag: str | None = None
    answer_after: str | None = None

    # ------------------------------------------------------------------ rendering
    def active(self, sample: Sample) -> list[Phase]:
        f = fields(sample)
        return [p for p in self.phases if not p.when or f.get(p.when)]

    def prompt(self, phase: Phase, sample: Sample, outputs: dict[str, str]) -> str:
        return phase.prompt.format(**fields(sample), **outputs)

    def conversation(self, sample: Sample, outputs: list[str], *, blind: bool = False) -> Conversation:
        """User/assistant turns for the active phases: one assistant turn per given output; if fewer outputs
        than phases, it ends on the next phase's user turn (the generation prompt)."""
        phases = self.active(sample)
        named = {p.name: o for p, o in zip(phases, outputs)}
        conv: Conversation = []
        # Earlier turns of a multi-turn record (LLaVA-CoT ``context["history"]``: [[question, answer], …]) come
        # first, as given; the image then sits on the first user turn, as in the official LLaVA-CoT loader.
        for question, answer in sample.context.get("history") or ():
            conv.append({"role": "user", "content": [{"type": "text", "text": question}]})
            conv.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        has_history = bool(conv)
        if has_history and not blind and any(p.image for p in phases):
            conv[0]["content"].insert(0, {"type": "image"})
        for i, phase in enumerate(phases[: len(outputs) + 1]):
            content = [{"type": "image"}] if phase.image and not blind and not has_history else []
            content.append({"type": "text", "text": self.prompt(phase, sample, named)})
            conv.append({"role": "user", "content": content})
            if i < len(outputs):
                conv.append({"role": "assistant", "content": [{"type": "text", "text": outputs[i]}]})
        return conv

    def answer(self, outputs: list[str]) -> str:
        final = outputs[-1] if outputs else ""
        tag = self.answer_tag or (STRUCTURED_ANSWER_TAG if f"<{STRUCTURED_ANSWER_TAG}>" in final else None)
        tagged = tag_texts(final, tag) if tag else []
        if tagged:
            return tagged[0]
        if self.answer_after and self.answer_after in final:
            return final.rsplit(self.answer_after, 1)[1].strip().split("\n", 1)[0].strip()
        split = split_answer_line(final)
        if split:  # a model trained on rationale targets writes them under any prompt
            return split[1].strip().split("\n", 1)[0].strip()
        return final.strip()

    def format_answer(self, answer: str) -> str:
        """The gold answer written the way ``answer`` reads it back."""
        if self.answer_tag:
            return f"<{self.answer_tag}>{answer}</{self.answer_tag}>"
        return f"{self.answer_after} {answer}" if self.answer_after else answer

    def gold(self, sample: Sample) -> list[str] | None:
        """Reference outputs for every active phase (the last one is the gold answer), or None when the
        dataset lacks a phase's gold text."""
        out = []
        phases = self.active(sample)
        for phase in phases[:-1]:
            text = sample.context.get(phase.gold) if phase.gold else None
            if not text:
                return None
            out.append(text)
        final = phases[-1].gold and sample.context.get(phases[-1].gold)
        out.append(final or self.format_answer(sample.answer))
        return out


def tag_texts(text: str, tag: str) -> list[str]:
    """The stripped contents of every ``<tag>…</tag>`` in ``text``; an unclosed tag (generation cut at
    max_new_tokens) runs to the end of the text."""
    return [m.group(1).strip() for m in re.finditer(rf"<{tag}>(.*?)(?:</{tag}>|\Z)", text, re.S)]


def split_answer_line(text: str) -> tuple[str, str] | None:
    """(text before, text after) the last line-start "Answer:" of ``text``; None when it has none."""
    lines = list(ANSWER_LINE.finditer(text))
    return (text[: lines[-1].start()], text[lines[-1].end():]) if lines else None


def fields(sample: Sample) -> dict[str, str]:
    ctx = sample.context
    orientation = ctx.get("orientation") or ""
    return {
        "question": sample.question,
        "task": get_benchmark(sample.benchmark).task_text(sample),
        "context_change": ctx.get("context_change") or "",
        "orientation": orientation,
        "orientation_line": f"Scene orientation: {orientation}\n" if orientation else "",
    }


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (vlm/recipes/<name>.yaml) or by YAML path, validated; errors name the file and key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise DataError.single(name_or_path, "-", f"unknown recipe (available: {', '.join(available())})")
    if not path.is_file():
        raise DataError.single(path, "-", "recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError.single(path, f"line {mark.line + 1}" if mark else "-", f"invalid YAML: {e}") from None
    problems = Problems(path)
    if not isinstance(data, dict):
        problems.add("top level", "expected a mapping with name and phases")
        problems.raise_if_any()
    for key in sorted(set(data) - RECIPE_KEYS):
        problems.add(f"key '{key}'", f"unknown (known: {', '.join(sorted(RECIPE_KEYS))})")
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        problems.add("phases", "expected a non-empty list")
        problems.raise_if_any()
    phases, seen = [], []
    for i, raw in enumerate(raw_phases):
        where = f"phases[{i}]"
        if not isinstance(raw, dict):
            problems.add(where, "expected a mapping")
            continue
        for key in sorted(set(raw) - PHASE_KEYS):
            problems.add(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(PHASE_KEYS))})")
        if not isinstance(raw.get("name"), str) or not isinstance(raw.get("prompt"), str):
            problems.add(where, "needs a string 'name' and a string 'prompt'")
            continue
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(raw["prompt"]) if f}
        except ValueError as e:
            problems.add(f"{where}.prompt", f"bad template: {e}")
            continue
        for field_name in sorted(used - set(SAMPLE_FIELDS) - set(seen)):
            problems.add(f"{where}.prompt", f"unknown field '{{{field_name}}}' (fields: {', '.join(SAMPLE_FIELDS + tuple(seen))})")
        seen.append(raw["name"])
        phases.append(Phase(name=raw["name"], prompt=raw["prompt"], image=bool(raw.get("image", False)),
                            max_new_tokens=int(raw.get("max_new_tokens", 64)), when=raw.get("when"), gold=raw.get("gold")))
    if sum(p.image for p in phases) > 1:
        problems.add("phases", "at most one phase may attach the image")
    problems.raise_if_any()
    return Recipe(name=str(data.get("name", path.stem)), phases=tuple(phases), description=str(data.get("description", "")).strip(),
                  answer_tag=data.get("answer_tag"), answer_after=data.get("answer_after"))


def run(recipe: Recipe, adapter, samples: list[Sample], images: list, *, blind: bool = False,
        gen_cfg: dict | None = None, max_new_tokens: int = 0) -> list[list[str]]:
    """Run every phase of the recipe for a batch of samples: phase by phase, batched across the samples
    that have that phase (a phase's prompt sees the earlier outputs). ``max_new_tokens`` > 0 replaces every
    phase's budget. Returns the outputs per sample."""
    outputs: list[list[str]] = [[] for _ in samples]
    active = [recipe.active(s) for s in samples]
    for step in range(max(map(len, active))):
        rows = [i for i, phases in enumerate(active) if step < len(phases)]
        by_tokens: dict[int, list[int]] = {}
        for i in rows:  # one generate call per max_new_tokens value
            by_tokens.setdefault(max_new_tokens or active[i][step].max_new_tokens, []).append(i)
        for max_new, idx in by_tokens.items():
            convs = [recipe.conversation(samples[i], outputs[i], blind=blind) for i in idx]
            imgs = [None if blind or not _shows_image(c) else images[i] for i, c in zip(idx, convs)]
            texts = generate_each_once(adapter, convs, imgs, {**(gen_cfg or {}), "max_new_tokens": max_new})
            for i, text in zip(idx, texts):
                outputs[i].append(text)
    return outputs


def generate_each_once(adapter, convs: list[Conversation], images: list, gen_cfg: dict) -> list[str]:
    """``adapter.generate``, with identical (conversation, image) rows generated once when decoding is greedy
    (then a row's text is a function of its input): hypo3d-cot's observe phase is the same for every question
    of a scene, its imagine phase for every question of a context change."""
    if gen_cfg.get("do_sample"):
        return adapter.generate(convs, images, gen_cfg)

    def key(conv, image):
        pixels = None if image is None else (image.mode, image.size, hashlib.sha1(image.tobytes()).hexdigest())
        return json.dumps(conv, sort_keys=True), pixels

    keys = [key(c, im) for c, im in zip(convs, images)]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each input's first row
    rows = sorted(first.values())
    texts = dict(zip((keys[i] for i in rows), adapter.generate([convs[i] for i in rows], [images[i] for i in rows], gen_cfg)))
    return [texts[k] for k in keys]


def _shows_image(conversation: Conversation) -> bool:
    return any(item.get("type") == "image" for m in conversation for item in m["content"])
