"""Toy world: procedurally drawn top-view rooms, written in the REAL Hypo3D and ScanQA file formats.

Tiny CPU-trained VLMs must be able to learn it, so grounding is simple and exact: a ``grid`` × ``grid``
layout of square cells (48 px / 3 = 16 px: one cell = one patch of a 16-px patch encoder), at most one
object per cell, an object = colour + kind drawn as a distinct shape inside its cell. Orientation
anchors (door, window, …) are 2-px strips along the image edges; with ``rotate`` the whole picture is
turned by a multiple of 90° so only the anchors (the axis definition) tell where the front is.
Answers are computed from the scene graph, never typed by hand; every random choice comes from a
per-scene RNG derived from (seed, scene index, stream), so N scenes are a prefix of N+10 scenes and the
same seed writes byte-identical JSON, CSV, PNG (and xlsx) files.

``python -m vlm toyworld --hypo3d_out DIR --scanqa_out DIR --scenes 40 --seed 0`` writes
``DIR/hypo3d.json`` + ``DIR/axis_definition.{csv,xlsx}`` + ``DIR/images/<scene_id>.png`` (Hypo3D) and
``DIR/scanqa.json`` + ``DIR/images/`` (ScanQA). The committed LLaVA-CoT-100k and A-OKVQA samples come from
``write_llava_cot_sample`` / ``write_aokvqa_sample`` (``python -m vlm.benchmarks.llava_cot --write-sample DIR``,
``python -m vlm.benchmarks.aokvqa --write-sample DIR``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import io
import json
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from vlm.benchmarks.hypo3d import CHANGE_CATEGORIES, QUESTION_TYPES  # noqa: F401  (QUESTION_TYPES: part of this API)
from vlm.data.errors import DataError
from vlm.io import atomic_write_bytes, dumps_json

# ---------------------------------------------------------------------------------------------------
# The world's vocabulary
# ---------------------------------------------------------------------------------------------------

# Saturated and far apart in RGB, so one centre pixel identifies the colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 180),
    "orange": (250, 140, 20),
}
KINDS = ("chair", "table", "bed", "sofa", "lamp", "plant")
FLOOR = (128, 128, 128)
# Anchor colours differ from every object colour and from the floor.
ANCHORS: dict[str, tuple[int, int, int]] = {
    "door": (120, 70, 20),
    "window": (150, 220, 250),
    "closet": (20, 20, 20),
    "tv": (250, 250, 250),
    "desk": (0, 130, 130),
    "shelf": (250, 160, 200),
}
SIDES = ("Front", "Back", "Left", "Right")
# Image edges in counter-clockwise order: one quarter turn (np.rot90, k=1) moves an edge one step on.
EDGES = ("top", "left", "bottom", "right")
_SIDE_EDGE = {"Front": 0, "Left": 1, "Back": 2, "Right": 3}

CATEGORIES = CHANGE_CATEGORIES
_ROW_WORDS = ("front", "", "back")
_COL_WORDS = ("left", "", "right")
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_FIXED_DATE = datetime.datetime(2000, 1, 1)  # workbook metadata: no wall-clock time in outputs
_FOCUS_SHARE = 0.75  # Hypo3D: share of questions that must depend on the change (the rest test plain grounding)


def number_word(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------------
# Scene graph
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Object:
    id: int  # stable across movement/attribute changes; a replacement is a new object
    colour: str
    kind: str
    row: int  # 0 = front (image top when unrotated)
    col: int  # 0 = left

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)


@dataclass(frozen=True)
class Scene:
    scene_id: str
    index: int
    grid: int
    objects: tuple[Object, ...]  # sorted front→back, left→right
    anchors: dict[str, str] = field(default_factory=dict)  # side ("Front", …) -> anchor item
    rotation: int = 0  # counter-clockwise quarter turns applied to the rendered image

    def find(self, colour: str, kind: str) -> Object | None:
        return next((o for o in self.objects if o.colour == colour and o.kind == kind), None)

    def at(self, row: int, col: int) -> Object | None:
        return next((o for o in self.objects if o.cell == (row, col)), None)

    def empty_cells(self) -> list[tuple[int, int]]:
        taken = {o.cell for o in self.objects}
        return [(r, c) for r in range(self.grid) for c in range(self.grid) if (r, c) not in taken]

    def pairs(self) -> set[tuple[str, str]]:
        return {(o.colour, o.kind) for o in self.objects}


@dataclass(frozen=True)
class Change:
    category: str  # one of CATEGORIES
    old: Object | None  # the object before the change (None for an addition)
    new: Object | None  # the object after it (None for a removal)
    grid: int = 3

    @property
    def change_type(self) -> str:
        return f"Object {self.category} Change"

    @property
    def sentence(self) -> str:
        old, new = self.old, self.new
        if self.category == "Movement":
            return f"The {old.name} has been moved to the {position_phrase(new.row, new.col, self.grid)} of the room."
        if self.category == "Removal":
            return f"The {old.name} has been removed from the room."
        if self.category == "Attribute":
            return f"The {old.name} has been painted {new.colour}."
        if self.category == "Addition":
            where = position_phrase(new.row, new.col, self.grid)
            return f"{article(new.colour).capitalize()} {new.name} has been added to the {where} of the room."
        return f"The {old.name} has been replaced by {article(new.colour)} {new.name}."


def _third(i: int, grid: int) -> int:
    """Which third (0, 1, 2) of the room a row/column centre falls in; never on a boundary."""
    return 3 * (2 * i + 1) // (2 * grid)


def position_phrase(row: int, col: int, grid: int = 3) -> str:
    """'front left', 'front', …, 'center', …, 'back right' (thirds of the room)."""
    words = [_ROW_WORDS[_third(row, grid)], _COL_WORDS[_third(col, grid)]]
    return " ".join(w for w in words if w) or "center"


def relative_phrase(a: Object, b: Object) -> str:
    """Where a lies seen from b, in the scene frame: 'front', 'back left', …"""
    vertical = "front" if a.row < b.row else "back" if a.row > b.row else ""
    horizontal = "left" if a.col < b.col else "right" if a.col > b.col else ""
    return " ".join(w for w in (vertical, horizontal) if w)


def describe(scene: Scene) -> str:
    """Canonical compact description, front→back, left→right: 'front left: red chair; center: blue table.'"""
    if not scene.objects:
        return "empty."
    ordered = sorted(scene.objects, key=lambda o: o.cell)
    return "; ".join(f"{position_phrase(o.row, o.col, scene.grid)}: {o.name}" for o in ordered) + "."


def cell_listing(scene: Scene) -> str:
    """Every cell in a fixed order, empty ones included: 'front left: red chair; front: nothing; …'. The scene
    descriptions the CoT recipes observe and imagine: entry k always describes cell k (= image patch k), so a tiny
    model reads the picture by attending to image token k, and the changed scene differs from the original in
    the changed cells only — both answer lookups by position or by name."""
    cells = [(r, c) for r in range(scene.grid) for c in range(scene.grid)]
    return "; ".join(f"{position_phrase(r, c, scene.grid)}: {o.name if (o := scene.at(r, c)) else 'nothing'}"
                     for r, c in cells) + "."


def apply_change(scene: Scene, change: Change) -> Scene:
    """The hypothetical scene after one change (each Hypo3D change applies to the original scene)."""
    objects = [o for o in scene.objects if change.old is None or o.id != change.old.id]
    if change.new is not None:
        objects.append(change.new)
    cells = [o.cell for o in objects]
    if len(set(cells)) != len(cells) or len({(o.colour, o.kind) for o in objects}) != len(objects):
        raise ValueError(f"{scene.scene_id}: '{change.sentence}' breaks one-object-per-cell or pair uniqueness")
    return dataclasses.replace(scene, objects=tuple(sorted(objects, key=lambda o: o.cell)))


# ---------------------------------------------------------------------------------------------------
# Generation (every random choice goes through a per-scene RNG)
# ---------------------------------------------------------------------------------------------------


def scene_rng(seed: int, index: int, stream: str) -> random.Random:
    """Independent stream per (seed, scene, purpose): scenes do not shift when another stream changes.
    A str seed is hashed with sha512 by ``random``, so this is stable across runs and PYTHONHASHSEED."""
    return random.Random(f"toyworld:{seed}:{index}:{stream}")


def scene_id(index: int) -> str:
    return f"toy{index:04d}"


def generate_scene(
    rng: random.Random, index: int, grid: int = 3, min_objects: int = 3, max_objects: int = 6, rotate: bool = False
) -> Scene:
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample([(r, c) for r in range(grid) for c in range(grid)], n)
    # Sampling distinct (colour, kind) pairs keeps names unambiguous while kinds still repeat.
    pairs = rng.sample([(c, k) for c in COLOURS for k in KINDS], n)
    placed = sorted(zip(cells, pairs))
    objects = tuple(Object(i, colour, kind, r, c) for i, ((r, c), (colour, kind)) in enumerate(placed))
    sides = rng.sample(SIDES, rng.randint(1, len(SIDES)))
    items = rng.sample(list(ANCHORS), len(sides))
    anchors = {side: items[sides.index(side)] for side in SIDES if side in sides}
    rotation = rng.randrange(4)  # drawn even when unused, so `rotate` does not change scene content
    return Scene(scene_id(index), index, grid, objects, anchors, rotation if rotate else 0)


def generate_world(cfg: "Config") -> list[Scene]:
    check_config(cfg)
    return [
        generate_scene(scene_rng(cfg.seed, i, "scene"), i, cfg.grid, cfg.min_objects, cfg.max_objects, cfg.rotate)
        for i in range(cfg.scenes)
    ]


def sample_change(scene: Scene, category: str, rng: random.Random) -> Change | None:
    """One change of the given category that keeps one object per cell and (colour, kind) pairs unique."""
    objs, pairs, grid = list(scene.objects), scene.pairs(), scene.grid
    free_pairs = [(c, k) for c in COLOURS for k in KINDS if (c, k) not in pairs]
    empty = scene.empty_cells()
    next_id = max((o.id for o in objs), default=-1) + 1
    if category == "Movement" and objs and empty:
        obj = rng.choice(objs)
        # Move to a cell with a different phrase, so the sentence says something new (matters when grid > 3).
        here = position_phrase(obj.row, obj.col, grid)
        targets = [rc for rc in empty if position_phrase(*rc, grid) != here] or empty
        r, c = rng.choice(targets)
        return Change(category, obj, dataclasses.replace(obj, row=r, col=c), grid)
    if category == "Removal" and len(objs) > 1:
        return Change(category, rng.choice(objs), None, grid)
    if category == "Attribute":
        options = [(o, c) for o in objs for c in COLOURS if (c, o.kind) not in pairs]
        if options:
            obj, colour = rng.choice(options)
            return Change(category, obj, dataclasses.replace(obj, colour=colour), grid)
    if category == "Addition" and empty and free_pairs:
        (colour, kind), (r, c) = rng.choice(free_pairs), rng.choice(empty)
        return Change(category, None, Object(next_id, colour, kind, r, c), grid)
    if category == "Replacement":
        options = [(o, p) for o in objs for p in free_pairs if p[1] != o.kind]  # same kind would be an attribute change
        if options:
            obj, (colour, kind) = rng.choice(options)
            return Change(category, obj, Object(next_id, colour, kind, obj.row, obj.col), grid)
    return None


def sample_changes(scene: Scene, rng: random.Random, n: int) -> list[Change]:
    """n changes; categories cycle over scenes so any 5 consecutive changes cover all five."""
    start = scene.index * n
    changes = []
    for j in range(n):
        for step in range(len(CATEGORIES)):  # fall through to the next category if one is impossible here
            change = sample_change(scene, CATEGORIES[(start + j + step) % len(CATEGORIES)], rng)
            if change is not None:
                changes.append(change)
                break
    return changes


# ---------------------------------------------------------------------------------------------------
# Questions: every template is evaluated on a scene graph; answers are never typed by hand
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    question: str
    answers: tuple[str, ...]  # first is canonical (Hypo3D answer); the rest are accepted phrasings (ScanQA)
    question_type: tuple[str, ...]  # multi-label, e.g. ("Direction", "Semantic")
    objects: tuple[Object, ...]  # the scene objects the question is about (ScanQA object_ids)
    mentions: tuple[str, ...]  # object names the question text names (to find questions about a change)
    template: str  # which template asked it; selection balances templates

    @property
    def answer(self) -> str:
        return self.answers[0]


def _phrase_answers(phrase: str) -> tuple[str, ...]:
    alts = [phrase, phrase.replace("back", "behind")] + (["middle"] if phrase == "center" else [])
    return tuple(dict.fromkeys(alts))


def _count_answers(objs: list[Object]) -> tuple[str, ...]:
    return (number_word(len(objs)), str(len(objs)))


@functools.lru_cache(maxsize=None)
def _kind_area(kind: str) -> int:
    return int(_shape_mask(kind, 16, 3).sum())  # the 48-px default; areas only rank kinds by size


def candidate_questions(scene: Scene, now: bool = False, vocabulary: tuple[Object, ...] = ()) -> list[QA]:
    """Every question the templates can ask about this scene, with answers computed from its graph.
    ``now`` adds ' now' (Hypo3D questions are about the changed scene). Counting and "is there" questions
    are asked about the colours and kinds of the scene's objects plus ``vocabulary`` (for Hypo3D: the
    original scene and the change), so "no"/"zero" answers are about plausible things. Deterministic order."""
    s = " now" if now else ""
    objs, grid = scene.objects, scene.grid
    known = objs + tuple(vocabulary)
    colours = [c for c in COLOURS if any(o.colour == c for o in known)]
    kinds = [k for k in KINDS if any(o.kind == k for o in known)]
    out: list[QA] = []

    def add(template, question, answers, qtypes, about=(), mentions=None):
        names = tuple(o.name for o in about) if mentions is None else mentions
        out.append(QA(question, tuple(answers), tuple(qtypes), tuple(about), names, template))

    for o in objs:
        add("where", f"Where is the {o.name}{s}?", _phrase_answers(position_phrase(o.row, o.col, grid)), ["Direction"], [o])
    for a in objs:
        for b in objs:
            if a is not b:
                add("relative", f"Which direction is the {a.name} from the {b.name}{s}?",
                    _phrase_answers(relative_phrase(a, b)), ["Direction"], [a, b])
    regions: dict[str, list[tuple[int, int]]] = {}
    for r in range(grid):
        for c in range(grid):
            regions.setdefault(position_phrase(r, c, grid), []).append((r, c))
    for phrase, cells in regions.items():
        if len(cells) == 1:  # only a single-cell region has a single answer
            o = scene.at(*cells[0])
            add("what_at", f"What is at the {phrase} of the room{s}?", (o.name, o.kind) if o else ("nothing", "empty"),
                ["Direction", "Semantic"], [o] if o else [])
    for kind in kinds:
        same = [o for o in objs if o.kind == kind]
        if len(same) == 1:  # "the chair" is only a reference when there is exactly one
            add("colour", f"What colour is the {kind}{s}?", [same[0].colour], ["Semantic"], same)
        add("count_kind", f"How many {kind}s are in the room{s}?", _count_answers(same), ["Scale"], same)
    for colour in colours:
        same = [o for o in objs if o.colour == colour]
        add("count_colour", f"How many {colour} objects are in the room{s}?", _count_answers(same), ["Scale", "Semantic"], same)
    for side, axis, third in (("front", "row", 0), ("back", "row", 2), ("left", "col", 0), ("right", "col", 2)):
        inside = [o for o in objs if _third(getattr(o, axis), grid) == third]
        add("count_side", f"How many objects are on the {side} side of the room{s}?", _count_answers(inside),
            ["Scale", "Direction"], inside)
    add("count_all", f"How many objects are in the room{s}?", _count_answers(list(objs)), ["Scale"], objs)
    for colour in colours:
        for kind in kinds:
            o = scene.find(colour, kind)
            related = [o] if o else [x for x in objs if x.kind == kind]  # ScanQA object_ids for a "no"
            add("exists", f"Is there {article(colour)} {colour} {kind} in the room{s}?", ["yes" if o else "no"],
                ["Semantic"], related, (f"{colour} {kind}",))
    for a in objs:
        for b in objs:
            area_a, area_b = _kind_area(a.kind), _kind_area(b.kind)
            if a.id < b.id and max(area_a, area_b) >= 1.25 * min(area_a, area_b):  # clearly different sizes only
                winner = a if area_a > area_b else b
                add("bigger", f"Which is bigger, the {a.name} or the {b.name}?", (winner.name, winner.kind),
                    ["Scale", "Semantic"], [a, b])
    return out


def _pick(pool: list[QA], rng: random.Random, used: set[str]) -> QA:
    """Template first (unused ones before used ones), then the answer, then the question, each uniform:
    no template or answer ('no', 'zero', …) dominates just because it has more instances."""
    fresh = [q for q in pool if q.template not in used] or pool
    template = rng.choice(sorted({q.template for q in fresh}))
    same = [q for q in fresh if q.template == template]
    answer = rng.choice(sorted({q.answer for q in same}))
    return rng.choice([q for q in same if q.answer == answer])


def choose_questions(
    pool: list[QA], n: int, rng: random.Random, prefer: Callable[[QA], bool] | None = None
) -> list[QA]:
    """n distinct questions, cycling the primary type (Direction → Semantic → Scale) from a random start;
    ``prefer`` (if given) restricts a pick to preferred questions with probability _FOCUS_SHARE."""
    start = rng.randrange(len(QUESTION_TYPES))
    chosen: list[QA] = []
    for k in range(n):
        qtype = QUESTION_TYPES[(start + k) % len(QUESTION_TYPES)]
        asked = {q.question for q in chosen}  # a question's text identifies it in a pool (cheaper than QA equality)
        left = [q for q in pool if q.question not in asked]
        typed = [q for q in left if qtype in q.question_type] or left
        if prefer is not None and rng.random() < _FOCUS_SHARE:
            typed = [q for q in typed if prefer(q)] or typed
        if not typed:
            break
        chosen.append(_pick(typed, rng, {q.template for q in chosen}))
    return chosen


def change_questions(scene: Scene, change: Change, rng: random.Random, n: int) -> list[QA]:
    """Questions about the changed scene, preferring those the change matters for: they name the
    changed object or their answer differs from the original scene's."""
    changed = apply_change(scene, change)
    touched = tuple(o for o in (change.old, change.new) if o is not None)
    vocabulary = scene.objects + touched
    before = {q.question: q.answer for q in candidate_questions(scene, True, vocabulary)}
    names = {o.name for o in touched}

    def matters(q: QA) -> bool:
        return bool(names & set(q.mentions)) or before.get(q.question) != q.answer

    return choose_questions(candidate_questions(changed, True, vocabulary), n, rng, prefer=matters)


