"""Device edges that break or differ on CUDA, checked on the CPU where they can be: models on another device than
their generator, global CUDA generators left alone, a resume on another device, buffers that follow .to()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dyaug import DyDiff, Transitions
from dyaug.device import check_same_device, same_device
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule
from dyaug.diffusion.networks import ResidualMLP
from dyaug.diffusion.training import TrainConfig, train
from dyaug.models.fitting import seeded_module
from dyaug.persistence import load_checkpoint, save_checkpoint

tiny_tensors = True


class ElsewhereModel:
    """A single-step model that says it lives on another device."""

    device = torch.device("meta")
    obs_dim, act_dim = 3, 1

    def step(self, obs: torch.Tensor, act: torch.Tensor, *, generator: object = None) -> torch.Tensor:
        return obs


def _data(n: int = 200) -> Transitions:
    rng = np.random.default_rng(0)
    return Transitions(rng.normal(size=(n, 3)), rng.uniform(-1, 1, (n, 1)), rng.normal(size=n),
                       rng.normal(size=(n, 3)), np.zeros(n), (np.arange(n) % 50 == 49).astype(float))  # fmt: skip


def test_a_model_on_another_device_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"dynamics model is on meta but this DyDiff runs on cpu.*device='cpu'"):
        DyDiff("tiny", device="cpu").fit(_data(), dynamics=ElsewhereModel(), env_id="Hopper-v5", progress=False)
    check_same_device({"plain function": lambda s, a: s}, torch.device("cpu"), "X")  # functions follow inputs
    assert same_device("cuda", "cuda:0") and not same_device("cpu", "cuda:0") and same_device("cpu", "cpu")


def test_model_initialisation_leaves_every_global_generator_alone(monkeypatch) -> None:
    def reseeds_cuda_too(seed: int) -> None:
        raise AssertionError("torch.manual_seed reseeds the global CUDA generators; use a CPU-only fork")

    monkeypatch.setattr(torch, "manual_seed", reseeds_cuda_too)
    before = torch.get_rng_state()
    a = seeded_module(lambda: torch.nn.Linear(3, 2), 7, torch.device("cpu"))
    b = seeded_module(lambda: torch.nn.Linear(3, 2), 7, torch.device("cpu"))
    assert torch.equal(a.weight, b.weight) and torch.equal(torch.get_rng_state(), before)


def test_resume_on_another_device_says_so(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2)
    path = tmp_path / "state.safetensors"
    train(lambda y: net(y).square().mean(), net, torch.randn(8, 2), config, checkpoint_path=path, progress=False)
    tensors, meta = load_checkpoint(path)
    assert meta["device_type"] == "cpu"
    save_checkpoint(path, tensors, {**meta, "device_type": "cuda"})  # as if written on a GPU
    more = TrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=2)
    with pytest.raises(ValueError, match="written by a run on cuda and this run is on cpu"):
        train(lambda y: net(y).square().mean(), net, torch.randn(8, 2), more, checkpoint_path=path, progress=False)
    assert json.loads(json.dumps(meta))  # plain JSON


def test_clean_input_mask_follows_the_denoiser_to_another_device() -> None:
    mask = torch.zeros(1, 5, dtype=torch.bool)
    mask[0, 0] = True
    denoiser = EDMDenoiser(ResidualMLP(5, width=16, depth=1, dim_t=8), EDMSchedule(), clean_input=mask)
    assert "clean_input" in dict(denoiser.named_buffers())
    assert denoiser.to("meta").clean_input.device.type == "meta"
    assert "clean_input" not in denoiser.state_dict()  # not part of a checkpoint's weights
