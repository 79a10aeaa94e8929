"""Test-wide settings: every test writes datasets and caches under a temporary folder, never the user's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_stores(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("stores")
    os.environ["MINARI_DATASETS_PATH"] = str(root / "minari")
    os.environ["DYAUG_HOME"] = str(root / "dyaug")


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread_for_tiny_tensors(request: pytest.FixtureRequest):
    """Modules marked ``tiny_tensors = True`` run torch on one thread: on a busy CPU, OpenMP barriers on
    tiny tensors cost far more than the work."""
    if not getattr(request.module, "tiny_tensors", False):
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
