"""Shared fixtures. Every test runs offline: no hub is reachable on CI or on a developer machine."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import hypo3d_data, scanqa_data, write_images, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread per test process (and the stage subprocesses it starts): the suite runs in parallel workers
# (pytest-xdist, pyproject addopts), one per core; two threads per worker on shared cores made a training step
# ~14x slower on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session", autouse=True)
def zoo_dir(tmp_path_factory):
    """One zoo cache for the whole run, shared by every xdist worker (each entry is built once, under the zoo's
    own file lock, by whichever test needs it first; ~/.cache is never touched): VLM_ZOO_DIR for the session."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zoo-shared"
    path.mkdir(exist_ok=True)
    old = os.environ.get("VLM_ZOO_DIR")
    os.environ["VLM_ZOO_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("VLM_ZOO_DIR", None)
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
