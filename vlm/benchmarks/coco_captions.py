"""COCO Captions: the official ``captions_{split}2017.json``, one caption task per image::

    {"info": {...}, "licenses": [...],
     "images": [{"id": int, "file_name": "000000397133.jpg", "height", "width", ...}],
     "annotations": [{"id": int, "image_id": int, "caption": str}]}     (about five captions per image)

Images: ``{images_dir}/{file_name}``, where ``images_dir`` is the ``{split}2017`` folder itself or a COCO root
holding it (the real layout: ``COCO_ROOT/annotations/captions_val2017.json`` next to ``COCO_ROOT/val2017/``;
``default_images_dir`` finds that folder from the annotation file's path, or takes the file's own folder, where
a split file written by ``vlm split`` lives next to its images).

One Sample per image: ``id`` = ``scene_id`` = the image id (a split keeps an image's captions together),
``answers`` = its captions in file order (the first is canonical), ``question`` = ``CAPTION_PROMPT`` (the
task text of every recipe), no question types. Strict about structure: missing keys, wrong types, duplicate
image or annotation ids and an annotation whose ``image_id`` is not among the images are errors, one line each
(``FILE: annotations[12] (id 7).image_id: image_id 42 is not among the images``). Lenient about the real files' quirks:
an image without captions is skipped with a warning (counts on stderr), and captions are kept as written,
trailing spaces and newlines included (the PTB tokenizer drops them, as in the official evaluation).

Metrics follow the official evaluation, tylin/coco-caption ``pycocoevalcap/eval.py`` (``COCOEvalCap.evaluate``:
PTBTokenizer on the predictions and on every reference, then Bleu(4), Meteor, Rouge, Cider over the evaluated
images), through ``vlm.metrics.text`` (Java PTBTokenizer and METEOR when ``java`` is on PATH, otherwise the
Python tokenizer and no METEOR; metrics.json's ``tokenizer`` says which ran):

* ``cider`` (the headline): pycocoevalcap's Cider (CIDEr-D: clipped, length-penalised, sigma 6) per image;
  their mean IS the corpus CIDEr the official code prints, so the per-image values carry the bootstrap CIs
  and paired comparisons. ``rouge-l`` likewise (the official ROUGE-L is the mean of per-image scores).
* BLEU-1..4 and METEOR: corpus values only, exactly as the official code computes them (its corpus BLEU and
  METEOR are not means of per-image values), from ``corpus_captions``.
* ``sbert``: best cosine between the prediction and any caption (as for the other caption-like answers).

Differences from the official numbers: the IDF of CIDEr (and the corpus BLEU / METEOR) is over the images
scored, so a ``--limit`` run or a split file gives other numbers than the full val2017 (5,000 images); SPICE
(in later versions of eval.py) is not computed (it needs Stanford CoreNLP models that are not available
offline); without Java the tokenizer is the Python stand-in (``ptb_tokenize``: differences listed there)
and METEOR is null. Scores are fractions per sample; metrics.json reports percentages.

The toy sample (``coco_dataset/sample``, COCO's own layout) is written by
``python -m vlm.benchmarks.coco_captions --write-sample coco_dataset/sample`` (``vlm.data.toyworld``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vlm.benchmarks.base import Benchmark, Row
from vlm.data.common import check_images_dir, read_json
from vlm.data.errors import DataError, Problems
from vlm.data.sample import Sample
from vlm.data.split import Unit

NAME = "coco-captions"
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."  # lmms-eval's COCO Captions prompt
NO_CAPTIONS = "no captions (image left out)"  # the warning, counted like A-OKVQA's empty answers


def image_folder_of(path: str | Path) -> str | None:
    """'captions_val2017.json' -> 'val2017' (the image folder of its split); a split file of ours
    ('test.json') names none -> None."""
    m = re.fullmatch(r"captions_([a-z]+)(\d{4})\.json", Path(path).name)
    return m.group(1) + m.group(2) if m else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _items(data: dict, key: str, problems: Problems) -> list:
    """data[key] when it is a list, else [] after an error."""
    if key not in data:
        problems.add("top level", f"missing key '{key}'")
        return []
    if not isinstance(data[key], list):
        problems.add(key, f"expected a list, got {type(data[key]).__name__}")
        return []
    return data[key]


def _checked_objects(items: list, name: str, fields: dict[str, type], problems: Problems) -> list[tuple[str, dict]]:
    """(location, object) of every item that is an object with each field of the right type; the others
    are reported. Locations name the item's id when it has one: ``images[3] (id 42)``."""
    good = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            problems.add(where, f"expected an object, got {type(item).__name__}")
            continue
        if _is_int(item.get("id")):
            where = f"{where} (id {item['id']})"
        ok = True
        for key, kind in fields.items():
            if key not in item:
                problems.add(where, f"missing key '{key}'")
                ok = False
            elif not (_is_int(item[key]) if kind is int else isinstance(item[key], kind)):
                problems.add(f"{where}.{key}", f"expected {'an integer' if kind is int else 'a string'}, "
                                               f"got {type(item[key]).__name__}")
                ok = False
        if ok:
            good.append((where, item))
    return good


def _unique(items: list[tuple[str, dict]], what: str, problems: Problems) -> None:
    first: dict[int, str] = {}
    for where, item in items:
        if item["id"] in first:
            problems.add(where, f"duplicate {what} id {item['id']} (first at {first[item['id']]})")
        else:
            first[item["id"]] = where


def _image_path(images_dir: Path, file_name: str, where: str, problems: Problems) -> str | None:
    """``images_dir/file_name``, which must exist and stay inside images_dir."""
    root = images_dir.resolve()
    path = (root / file_name).resolve()
    if not path.is_relative_to(root):
        problems.add(f"{where}.file_name", f"image path '{file_name}' escapes the images dir '{root}'")
        return None
    if not path.is_file():
        problems.add(f"{where}.file_name", f"image not found: {path}")
        return None
    return str(path)


