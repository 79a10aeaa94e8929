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


CUDA = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="no CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest):
    """Each test that takes ``device`` runs on the CPU and, where a GPU is present, on CUDA (marker ``cuda``)."""
    import torch

    return torch.device(request.param)
