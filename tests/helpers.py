"""Test helpers: tiny hand-made benchmark files in the real formats (independent of the toy world)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return path


def write_images(images_dir: Path, scene_ids) -> Path:
    images_dir.mkdir(parents=True, exist_ok=True)
    for sid in scene_ids:
        Image.new("RGB", (8, 8), (128, 128, 128)).save(images_dir / f"{sid}.png")
    return images_dir


def hypo3d_data(n_scenes: int = 6, changes: int = 2, qas: int = 2) -> dict:
    data, qid = {}, 0
    kinds = ["Movement", "Removal", "Attribute", "Addition", "Replacement"]
    for s in range(n_scenes):
        scene = []
        for c in range(changes):
            qa_list = []
            for _ in range(qas):
                qa_list.append({"question_id": f"{qid:05d}", "question_type": "Direction Semantic" if qid % 2 else "Scale",
                                "question": f"How many chairs are in scene {s}?", "answer": "two"})
                qid += 1
            scene.append({"context_change": f"Change {c} of scene {s}.", "change_type": f"Object {kinds[(s + c) % 5]} Change",
                          "questions_answers": qa_list})
        data[f"scene{s:04d}_00"] = scene
    return data


def scanqa_data(n_scenes: int = 6, per_scene: int = 3) -> list:
    return [
        {"scene_id": f"scene{s:04d}_00", "question_id": f"train-scene{s:04d}-{i}", "question": f"What is near the door {i}?",
         "answers": ["brown chair", "chair"], "object_ids": [3], "object_names": ["chair"]}
        for s in range(n_scenes) for i in range(per_scene)
    ]


def conversation(with_image: bool = True):
    """Two user/assistant turns, the image (if any) on the first user turn: the adapter tests' chat."""
    first = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": "How many chairs are there?"}]
    return [
        {"role": "user", "content": first},
        {"role": "assistant", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": [{"type": "text", "text": "Where is the two-seat sofa?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "front left"}]},
    ]


def run_vlm(*args, cwd=REPO, env=None):
    """Run ``python -m vlm …`` the way the pipelines do."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "vlm", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
