"""The benchmark protocol and registry (vlm.benchmarks): lookup, detection order, the hooks the agnostic code calls."""

from __future__ import annotations

import json

import pytest

import vlm.data
from vlm import benchmarks, metrics
from vlm.benchmarks import BENCHMARKS, Benchmark, detect_benchmark, get
from vlm.data.errors import DataError
from vlm.data.sample import Sample
from vlm.recipes import available
from vlm.stages import prepare


def test_get_names_the_known_benchmarks():
    assert get("hypo3d") is BENCHMARKS["hypo3d"]
    with pytest.raises(DataError) as e:
        get("nope", "x.json")
    assert str(e.value).startswith("x.json: -: unknown benchmark 'nope' (supported: ")
    assert all(name in str(e.value) for name in BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_is_complete(name):
    b = BENCHMARKS[name]
    assert b.name == name and b.headline in b.metrics and set(b.counted) <= set(b.metrics)
    assert b.per_sample_metrics[-2:] == ("sbert", "has_reasoning")
    assert b.train_recipe in available()
    assert metrics.headline(name) == b.headline == metrics.HEADLINE[name]


def test_headline_of_an_unknown_benchmark_is_a_data_error():
    with pytest.raises(DataError, match="unknown benchmark 'nope'"):
        metrics.headline("nope")


class _Captions(Benchmark):
    """A dict with 'annotations' (a list of objects): ScanQA's permissive scene-grouped detection would take it."""

    name = "toy-captions"

    def claims(self, data):
        return isinstance(data, dict) and "annotations" in data


def test_a_specific_benchmark_wins_over_the_fallback_whatever_its_place(monkeypatch):
    data = {"annotations": [{"image_id": 1, "caption": "a room"}]}
    monkeypatch.setattr(benchmarks, "BENCHMARKS", {k: v for k, v in BENCHMARKS.items() if k != "coco-captions"})
    assert detect_benchmark(data) == "scanqa"  # the fallback, without a more specific claim
    monkeypatch.setitem(benchmarks.BENCHMARKS, "toy-captions", _Captions())  # registered last
    assert detect_benchmark(data) == "toy-captions"
    assert detect_benchmark({"s0": [{"question": "?"}]}) == "scanqa"


def test_a_list_goes_to_the_benchmark_most_records_belong_to():
    aok = {"choices": ["a", "b", "c", "d"], "image_id": 1}
    llava = {"conversations": []}
    assert detect_benchmark([aok, aok, llava]) == "aokvqa"
    assert detect_benchmark([llava, {"x": 1}, llava]) == "llava-cot"
    assert detect_benchmark([]) == "scanqa" and detect_benchmark([1, 2]) == "scanqa"
    assert detect_benchmark("text") is None


def _sample(benchmark: str, **context) -> Sample:
    return Sample(id="1", benchmark=benchmark, scene_id="s", image=None, question="Where?", answers=["left"], context=context)


def test_task_text_is_the_benchmarks_own():
    assert get("scanqa").task_text(_sample("scanqa")) == "Question: Where?"
    assert get("hypo3d").task_text(_sample("hypo3d", context_change="The bed moved.")) == "Context change: The bed moved.\nQuestion: Where?"
    assert get("hypo3d").task_text(_sample("hypo3d")) == "Question: Where?"
    assert get("aokvqa").task_text(_sample("aokvqa", choices=["left", "right"])) == "Question: Where?\nChoices: left, right"


def test_breakdowns_come_from_the_benchmark_and_print_generically():
    recs = [{"id": str(i), "benchmark": "hypo3d", "prediction": "left", "references": ["left" if i else "right"],
             "question_type": ["Direction"], "change_type": "Movement"} for i in range(3)]
    r = metrics.compute_metrics(recs, use_sbert=False, n_bootstrap=0)
    assert list(r)[-4:] == ["normalization", "by_question_type", "by_change_type", "by_change_and_question_type"]
    assert r["by_change_and_question_type"]["Movement"]["Direction"]["n"] == 3
    table = metrics.format_table(r)
    assert "\n  change / question type" in table and "Movement / Direction" in table
    json.dumps(r, allow_nan=False)


def test_prepare_knows_the_benchmarks_that_ship_an_image_archive():
    assert prepare.DATASETS == tuple(n for n, b in BENCHMARKS.items() if b.image_archive) and prepare.DATASETS


def test_vlm_data_still_exports_the_loading_api():
    assert vlm.data.load_samples is benchmarks.load_samples and vlm.data.BENCHMARKS is benchmarks.BENCHMARKS
    from vlm.data import DataError as E, detect_file  # what pipelines/lib/common.sh imports

    assert E is DataError and detect_file is benchmarks.detect_file
    with pytest.raises(AttributeError):
        vlm.data.no_such_name  # noqa: B018
