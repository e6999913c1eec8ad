"""The one protocol every benchmark implements: one module per benchmark (``vlm/benchmarks/<name>.py``), one
``Benchmark`` subclass instance each, picked from the plain dict ``vlm.benchmarks.BENCHMARKS``.

A benchmark owns what depends on its file format or its official evaluation: detection of its files,
loading + validation into ``Sample``s, split grouping (and rebuilding a split in its own layout), the task
text of prompts, per-sample scoring and its metric keys. Everything else (the metrics aggregation, the
stages, the recipes) is benchmark-agnostic and asks the registry.

Overriding is opt-in: the defaults below are those of a flat JSON list of questions about one image each,
scored by the SBERT best reference only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm.data.sample import Sample
from vlm.data.split import Unit

Row = dict[str, float]  # one sample's metric values (fractions; NaN where a metric does not apply)
Groups = dict[str, list[int]]  # group key -> record indices
Log = Callable[[str], None]

# Per-sample metrics every benchmark gets after its own ones: SBERT cosine (``Benchmark.sbert_scores``) and,
# when every record carries its phases, whether the output holds any reasoning.
SHARED_METRICS = ("sbert", "has_reasoning")


class Benchmark:
    """One benchmark. Subclasses set the class attributes and override what their format needs."""

    name: str  # registry key = Sample.benchmark = a prediction record's "benchmark"
    headline: str  # the metric reports lead with
    metrics: tuple[str, ...]  # its own per-sample metric keys, in report order (SHARED_METRICS follow)
    counted: tuple[str, ...] = ()  # metrics that apply to some samples only (NaN elsewhere): n_<metric> is reported
    corpus_captions: bool = False  # corpus BLEU-1..4 / ROUGE-L / CIDEr / METEOR, overall and per group
    record_keys: tuple[str, ...] = ()  # Sample.context keys a prediction record carries (the JSONL alone is scored)
    normalizations: tuple[str, ...] = ()  # answer normalisation variants (first: the official one); metrics.json names the one used
    train_recipe: str = "llava-cot"  # the structured study's default training recipe (vlm/recipes/<name>.yaml; this
    #                                  default is the four-tag CoT recipe, not the benchmark of that name)
    # its own form of a generic evaluation recipe (a caption task: direct -> caption); other names are used as is
    recipe_forms: Mapping[str, str] = {}
    group_noun: str = "scenes"  # what Sample.scene_id stands for, in summaries: scenes | images
    jsonl: bool = False  # its files may be JSON lines (a .jsonl file, or a first line it claims)
    fallback: bool = False  # permissive detection: asked only after every other benchmark declined the data
    image_archive: bool = False  # ships images as image.zip.part-*: ``python -m vlm prepare <name>`` knows it

    @property
    def per_sample_metrics(self) -> tuple[str, ...]:
        """Every per-sample metric a scored row may carry, in report order."""
        return self.metrics + SHARED_METRICS

    def recipe_for(self, name: str) -> str:
        """The recipe a study's arm named ``name`` (direct, scratchpad, …) runs on this benchmark."""
        return self.recipe_forms.get(name, name)

    # ------------------------------------------------------------------ detection
    def claims(self, data: Any) -> bool:
        """Whether a parsed JSON file (an object, or a list none of whose records any benchmark claims) is ours."""
        return False

    def claims_record(self, record: Any) -> bool:
        """Whether one record of a JSON list (or JSONL line) is ours; a list goes to the benchmark most of its
        records belong to, so one broken record does not change the verdict."""
        return False

    # ------------------------------------------------------------------ loading
    def load(self, path: str | Path, images_dir: str | Path | None = None, *, data: Any = None,
             **options: Any) -> list[Sample]:
        """Validated Samples of a file (``data``: its JSON when already parsed). ``images_dir`` as the module
        documents it; without it every Sample is text only. Every problem of the file in one DataError."""
        raise NotImplementedError

    def default_images_dir(self, path: Path) -> Path:
        """Where a data file's images live by convention (the folder need not exist)."""
        return path.parent / "images"

    # ------------------------------------------------------------------ split
    def split_group(self, record: dict) -> str:
        """The group (scene, image) of a record of a flat list: what must not straddle two splits."""
        raise NotImplementedError

    def split_units(self, data: Any) -> list[Unit]:
        """One unit per question of validated data; a flat list is addressed by index."""
        return [Unit(self.split_group(rec), (i,), f"[{i}]", f"[{i}]") for i, rec in enumerate(data)]

    def split_rebuild(self, data: Any, keep: set[tuple]) -> Any:
        """The data restricted to the units at the ``keep`` paths, original order and extra keys kept."""
        return [rec for i, rec in enumerate(data) if (i,) in keep]

    # ------------------------------------------------------------------ prompts
    def task_text(self, sample: Sample) -> str:
        """The question block of a prompt (a recipe's ``{task}``)."""
        return f"Question: {sample.question}"

    # ------------------------------------------------------------------ scoring
    def score(self, preds: Sequence[Any], *, sbert_model: str | None, normalization: str) -> list[Row]:
        """Per-sample values of ``metrics`` for prediction records (``vlm.metrics.Prediction``), in order;
        every row has the same keys. ``sbert_model`` None: no SBERT-based metric. ValueError when the
        records cannot be scored as this benchmark."""
        raise NotImplementedError

    def sbert_scores(self, preds: Sequence[Any], model: str | None, *, normalization: str) -> list[float]:
        """The ``sbert`` metric: best cosine between the tokenised prediction and any tokenised reference."""
        from vlm.metrics.text import best_reference_sbert

        return best_reference_sbert([p.prediction for p in preds], [p.references for p in preds], model)

    def groups(self, preds: Sequence[Any]) -> dict[str, Mapping]:
        """Breakdowns for metrics.json: ``{"by_<what>": {key: [record index]}}`` (or one level deeper,
        ``{key: {key2: [index]}}``). Default: per question type (multi-label), when any record has one."""
        by_qtype = group_indices((i, p.question_type) for i, p in enumerate(preds))
        return {"by_question_type": by_qtype} if by_qtype else {}

    def check_record(self, record: Mapping[str, Any], bad: Callable[[str, str], None]) -> None:
        """Benchmark-specific checks of one predictions.jsonl record: ``bad(key, message)`` per problem."""

    # ------------------------------------------------------------------ downloads
    def check_download(self, root: Path, log: Log) -> None:
        """``python -m vlm prepare <name>`` after joining and extracting ``image.zip``: validate the download
        in ``root`` and log counts (benchmarks with ``image_archive`` only)."""
        raise NotImplementedError


def group_indices(indexed_keys) -> Groups:
    """{key: record indices} from (index, keys of that record) pairs, keys sorted; a record counts once per key."""
    groups: Groups = {}
    for i, keys in indexed_keys:
        for k in dict.fromkeys(keys):
            groups.setdefault(k, []).append(i)
    return dict(sorted(groups.items()))


def first_group(data: Any) -> list[dict] | None:
    """The first group of a scene-grouped file ``{scene_id: [record, ...]}`` (a non-empty list of objects),
    or None when ``data`` is not laid out that way."""
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return value
    return None