def scanqa_questions(scene: Scene, rng: random.Random, n: int) -> list[QA]:
    """Questions about the original scene; ScanQA questions are about real objects, so each needs one."""
    pool = [q for q in candidate_questions(scene) if q.objects]
    return choose_questions(pool, n, rng)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def check_layout(image_size: int, grid: int) -> int:
    """The cell size in pixels; a clear error if the layout cannot hold whole, drawable cells."""
    if grid < 2:
        raise DataError.single("toyworld", "--grid", f"{grid}: need at least 2 cells per side")
    if image_size % grid:
        raise DataError.single(
            "toyworld", "--image_size", f"{image_size} is not divisible by --grid {grid} (cells must be whole pixels)"
        )
    if image_size // grid < 8:
        raise DataError.single("toyworld", "--image_size", f"{image_size}/{grid} gives cells under 8 px: too small to draw")
    return image_size // grid


def strip_width(image_size: int) -> int:
    return max(1, image_size // 24)


def _margin(image_size: int, grid: int) -> int:
    """Space between a shape and its cell border: wider than the anchor strip, so they never touch."""
    return max(strip_width(image_size) + 1, (3 * (image_size // grid)) // 16)


def _shape_mask(kind: str, cell: int, margin: int) -> np.ndarray:
    """Boolean cell × cell mask; every shape covers the cell centre (tests read the colour there)."""
    d = np.arange(cell) + 0.5 - cell / 2  # pixel-centre offsets from the cell centre
    dy, dx = np.meshgrid(d, d, indexing="ij")
    h = cell / 2 - margin  # half the drawable extent
    ay, ax = np.abs(dy), np.abs(dx)
    shapes = {
        "chair": (ay <= 0.6 * h) & (ax <= 0.6 * h),  # small square
        "table": (ay <= h) & (ax <= h),  # large square
        "bed": (ay <= h) & (ax <= 0.6 * h),  # tall rectangle
        "sofa": (ay <= 0.6 * h) & (ax <= h),  # wide rectangle
        "lamp": dy**2 + dx**2 <= h**2,  # disc
        "plant": (ay <= h) & (ax <= (dy + h) / 2),  # triangle, apex towards the front
    }
    return shapes[kind]


def rotate_point(y: int, x: int, size: int, rotation: int) -> tuple[int, int]:
    """Where pixel (y, x) of the unrotated image lands after ``rotation`` np.rot90 quarter turns."""
    for _ in range(rotation % 4):
        y, x = size - 1 - x, y
    return y, x


def cell_center(row: int, col: int, image_size: int = 48, grid: int = 3, rotation: int = 0) -> tuple[int, int]:
    """(x, y) of the centre pixel of a scene cell in the rendered image — ready for ``Image.getpixel``."""
    cell = check_layout(image_size, grid)
    y, x = rotate_point(row * cell + cell // 2, col * cell + cell // 2, image_size, rotation)
    return x, y


def image_edge(side: str, rotation: int = 0) -> str:
    """Which image edge ('top', 'left', 'bottom', 'right') shows a scene side after rotation."""
    return EDGES[(_SIDE_EDGE[side] + rotation) % 4]


def render(scene: Scene, image_size: int = 48, rotation: int | None = None) -> Image.Image:
    """Top view: grey floor, one shape per object, anchor strips along the edges (corners left empty so
    two strips never meet), then rotated counter-clockwise by ``rotation`` (default: the scene's) quarter turns."""
    cell = check_layout(image_size, scene.grid)
    margin, s = _margin(image_size, scene.grid), strip_width(image_size)
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = FLOOR
    for o in scene.objects:
        mask = _shape_mask(o.kind, cell, margin)
        img[o.row * cell : (o.row + 1) * cell, o.col * cell : (o.col + 1) * cell][mask] = COLOURS[o.colour]
    inner = slice(s, image_size - s)
    strips = {"Front": (slice(0, s), inner), "Back": (slice(image_size - s, image_size), inner),
              "Left": (inner, slice(0, s)), "Right": (inner, slice(image_size - s, image_size))}
    for side, item in scene.anchors.items():
        img[strips[side]] = ANCHORS[item]
    k = scene.rotation if rotation is None else rotation
    return Image.fromarray(np.ascontiguousarray(np.rot90(img, k % 4)))


# ---------------------------------------------------------------------------------------------------
# Benchmark records
# ---------------------------------------------------------------------------------------------------


def build_hypo3d(scenes: list[Scene], cfg: "Config") -> dict[str, list[dict]]:
    """The Hypo3D JSON object; question ids are global, zero-padded, in scene order."""
    data: dict[str, list[dict]] = {}
    qid = 0
    for scene in scenes:
        rng = scene_rng(cfg.seed, scene.index, "hypo3d")
        records = []
        for change in sample_changes(scene, rng, cfg.changes_per_scene):
            qas = []
            for q in change_questions(scene, change, rng, cfg.questions_per_change):
                qas.append({"question_id": f"{qid:05d}", "question_type": " ".join(q.question_type),
                            "question": q.question, "answer": q.answer})
                qid += 1
            records.append({
                "context_change": change.sentence,
                "change_type": change.change_type,
                "scene_description": cell_listing(scene),
                "changed_scene_description": cell_listing(apply_change(scene, change)),
                "questions_answers": qas,
            })
        data[scene.scene_id] = records
    return data


def build_scanqa(scenes: list[Scene], cfg: "Config") -> list[dict]:
    """The official flat ScanQA list (question_type is an extra key, like the scene description)."""
    out = []
    for scene in scenes:
        rng = scene_rng(cfg.seed, scene.index, "scanqa")
        for i, q in enumerate(scanqa_questions(scene, rng, cfg.scanqa_questions_per_scene)):
            out.append({
                "scene_id": scene.scene_id,
                "question_id": f"train-{scene.scene_id}-{i}",
                "question": q.question,
                "answers": list(q.answers),
                "object_ids": [o.id for o in q.objects],
                "object_names": [o.kind for o in q.objects],
                "question_type": " ".join(q.question_type),
                "scene_description": cell_listing(scene),
            })
    return out


def axis_rows(scenes: list[Scene]) -> list[list[str]]:
    return [["scene_id", *SIDES]] + [[s.scene_id, *(s.anchors.get(side, "") for side in SIDES)] for s in scenes]


# ---------------------------------------------------------------------------------------------------
# Writing (atomic, byte-deterministic)
# ---------------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> int:
    atomic_write_bytes(path, data)
    return len(data)


def json_bytes(obj) -> bytes:
    return dumps_json(obj).encode("utf-8")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # PIL writes no tIME/text chunks unless asked: same pixels, same bytes
    return buf.getvalue()


def csv_bytes(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    """Sheet 'Sheet1', empty cells for missing anchors. openpyxl stamps the save time into the metadata
    and the zip entries; we fix the metadata dates and re-pack the zip with a fixed entry time."""
    import openpyxl
    from openpyxl.writer.excel import ExcelWriter

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    for row in rows:
        ws.append([v if v else None for v in row])
    wb.properties.created = wb.properties.modified = _FIXED_DATE
    raw = io.BytesIO()
    ExcelWriter(wb, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED)).save()  # save_workbook would reset 'modified'
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=_FIXED_DATE.timetuple()[:6]), src.read(info),
                         compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def write_images(scenes: list[Scene], out: Path, image_size: int) -> int:
    return sum(_write(out / "images" / f"{s.scene_id}.png", png_bytes(render(s, image_size))) for s in scenes)


# ---------------------------------------------------------------------------------------------------
# LLaVA-CoT-100k and A-OKVQA samples (own writers: their own file layouts, reasoning from the scene graph)
# ---------------------------------------------------------------------------------------------------

LLAVA_COT_ANSWER_PROMPT = "Answer the question using a single word or phrase."


def _names(objs: list[Object]) -> str:
    names = [f"the {o.name}" for o in objs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def question_summary(q: QA) -> str:
    tasks = {
        "where": "say where that object is", "relative": "work out where one object lies seen from the other",
        "what_at": "name what stands in that part of the room", "colour": "say what colour it is",
        "exists": "check whether such an object is there", "bigger": "compare the sizes of the two objects",
    }
    task = "count the matching objects" if q.template.startswith("count") else tasks.get(q.template, "answer the question")
    return f"I will find the objects the question is about in the top view of the room and {task}."


def question_reasoning(scene: Scene, q: QA) -> str:
    """A short derivation of a toy-world answer from the scene graph (the objects the question is about)."""
    grid, objs = scene.grid, list(q.objects)
    where = {o.id: position_phrase(o.row, o.col, grid) for o in scene.objects}
    if q.template == "where":
        o = objs[0]
        return f"The {o.name} is in row {o.row + 1}, column {o.col + 1} of the {grid}x{grid} grid, the {where[o.id]} of the room."
    if q.template == "relative":
        a, b = objs
        return (f"The {a.name} is in row {a.row + 1}, column {a.col + 1}; the {b.name} is in row {b.row + 1}, "
                f"column {b.col + 1}. Seen from the {b.name}, the {a.name} lies to the {q.answer}.")
    if q.template == "what_at":
        return f"That part of the room holds {_names(objs)}." if objs else "No object stands in that part of the room."
    if q.template == "colour":
        return f"The only {objs[0].kind} in the room is the {objs[0].name}."
    if q.template.startswith("count"):
        n = number_word(len(objs))
        return f"The matching objects are {_names(objs)}; that makes {n}." if objs else "No object matches; that makes zero."
    if q.template == "exists":
        if q.answer == "yes":
            return f"The {objs[0].name} is at the {where[objs[0].id]} of the room."
        seen = f" The {objs[0].kind}s there are {_names(objs)}." if objs else ""
        return f"No object in the room is the {q.mentions[0]}.{seen}"
    if q.template == "bigger":
        a, b = sorted(objs, key=lambda o: -_kind_area(o.kind))
        return f"A {a.kind} is drawn larger than a {b.kind}, so the {a.name} is bigger than the {b.name}."
    return f"The objects involved are {_names(objs)}." if objs else "Reading the scene answers it."


def llava_cot_records(seed: int = 0, scenes: int = 25, per_scene: int = 4, image_size: int = 48) -> tuple[list[dict], dict[str, bytes]]:
    """(records, {relative image path: PNG bytes}); ids ``toy-<scene>-<k>``, images ``toy/<scene>.png``.

    Three layouts by scene index (``index % 3``), so the sample holds both the LLaVA-style records and the
    official generator's: 0, one turn with ``<image>\\n`` before the question; 1, one turn without the
    placeholder; 2, two turns without it (record k asks question k, then question k+1 of the same scene)."""
    from vlm.benchmarks.llava_cot import IMAGE_TOKEN

    world = generate_world(Config(scenes=scenes, seed=seed, image_size=image_size))
    records, images = [], {}
    for scene in world:
        rel = f"toy/{scene.scene_id}.png"
        images[rel] = png_bytes(render(scene, image_size))
        qs = scanqa_questions(scene, scene_rng(seed, scene.index, "llava-cot"), per_scene)
        layout = scene.index % 3
        for k, q in enumerate(qs):
            turns = [q, qs[(k + 1) % len(qs)]] if layout == 2 and len(qs) > 1 else [q]
            conversations = []
            for t in turns:
                cot = (f"<SUMMARY>{question_summary(t)}</SUMMARY> <CAPTION>{describe(scene)}</CAPTION> "
                       f"<REASONING>{question_reasoning(scene, t)}</REASONING> <CONCLUSION>{t.answer}</CONCLUSION>")
                conversations += [{"from": "human", "value": f"{t.question}\n{LLAVA_COT_ANSWER_PROMPT}"}, {"from": "gpt", "value": cot}]
            if layout == 0:
                conversations[0]["value"] = f"{IMAGE_TOKEN}\n{conversations[0]['value']}"
            records.append({"id": f"toy-{scene.scene_id}-{k}", "image": rel, "conversations": conversations})
    return records, images


def write_llava_cot_sample(out: str | Path, seed: int = 0, scenes: int = 25, per_scene: int = 4) -> int:
    """Write ``out/train.jsonl`` + ``out/images/toy/<scene>.png``; returns the number of records."""
    from vlm.io import atomic_write_text

    out = Path(out)
    records, images = llava_cot_records(seed, scenes, per_scene)
    for rel, data in images.items():
        atomic_write_bytes(out / "images" / rel, data)
    atomic_write_text(out / "train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


_AOKVQA_DIRECTIONS = ("front", "back", "left", "right", "front left", "front right", "back left", "back right")


def _distractor_vocab(scene: Scene, q: QA) -> list[str]:
    t = q.template
    if t == "where":
        return sorted({position_phrase(r, c, scene.grid) for r in range(scene.grid) for c in range(scene.grid)})
    if t == "relative":
        return list(_AOKVQA_DIRECTIONS)
    if t == "colour":
        return list(COLOURS)
    if t.startswith("count"):
        return [number_word(n) for n in range(10)]
    names = [o.name for o in scene.objects] + [f"{c} {k}" for c in COLOURS for k in KINDS]
    return list(dict.fromkeys(names + (["nothing"] if t == "what_at" else [])))


def aokvqa_records(seed: int = 0, scenes: int = 25, per_scene: int = 4, image_size: int = 48) -> tuple[list[dict], dict[int, bytes]]:
    """(A-OKVQA records, {image_id: JPEG bytes}); deterministic per seed. Multiple choice = the answer + 3
    distractors of the same kind; 10 direct answers (accepted phrasings, some noise; about one question in
    eight is 'difficult': its direct answers disagree); rationales from the scene graph."""
    from vlm.benchmarks.aokvqa import N_CHOICES, N_DIRECT

    world = generate_world(Config(scenes=scenes, seed=seed, image_size=image_size))
    records, images = [], {}
    for scene in world:
        image_id = scene.index + 1
        buf = io.BytesIO()
        render(scene, image_size).save(buf, format="JPEG", quality=95, subsampling=0)
        images[image_id] = buf.getvalue()
        rng = scene_rng(seed, scene.index, "aokvqa")
        pool = [q for q in candidate_questions(scene) if q.template != "exists"]  # yes/no has no 4 choices
        for k, q in enumerate(choose_questions(pool, per_scene, rng)):
            wrong = [a for a in _distractor_vocab(scene, q) if a not in q.answers]
            must = [o.name for o in q.objects if o.name != q.answer] if q.template == "bigger" else []  # the other one
            choices = [q.answer, *must, *rng.sample([w for w in wrong if w not in must], N_CHOICES - 1 - len(must))]
            rng.shuffle(choices)
            difficult = rng.random() < 0.125
            alts = list(q.answers[1:]) or [q.answer]
            n_gold = rng.randint(2, 3) if difficult else rng.randint(5, 9)
            noise = rng.sample(wrong, 4) if difficult else rng.sample(wrong, rng.randint(0, 1))
            direct = [q.answer] * n_gold + noise
            direct += [rng.choice(alts) for _ in range(N_DIRECT - len(direct))]
            rng.shuffle(direct)
            reasoning = question_reasoning(scene, q)
            records.append({
                "question_id": f"toy-{scene.scene_id}-{k}",
                "question": q.question,
                "choices": choices,
                "correct_choice_idx": choices.index(q.answer),
                "direct_answers": direct,
                "difficult_direct_answer": difficult,
                "rationales": [reasoning, f"From the top view: {describe(scene)} {reasoning}",
                               f"{reasoning} So the answer is {q.answer}."],
                "image_id": image_id,
            })
    return records, images


def write_aokvqa_sample(out: str | Path, seed: int = 0, scenes: int = 25, per_scene: int = 4) -> int:
    """Write ``out/aokvqa_val.json`` + ``out/val2017/<image_id:012>.jpg``; returns the number of questions."""
    from vlm.benchmarks.aokvqa import coco_path

    out = Path(out)
    records, images = aokvqa_records(seed, scenes, per_scene)
    for image_id, data in images.items():
        atomic_write_bytes(coco_path(out, "val", image_id), data)
    atomic_write_bytes(out / "aokvqa_val.json", dumps_json(records).encode("utf-8"))
    return len(records)


# ---------------------------------------------------------------------------------------------------
# Stage
# ---------------------------------------------------------------------------------------------------


@dataclass
class Config:
    """Generate the synthetic toy world in the real Hypo3D / ScanQA file formats."""

    hypo3d_out: str = field(default="", metadata={"help": "Hypo3D output dir (hypo3d.json, axis_definition.csv/.xlsx, images/); '' to skip"})
    scanqa_out: str = field(default="", metadata={"help": "ScanQA output dir (scanqa.json, images/); '' to skip"})
    scenes: int = field(default=40, metadata={"help": "number of scenes (toy0000, toy0001, …); N scenes are a prefix of N+k"})
    seed: int = field(default=0, metadata={"help": "world seed; same seed → byte-identical JSON, CSV and PNG files"})
    image_size: int = field(default=48, metadata={"help": "top-view image side in pixels; must be divisible by --grid"})
    grid: int = field(default=3, metadata={"help": "cells per side (48/3 = 16-px cells = one patch of a 16-px encoder)"})
    min_objects: int = field(default=3, metadata={"help": "fewest objects in a scene"})
    max_objects: int = field(default=6, metadata={"help": "most objects in a scene (at most grid*grid - 1)"})
    changes_per_scene: int = field(default=2, metadata={"help": "Hypo3D context changes per scene"})
    questions_per_change: int = field(default=3, metadata={"help": "Hypo3D questions per context change"})
    scanqa_questions_per_scene: int = field(default=6, metadata={"help": "ScanQA questions per scene"})
    rotate: bool = field(default=False, metadata={"help": "rotate each image by a random multiple of 90° (front found via the anchors)"})


def check_config(cfg: Config) -> None:
    check_layout(cfg.image_size, cfg.grid)
    problems = []
    if cfg.scenes < 0:
        problems.append(("--scenes", f"{cfg.scenes}: must be >= 0"))
    if not 2 <= cfg.min_objects <= cfg.max_objects <= cfg.grid**2 - 1:
        problems.append(("--min_objects/--max_objects", f"need 2 <= {cfg.min_objects} <= {cfg.max_objects} <= "
                         f"{cfg.grid**2 - 1} (grid*grid - 1: a move or an addition needs a free cell)"))
    for name in ("changes_per_scene", "questions_per_change", "scanqa_questions_per_scene"):
        if getattr(cfg, name) < 0:
            problems.append((f"--{name}", f"{getattr(cfg, name)}: must be >= 0"))
    if problems:
        raise DataError([("toyworld", where, msg) for where, msg in problems])


def main(cfg: Config) -> int:
    scenes = generate_world(cfg)
    written, counts = 0, []
    if cfg.hypo3d_out:
        out = Path(cfg.hypo3d_out)
        data = build_hypo3d(scenes, cfg)
        rows = axis_rows(scenes)
        written += _write(out / "hypo3d.json", json_bytes(data))
        written += _write(out / "axis_definition.csv", csv_bytes(rows))
        written += _write(out / "axis_definition.xlsx", xlsx_bytes(rows))
        written += write_images(scenes, out, cfg.image_size)
        counts.append(f"{sum(len(c['questions_answers']) for r in data.values() for c in r)} Hypo3D QAs -> {out}")
    if cfg.scanqa_out:
        out = Path(cfg.scanqa_out)
        records = build_scanqa(scenes, cfg)
        written += _write(out / "scanqa.json", json_bytes(records))
        written += write_images(scenes, out, cfg.image_size)
        counts.append(f"{len(records)} ScanQA QAs -> {out}")
    print(f"toyworld: {len(scenes)} scenes, {', '.join(counts) or 'nothing written (no --hypo3d_out/--scanqa_out)'}, "
          f"{written} bytes written")
    return 0


# ---------------------------------------------------------------------------------------------------
# COCO Captions toy sample (the official captions_{split}2017.json layout)
# ---------------------------------------------------------------------------------------------------

# Rooms of their own (scene indices from here on): the other toy samples use scenes 0.., so a model
# fine-tuned on the toy LLaVA-CoT sample is evaluated on rooms it has not seen, as LLaVA-CoT-100k -> COCO val.
COCO_FIRST_SCENE = 1000
COCO_CAPTIONS_PER_IMAGE = 5
_TRAILING_QUIRK_SHARE = 0.1  # captions written with a trailing space or newline, as a few real ones are


def _listing(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _at(row: int, col: int, grid: int) -> str:
    """'at the front left', 'in the center', 'on the right', …"""
    phrase = position_phrase(row, col, grid)
    if phrase == "center":
        return "in the center"
    return f"on the {phrase}" if phrase in ("left", "right") else f"at the {phrase}"


def toy_captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five captions of one room, computed from the scene graph: the first names every object by colour and
    kind (the canonical one), the others, in a per-room order, say where each object is, count the kinds,
    name the wall anchors, or pick one object out; a few end in a space or a newline, as some real ones do."""
    objs = sorted(scene.objects, key=lambda o: o.cell)
    named = [f"{article(o.colour)} {o.name}" for o in objs]
    kinds = {k: sum(o.kind == k for o in objs) for k in dict.fromkeys(o.kind for o in objs)}
    counted = [f"{number_word(n)} {k}s" if n > 1 else f"{article(k)} {k}" for k, n in kinds.items()]
    walls = [f"{article(item)} {item} on the {side.lower()} wall" for side, item in scene.anchors.items()]
    picked = rng.choice(objs)
    others = [
        _listing([f"{n} {_at(o.row, o.col, scene.grid)}" for n, o in zip(named, objs)]).capitalize() + ".",
        f"An overhead view of a grey floor with {number_word(len(objs))} objects: {_listing(counted)}.",
        f"A room seen from above: {_listing(named)} on the floor, {_listing(walls)}.",
        f"{article(picked.colour).capitalize()} {picked.name} {_at(picked.row, picked.col, scene.grid)} "
        f"of a room with {number_word(len(objs) - 1)} other objects.",
    ]
    rng.shuffle(others)
    others = [c + rng.choice((" ", "\n")) if rng.random() < _TRAILING_QUIRK_SHARE else c for c in others]
    return [f"A top view of a room with {_listing(named)}.", *others]


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, subsampling=0)  # no chroma subsampling: the 16-px cells keep their colour
    return buf.getvalue()


def build_coco_captions(seed: int = 0, scenes: int = 25, image_size: int = 48) -> tuple[dict, dict[str, bytes]]:
    """(captions_{split}2017.json object, {file name: JPEG bytes}); deterministic per seed. Image id = scene
    index (from ``COCO_FIRST_SCENE``), file ``{id:012}.jpg``; the annotations interleave the images, as the
    real file does, with unique ids; an image's first caption is its canonical one."""
    rooms = [generate_scene(scene_rng(seed, i, "scene"), i) for i in range(COCO_FIRST_SCENE, COCO_FIRST_SCENE + scenes)]
    images, files, captions = [], {}, []
    for scene in rooms:
        file_name = f"{scene.index:012}.jpg"
        files[file_name] = jpeg_bytes(render(scene, image_size))
        images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": image_size,
                       "width": image_size, "date_captured": "2000-01-01 00:00:00", "flickr_url": "",
                       "id": scene.index})
        captions.append([(scene.index, c) for c in toy_captions(scene, scene_rng(seed, scene.index, "coco"))])
    # round-robin over the images: caption k of every image, then caption k + 1, …
    ordered = [pair for k in range(COCO_CAPTIONS_PER_IMAGE) for pair in (c[k] for c in captions)]
    annotations = [{"image_id": image_id, "id": n + 1, "caption": caption} for n, (image_id, caption) in enumerate(ordered)]
    data = {
        "info": {"description": "toy-world COCO Captions sample", "version": "1.0", "year": 2000,
                 "contributor": "vlm.data.toyworld", "date_created": "2000/01/01"},
        "licenses": [{"url": "", "id": 1, "name": "synthetic"}],
        "images": images,
        "annotations": annotations,
    }
    return data, files


def write_coco_captions_sample(out: str | Path, seed: int = 0, scenes: int = 25) -> int:
    """Write ``out/annotations/captions_val2017.json`` + ``out/val2017/<id:012>.jpg`` (COCO's own layout);
    returns the number of images."""
    out = Path(out)
    data, files = build_coco_captions(seed, scenes)
    for file_name, blob in files.items():
        _write(out / "val2017" / file_name, blob)
    _write(out / "annotations" / "captions_val2017.json", json_bytes(data))
    return len(files)