def parse_coco_captions(data: Any, file: str | Path, images_dir: Path | None = None) -> list[Sample]:
    """Validate a parsed captions file and turn it into Samples (one per image with captions, file order);
    every problem raised together, images without captions warned about and skipped."""
    problems = Problems(file)
    if not isinstance(data, dict):
        problems.add("top level", f"expected an object with 'images' and 'annotations', got {type(data).__name__}")
        problems.raise_if_any()
    images = _checked_objects(_items(data, "images", problems), "images", {"id": int, "file_name": str}, problems)
    annotations = _checked_objects(_items(data, "annotations", problems), "annotations",
                                   {"id": int, "image_id": int, "caption": str}, problems)
    _unique(images, "image", problems)
    _unique(annotations, "annotation", problems)
    captions: dict[int, list[str]] = {image["id"]: [] for _, image in images}
    for where, ann in annotations:
        if ann["image_id"] not in captions:
            problems.add(f"{where}.image_id", f"image_id {ann['image_id']} is not among the images")
        elif not ann["caption"].strip():
            problems.add(f"{where}.caption", "empty caption")
        else:
            captions[ann["image_id"]].append(ann["caption"])  # as written: the tokenizer drops trailing space
    samples: list[Sample] = []
    for where, image in images:
        image_id = image["id"]
        if not captions[image_id]:
            problems.warn(where, NO_CAPTIONS)
            continue
        path = _image_path(images_dir, image["file_name"], where, problems) if images_dir is not None else None
        samples.append(Sample(
            id=str(image_id),
            benchmark=NAME,
            scene_id=str(image_id),
            image=path,
            question=CAPTION_PROMPT,
            answers=captions[image_id],
            question_type=[],
            context={"image_id": image_id, "file_name": image["file_name"]},
        ))
    problems.raise_if_any()
    problems.report_warnings()
    return samples


def load_coco_captions(path: str | Path, images_dir: str | Path | None = None, data: Any = None) -> list[Sample]:
    """Validated Samples of a captions file (``data``: its JSON when already parsed). ``images_dir``: the
    ``{split}2017`` folder, or a COCO root holding the one the file name names."""
    images = check_images_dir(images_dir)
    folder = image_folder_of(path)
    if images is not None and folder and (images / folder).is_dir():
        images = images / folder
    return parse_coco_captions(read_json(path) if data is None else data, path, images)


def captioned_images(data: dict) -> list[tuple[int, dict]]:
    """(index in ``images``, image) of every image with a caption, of validated data: the split units."""
    with_captions = {ann["image_id"] for ann in data["annotations"] if ann["caption"].strip()}
    return [(i, image) for i, image in enumerate(data["images"]) if image["id"] in with_captions]


class COCOCaptions(Benchmark):
    name = NAME
    headline = "cider"
    metrics = ("cider", "rouge-l")  # per image; BLEU-1..4 / METEOR are corpus-only (corpus_captions)
    corpus_captions = True
    recipe_forms = {"direct": "caption", "scratchpad": "caption-scratchpad"}  # no "single word or short phrase"
    group_noun = "images"

    def claims(self, data: Any) -> bool:
        """A captions file: an object with 'images' and 'annotations', the annotations carrying 'caption'
        (COCO's instances / keypoints files have the same top level, without captions)."""
        if not isinstance(data, dict) or "images" not in data or not isinstance(data.get("annotations"), list):
            return False
        anns = data["annotations"]
        return not anns or any(isinstance(a, dict) and "caption" in a for a in anns)

    def load(self, path, images_dir=None, *, data=None, **options) -> list[Sample]:
        return load_coco_captions(path, images_dir, data)

    def default_images_dir(self, path: Path) -> Path:
        """``ROOT/{split}2017`` for ``ROOT/annotations/captions_{split}2017.json`` (COCO's layout), else
        ``{split}2017`` next to the file when it exists, else the file's folder."""
        folder = image_folder_of(path)
        if folder and path.parent.name == "annotations":
            return path.parent.parent / folder
        if folder and (path.parent / folder).is_dir():
            return path.parent / folder
        return path.parent

    def split_units(self, data: Any) -> list[Unit]:
        return [Unit(str(image["id"]), (i,), f"images[{i}]", f"images[{i}]") for i, image in captioned_images(data)]

    def split_rebuild(self, data: Any, keep: set[tuple]) -> Any:
        """The file with the kept images and their captions, 'info' / 'licenses' / other keys as they are."""
        images = [image for i, image in enumerate(data["images"]) if (i,) in keep]
        ids = {image["id"] for image in images}
        return {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}

    def task_text(self, sample: Sample) -> str:
        return sample.question  # the caption instruction itself, not a "Question: …"

    def score(self, preds, *, sbert_model, normalization) -> list[Row]:
        from vlm.metrics.text import per_caption_scores  # vlm.metrics imports the registry

        scores = per_caption_scores([p.prediction for p in preds], [list(p.references) for p in preds])
        return [dict(zip(scores, values)) for values in zip(*scores.values())]


if __name__ == "__main__":  # the committed toy sample
    from vlm.data import toyworld
    from vlm.data.common import write_sample_cli

    write_sample_cli(lambda out, seed, scenes, _per_scene: toyworld.write_coco_captions_sample(out, seed, scenes),
                     "write the toy-world COCO Captions sample (annotations/captions_val2017.json + val2017/*.jpg; "
                     "five captions per image, --per-scene is not used)", "coco-captions sample: {n} images -> {out}")
