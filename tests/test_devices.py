"""The device paths: every generator, actor, environment, buffer and training loop on each device (CUDA cases
skipped without a GPU), checkpoints moved between devices, CPU-CUDA parity on deterministic paths, and sampler
loops without host synchronisation. Run on a GPU by ``scripts/device_check.sh`` (``pytest -m cuda``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dyaug.datasets
from dyaug import DyDiff, SynthER, Transitions
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule
from dyaug.diffusion.networks import ResidualMLP
from dyaug.diffusion.samplers import DPMSolverSampler, DPMSolverSDESampler, HeunSampler
from dyaug.diffusion.training import TrainConfig, train
from dyaug.models import EnsembleConfig, RewardConfig

tiny_tensors = True
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


@pytest.fixture(scope="module")
def hopper() -> Transitions:
    return Transitions.from_minari(dyaug.datasets.load("dyaug/hopper/medium-replay-tiny-v0", progress=False))


def test_synther_fits_samples_and_reloads_on_each_device(device, hopper: Transitions, tmp_path: Path) -> None:
    gen = SynthER("tiny", device=device, seed=0, train_steps=50).fit(hopper, progress=False)
    assert next(gen.model.network.parameters()).device.type == device.type
    samples = gen.sample(256, seed=1, progress=False)
    assert np.isfinite(samples.observations).all() and len(samples) == 256
    path = gen.save(tmp_path / "g.safetensors")
    on_cpu = SynthER.load(path, device="cpu")  # a checkpoint written on any device loads on the CPU
    assert next(on_cpu.model.network.parameters()).device.type == "cpu"


def test_dydiff_rolls_out_on_each_device(device, hopper: Transitions) -> None:
    short = {"max_epochs": 2}
    gen = DyDiff(
        "tiny",
        device=device,
        seed=0,
        train_steps=20,
        dynamics=EnsembleConfig.from_preset("tiny", **short),
        reward=RewardConfig.from_preset("tiny", **short),
    ).fit(hopper, env_id="Hopper-v5", progress=False)

    def policy(states: torch.Tensor) -> torch.Tensor:
        assert states.device.type == device.type
        return torch.zeros(len(states), 3, device=states.device)

    out = gen.rollout(policy, hopper.observations[:16], seed=0)
    assert len(out) > 0 and np.isfinite(out.next_observations).all()


@pytest.mark.parametrize(
    "sampler", [HeunSampler(n_steps=8, churn=10.0), DPMSolverSampler(n_steps=8), DPMSolverSDESampler(n_steps=8)]
)
def test_samplers_run_on_each_device(device, sampler) -> None:
    torch.manual_seed(0)
    net = ResidualMLP(6, width=32, depth=2, dim_t=16).to(device)
    x = sampler.sample(EDMDenoiser(net, EDMSchedule()), EDMSchedule(), (64, 6), generator=torch.Generator(device))
    assert x.device.type == device.type and torch.isfinite(x).all()


def test_training_loop_runs_on_each_device(device) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4).to(device)
    data = torch.randn(64, 4, device=device)
    result = train(lambda y: (net(y) - y).square().mean(), net, data, TrainConfig(steps=20, batch_size=8, log_every=10),
                   progress=False)  # fmt: skip
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()


def test_diffusion_actors_act_on_each_device(device) -> None:
    from dyaug.actors import DeterministicActor, DiffusionPolicy, TwinQ, select_actions

    obs = torch.randn(5, 11, device=device)
    dql = DiffusionPolicy(11, 3).to(device)
    q = TwinQ(11, 3).to(device)
    with torch.no_grad():
        actions = select_actions(dql, q.min, obs, n_candidates=4)
        srpo = DeterministicActor(11, 3).to(device)(obs)
    assert actions.shape == srpo.shape == (5, 3) and actions.device.type == device.type


# ---------------------------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@cuda_only
def test_cpu_and_cuda_agree_on_a_sampler_from_fixed_noise() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    net = ResidualMLP(6, width=64, depth=2, dim_t=16)
    x0 = 80.0 * torch.randn(256, 6)
    results = []
    for device in ("cpu", "cuda"):
        denoiser = EDMDenoiser(net.to(device), EDMSchedule(), precision="fp32")
        results.append(DPMSolverSampler(n_steps=16).sample(denoiser, EDMSchedule(), (256, 6), x_init=x0.to(device)))
    torch.testing.assert_close(results[0], results[1].cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@cuda_only
def test_cpu_and_cuda_agree_on_a_training_step() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    losses = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to(device)
        y = torch.linspace(-1, 1, 64 * 4).reshape(64, 4).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for _ in range(5):
            loss = (net(y) - y).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.cuda
@cuda_only
def test_sampler_loops_do_not_synchronise_with_the_host() -> None:
    net = ResidualMLP(6, width=64, depth=2, dim_t=16).cuda()
    denoiser = EDMDenoiser(net, EDMSchedule(), precision="fp32")
    x = torch.randn(128, 6, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        from dyaug.diffusion.samplers import dpmpp_2m, heun

        with torch.no_grad():
            heun(lambda y, s: denoiser(y, s), x, EDMSchedule().sigmas(8), churn=10.0)
            dpmpp_2m(lambda y, s: denoiser(y, s), x, EDMSchedule().sigmas(8))
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_compiled_networks_match_eager_ones_and_fall_back_loudly(monkeypatch, hopper: Transitions) -> None:
    """torch.compile as a setting: same samples as the eager network (CPU here, CUDA graphs with
    "reduce-overhead" on a GPU), and a compiler failure warns once and runs the network uncompiled."""
    import dyaug.device as device_module

    # fp32 pinned: on a CPU where "auto" picks bf16, fused and eager bf16 kernels round differently (3e-3 here),
    # which is precision's tolerance, not compilation's.
    fp32 = {"train_precision": "fp32", "sample_precision": "fp32"}
    eager = SynthER("tiny", device="cpu", seed=0, train_steps=30, **fp32).fit(hopper, progress=False)
    compiled = SynthER("tiny", device="cpu", seed=0, train_steps=30, compile="default", **fp32).fit(
        hopper, progress=False
    )
    a, b = eager.sample(64, seed=3, progress=False), compiled.sample(64, seed=3, progress=False)
    np.testing.assert_allclose(a.next_observations, b.next_observations, atol=1e-3)

    def broken(module: torch.nn.Module, mode: str) -> object:
        def fail(*args: object, **kwargs: object) -> object:
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(device_module.torch, "compile", broken)
    net = device_module.maybe_compiled(torch.nn.Linear(2, 2), "default")
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        out = net(torch.ones(1, 2))
    assert out.shape == (1, 2) and list(net.state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError, match="compile must be None"):
        device_module.maybe_compiled(torch.nn.Linear(2, 2), "fastest")  # type: ignore[arg-type]
