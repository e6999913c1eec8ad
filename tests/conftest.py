"""Shared fixtures. Every test runs offline: no hub is reachable on CI or on a developer machine."""

from __future__ import annotations

import os

import pytest

from helpers import hypo3d_data, scanqa_data, write_images, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    """A fresh zoo cache for the session's zoo-model tests (VLM_ZOO_DIR while they run)."""
    import os

    path = tmp_path_factory.mktemp("zoo")
    old = os.environ.get("VLM_ZOO_DIR")
    os.environ["VLM_ZOO_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("VLM_ZOO_DIR")
    else:
        os.environ["VLM_ZOO_DIR"] = old


@pytest.fixture
def hypo3d_files(tmp_path):
    data = hypo3d_data()
    path = write_json(tmp_path / "hypo3d.json", data)
    images = write_images(tmp_path / "images", data)
    return path, images, data


@pytest.fixture
def scanqa_files(tmp_path):
    data = scanqa_data()
    path = write_json(tmp_path / "scanqa.json", data)
    images = write_images(tmp_path / "images", {r["scene_id"] for r in data})
    return path, images, data


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped (with the reason) where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
