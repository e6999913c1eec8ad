"""Every recipe file loads and renders; recipe conversations, answers and gold CoT."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vlm.data.errors import DataError
from vlm.data.sample import Sample
from vlm.recipes import available, load_recipe

HYPO = Sample(id="1", benchmark="hypo3d", scene_id="s", image=None, question="Where is the red chair now?", answers=["back left"],
              question_type=["Direction"], context={"context_change": "The red chair has been moved to the back left of the room.",
                                                   "change_type": "Movement", "orientation": "The door was located at the front of the scene.",
                                                   "scene_description": "front left: red chair.", "changed_scene_description": "back left: red chair."})
SCAN = Sample(id="2", benchmark="scanqa", scene_id="s", image=None, question="What colour is the bed?", answers=["blue"])


def test_the_five_recipes_exist():
    assert set(available()) >= {"direct", "hypo3d-cot", "scratchpad", "llava-cot", "self-correct"}


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("sample", [HYPO, SCAN], ids=["hypo3d", "scanqa"])
def test_every_recipe_loads_and_renders(name, sample):
    recipe = load_recipe(name)
    phases = recipe.active(sample)
    assert phases and sum(p.image for p in phases) == 1
    outputs = [f"out{i}" for i in range(len(phases))]
    for n in range(len(phases)):  # the generation prompt of every phase renders without leftover braces
        conv = recipe.conversation(sample, outputs[:n])
        assert conv[-1]["role"] == "user" and len(conv) == 2 * n + 1
        text = conv[-1]["content"][-1]["text"]
        assert "{" not in text and "}" not in text
    full = recipe.conversation(sample, outputs)
    assert [m["role"] for m in full] == ["user", "assistant"] * len(phases)
    assert full[0]["content"][0]["type"] == "image"
    assert recipe.conversation(sample, outputs, blind=True)[0]["content"][0]["type"] == "text"


def test_hypo3d_cot_phases_and_gold():
    r = load_recipe("hypo3d-cot")
    assert [p.name for p in r.active(HYPO)] == ["observe", "imagine", "answer"]
    assert [p.name for p in r.active(SCAN)] == ["observe", "answer"]  # no context change: no imagine phase
    first = r.conversation(HYPO, [])[0]["content"][1]["text"]
    assert first.startswith("Scene orientation: The door was located at the front of the scene.\n")
    assert r.gold(HYPO) == ["front left: red chair.", "back left: red chair.", "back left"]
    assert r.gold(SCAN) is None  # ScanQA sample without a scene description
    assert "Context change: The red chair has been moved" in r.conversation(HYPO, ["x"])[-1]["content"][0]["text"]


def test_direct_prompt_is_the_zoo_pretraining_wording():
    from vlm.models.zoo import hypo3d_prompt, scanqa_prompt

    d = load_recipe("direct")
    assert d.conversation(HYPO, [])[0]["content"][1]["text"] == hypo3d_prompt(HYPO.context["context_change"], HYPO.question,
                                                                               HYPO.context["orientation"])
    assert d.conversation(SCAN, [])[0]["content"][1]["text"] == scanqa_prompt(SCAN.question)


def test_llava_cot_answer_parsed_from_conclusion():
    r = load_recipe("llava-cot")
    out = "<SUMMARY>s</SUMMARY> <CAPTION>c</CAPTION> <REASONING>r</REASONING> <CONCLUSION> two </CONCLUSION>"
    assert r.answer([out]) == "two"
    assert r.answer(["<CONCLUSION>three"]) == "three"  # cut off before the closing tag
    assert r.answer(["no tags at all"]) == "no tags at all"
    assert r.gold(SCAN) == ["<CONCLUSION>blue</CONCLUSION>"]


LLAVA = Sample(id="3", benchmark="llava-cot", scene_id="toy/s", image=None, question="What colour is the bed?", answers=["blue"],
               context={"cot": "<SUMMARY>s</SUMMARY> <CAPTION>c</CAPTION> <REASONING>r</REASONING> <CONCLUSION>blue</CONCLUSION>"})
AOK = Sample(id="4", benchmark="aokvqa", scene_id="7", image=None, question="What colour is the cab?", answers=["yellow", "yellow"],
             context={"choices": ["red", "yellow", "blue", "green"], "correct_choice_idx": 1,
                      "rationale_cot": "Cabs in this city are yellow.\nAnswer: yellow"})


def test_structured_gold_is_the_records_own_cot():
    r = load_recipe("llava-cot")
    assert r.gold(LLAVA) == [LLAVA.context["cot"]]  # the four-tag answer, not just the conclusion
    assert r.answer(r.gold(LLAVA)) == "blue"  # and it reads back as the gold answer


def test_rationale_recipe_trains_on_rationale_and_parses_after_answer():
    r = load_recipe("rationale")
    assert r.gold(AOK) == ["Cabs in this city are yellow.\nAnswer: yellow"]
    assert r.gold(SCAN) == ["Answer: blue"]  # no rationale: the answer in the recipe's own format
    assert r.answer(["It is a cab. Answer: no\nmore reasoning.\nAnswer: yellow\n"]) == "yellow"  # the last marker
    assert r.answer(["just yellow"]) == "just yellow"
    prompt = r.conversation(AOK, [])[0]["content"][1]["text"]
    assert "Choices: red, yellow, blue, green" in prompt  # the multiple-choice setting shows the options


def test_a_structured_output_is_parsed_under_every_recipe():
    out = "<SUMMARY>s</SUMMARY> <REASONING>r</REASONING> <CONCLUSION>two</CONCLUSION>"
    for name in ("direct", "scratchpad", "self-correct"):
        r = load_recipe(name)
        assert r.answer(["x"] * (len(r.phases) - 1) + [out]) == "two"
        assert r.answer(["x"] * (len(r.phases) - 1) + ["two"]) == "two"
        assert r.answer(["x"] * (len(r.phases) - 1) + ["It has two legs.\nAnswer: two\n"]) == "two"  # rationale format
    assert load_recipe("direct").answer(["The Answer: is not at a line start"]) == "The Answer: is not at a line start"


def test_max_new_tokens_overrides_every_phase():
    from vlm.recipes import run

    class Recorder:
        def __init__(self):
            self.budgets = []

        def generate(self, convs, images, gen_cfg):
            self.budgets.append(gen_cfg["max_new_tokens"])
            return ["out"] * len(convs)

    r = load_recipe("scratchpad")
    rec = Recorder()
    run(r, rec, [SCAN], [None])
    assert rec.budgets == [p.max_new_tokens for p in r.phases]
    rec = Recorder()
    run(r, rec, [SCAN], [None], max_new_tokens=200)
    assert rec.budgets == [200, 200]


def test_greedy_phases_generate_each_distinct_input_once():
    """hypo3d-cot's observe phase is the same for every question of a scene (and imagine for every question of
    a change): with greedy decoding it is generated once per distinct (conversation, image); sampling keeps every row."""
    from PIL import Image

    from vlm.recipes import run

    class Recorder:
        def __init__(self):
            self.calls = []

        def generate(self, convs, images, gen_cfg):
            self.calls.append(len(convs))
            return [f"out {len(str(c))} {im.getpixel((0, 0)) if im else None}" for c, im in zip(convs, images)]

    r = load_recipe("hypo3d-cot")
    change = {**HYPO.context, "context_change": "The chair moved."}
    samples = [HYPO, replace(HYPO, question="Is there a cube?"), replace(HYPO, context=change)]
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    rec = Recorder()
    once = run(r, rec, samples + [HYPO], [red, red, red, blue])
    assert rec.calls == [2, 3, 4]  # observe: red, blue; imagine: two changes x two images -> 3 distinct; answers: all
    rec = Recorder()
    every = run(r, rec, samples + [HYPO], [red, red, red, blue], gen_cfg={"do_sample": True})
    assert rec.calls == [4, 4, 4] and every == once  # same texts, each row generated


def test_bad_recipe_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nphases:\n  - name: a\n    prompt: '{nope}'\n    colour: red\n  - name: b\n    prompt: '{a} {b}'\n    image: true\n")
    with pytest.raises(DataError) as e:
        load_recipe(str(bad))
    text = e.value.render()
    assert f"{bad}: phases[0].colour: unknown key" in text
    assert "phases[0].prompt: unknown field '{nope}'" in text
    assert "phases[1].prompt: unknown field '{b}'" in text  # a phase sees only earlier phases
    with pytest.raises(DataError, match="unknown recipe"):
        load_recipe("no-such-recipe")
