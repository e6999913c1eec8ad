"""The zoo card's accuracy figures (vlm/models/zoo.py ``evaluate_card``): a model that answers every question
right must score 100 — the card once capped QA at 76.8% by asking follow-up questions without their change."""

from __future__ import annotations

import re

import pytest

from vlm.models import zoo

CHANGE, QUESTION = re.compile(r"Context change: (.*)"), re.compile(r"Question: (.*)")


class Oracle:
    """A fake adapter that knows every held-out scene: it answers from the conversation's own text and image
    (the scene's listing, the reference answer of its context change + question), as a perfect model would."""

    def __init__(self, n_scenes: int, image_size: int, tmp):
        samples = zoo.card_samples(n_scenes, image_size, tmp)
        from vlm.generation import sample_image

        self.scene = {sample_image(s, False).tobytes(): s.scene_id for s in samples}
        self.listing = {s.scene_id: s.context["scene_description"] for s in samples}
        self.changed = {(s.scene_id, s.context["context_change"]): s.context["changed_scene_description"] for s in samples}
        self.answer = {(s.scene_id, s.context["context_change"], s.question): s.answer for s in samples}

    def generate(self, convs, images, gen_cfg=None):
        return [self._reply(conv, image) for conv, image in zip(convs, images)]

    def _reply(self, conv, image) -> str:
        if image is None:
            return "nothing"  # blind: no way to tell the scenes apart
        scene = self.scene[image.tobytes()]
        users = "\n".join(c["text"] for m in conv if m["role"] == "user" for c in m["content"] if c["type"] == "text")
        last = conv[-1]["content"][-1]["text"]
        if last.endswith("Describe the scene: what is at each location?"):  # hypo3d-cot's observe phase
            return self.listing[scene]
        if "Question:" not in last:  # its imagine phase
            return self.changed[(scene, CHANGE.findall(users)[-1])]
        return self.answer[(scene, CHANGE.findall(users)[-1], QUESTION.findall(users)[-1])]


def test_a_perfect_model_scores_100_on_every_figure(tmp_path):
    n_scenes = 40  # the card's own
    spec = zoo.ZooSpec(family="llava_onevision", role="teacher", text_hidden=8, text_layers=1, text_heads=1, kv_heads=1,
                       vision_hidden=8, vision_layers=1)
    card = zoo.evaluate_card(Oracle(n_scenes, spec.image_size, tmp_path), spec, n_scenes=n_scenes)
    assert card["scenes"] == n_scenes and card["questions"] == n_scenes * 6  # 2 changes x 3 questions per scene
    by_template = card.pop("cot_em_by_template_normal")
    assert all(em == 100.0 for em, _ in by_template.values()) and sum(n for _, n in by_template.values()) == n_scenes * 6
    normal = {k: v for k, v in card.items() if k.endswith("_normal")}
    assert set(normal) == {"cell_acc_normal", "object_acc_normal", "imagine_cell_acc_normal", "qa_em_direct_normal",
                           "qa_em_cot_normal"}
    assert all(v == 100.0 for v in normal.values()), card
    assert card["object_acc_blind"] == 0 and card["cell_acc_blind"] < 100 and card["qa_em_direct_blind"] < 100, card


def test_zoo_card_recomputes_the_eval_of_a_built_entry_only(tmp_path, monkeypatch):
    import json

    import vlm.models
    from vlm.data.errors import DataError

    monkeypatch.setenv("VLM_ZOO_DIR", str(tmp_path))
    entry = zoo.entry_dir("llava-ov-student")
    entry.mkdir(parents=True)
    old = {"name": "llava-ov-student", "spec": zoo.asdict(zoo.ZOO["llava-ov-student"]), "eval": {"qa_em_direct_normal": 1}}
    (entry / "zoo_card.json").write_text(json.dumps(old))
    seen = []
    monkeypatch.setattr(vlm.models, "load_model", lambda model, **kw: seen.append(model) or "adapter")
    monkeypatch.setattr(zoo, "evaluate_card", lambda adapter, spec: {"from": adapter, "image_size": spec.image_size})
    assert zoo.main(zoo.Config(action="card")) == 0  # default: every built pretrained entry
    card = json.loads((entry / "zoo_card.json").read_text())
    assert seen == ["zoo:llava-ov-student"] and card == {**old, "eval": {"from": "adapter", "image_size": 48}}
    zoo.entry_dir("cobra-mirror").mkdir()
    (zoo.entry_dir("cobra-mirror") / "zoo_card.json").write_text("{}")
    with pytest.raises(DataError) as e:
        zoo.main(zoo.Config(action="card", names=["llava-ov-teacher", "cobra-mirror"]))
    assert [(f, msg) for f, _, msg in e.value.lines] == [
        ("zoo:llava-ov-teacher", "not built (python -m vlm zoo build NAME)"),
        ("zoo:cobra-mirror", "random init (a mirror): it has no held-out figures")]
    assert seen == ["zoo:llava-ov-student"]  # nothing ran
