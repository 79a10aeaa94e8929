"""``dyaug.SynthER``: fit on every accepted input, post-processing, rejection, determinism, checkpoints, errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import dyaug.integrations.d3rlpy
import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from stable_baselines3.common.buffers import ReplayBuffer

import dyaug.datasets
from dyaug import SynthER, SynthERConfig
from dyaug.data import Transitions
from dyaug.data.coerce import ActionBounds
from dyaug.persistence import save_model
from dyaug.synther import PRESETS, DataRange, RowLayout

tiny_tensors = True
HOPPER_OBS, HOPPER_ACT = 11, 3


@pytest.fixture(scope="module")
def hopper() -> minari.MinariDataset:
    return dyaug.datasets.forge("hopper", "random", budget="tiny", progress=False)


@pytest.fixture(scope="module")
def fitted(hopper: minari.MinariDataset) -> SynthER:
    return SynthER("tiny", device="cpu", seed=0).fit(hopper, progress=False)


def _assert_same(a: Transitions, b: Transitions) -> None:
    for name, value in a.as_dict().items():
        other = getattr(b, name)
        assert (value is None and other is None) or np.array_equal(value, other), name


# ------------------------------------------------------------------------------------------------ config
def test_presets_hold_the_papers_settings() -> None:
    paper = PRESETS["paper"]
    assert (paper.width, paper.depth, paper.dim_t, paper.train_steps, paper.sigma_data) == (2048, 6, 128, 100_000, 1.0)
    assert paper.train_config(799_999).batch_size == 256 and paper.train_config(800_000).batch_size == 1024
    optim = paper.train_config(1)
    assert (optim.lr, optim.betas, optim.grad_clip, optim.cosine_decay) == (3e-4, (0.9, 0.99), 1.0, True)
    assert (optim.ema_decay, optim.ema_every, optim.ema_warmup) == (0.995, 10, 100)
    sampler = paper.sampler()
    assert sampler.network_evaluations == 255
    sigmas = paper.schedule().sigmas(128)
    gammas = sampler.churn_factors(sigmas)
    in_band = [g for s, g in zip(sigmas, gammas, strict=False) if 0.05 <= s <= 50]
    assert in_band and all(g == pytest.approx(math.sqrt(2) - 1) for g in in_band)
    assert (sampler.s_noise, paper.sample_precision) == (1.003, "auto")  # the official fp32 where it is faster
    assert PRESETS["cpu"].train_config(10**7).batch_size == 256  # no large-data batch outside "paper"
    assert (PRESETS["cpu"].width, PRESETS["cpu"].depth, PRESETS["cpu"].sampler_steps) == (256, 3, 32)
    # "cpu-v1" stays the offline-RL study's frozen preset; "cpu" differs from it only in the sampler.
    frozen, cpu = PRESETS["cpu-v1"], PRESETS["cpu"]
    assert (frozen.solver, frozen.sampler().network_evaluations, frozen.labels) == ("heun", 63, "models")
    assert (cpu.solver, cpu.sampler().network_evaluations) == ("dpmpp_2m_sde", 32)
    assert dataclasses.replace(cpu, solver="heun") == frozen


def test_config_is_frozen_and_survives_json() -> None:
    config = PRESETS["paper"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 3  # type: ignore[misc]
    for preset in PRESETS.values():
        assert SynthERConfig(**json.loads(json.dumps(preset.to_dict()))) == preset


def test_unknown_presets_overrides_and_bad_values_raise_named_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown SynthER preset 'huge'; choose one of \['cpu', 'cpu-v1', 'paper', 'tiny'\]"
    ):
        SynthER("huge")
    with pytest.raises(TypeError, match=r"unknown settings \['hidden'\]"):
        SynthER("tiny", hidden=3)
    with pytest.raises(ValueError, match=r"SynthERConfig\.width must be an integer >= 1"):
        SynthER("tiny", width=0)
    with pytest.raises(ValueError, match="sample_precision must be one of"):
        SynthER("tiny", sample_precision="fp16")
    with pytest.raises(ValueError, match="churn must be finite"):
        SynthER("tiny", churn=-1.0)
    with pytest.raises(RuntimeError, match=r"not fitted; call \.fit\(data\)"):
        SynthER("tiny").sample(3)


# ------------------------------------------------------------------------------------ rows and ranges
def test_rows_round_trip_and_decode_thresholds_terminals_and_clips_actions() -> None:
    layout = RowLayout(obs_dim=2, act_dim=1)
    t = Transitions(
        observations=[[1, 2], [3, 4], [5, 6]],
        actions=[[0.5], [-0.25], [1.0]],
        rewards=[1, 2, 3],
        next_observations=[[7, 8], [9, 10], [11, 12]],
        terminals=[0, 1, 0],
        timeouts=[0, 0, 1],
    )
    rows = layout.encode(t)
    assert rows.shape == (3, layout.dim) == (3, 7) and layout.terminal_column == 6
    assert rows[1].tolist() == [3, 4, -0.25, 2, 9, 10, 1]
    bounds = ActionBounds(np.array([-1.0]), np.array([1.0]), "given")
    back = layout.decode(rows, bounds)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        assert np.array_equal(getattr(back, name), getattr(t, name)), name
    assert back.timeouts.tolist() == [0, 0, 0]  # synthetic rows end no episode

    raw = rows.copy()
    raw[:, 2] = [1.5, -3.0, 0.999]
    raw[:, 6] = [0.5, 0.5000001, -0.2]
    decoded = layout.decode(raw, bounds)
    assert decoded.actions[:, 0].tolist() == [1.0, -1.0, np.float32(0.999)]
    assert decoded.terminals.tolist() == [0.0, 1.0, 0.0]  # terminal = 1[x > 0.5]


def test_data_range_checks_every_column_but_the_terminal_and_constant_ones() -> None:
    layout = RowLayout(obs_dim=1, act_dim=1)
    rows = np.array([[0.0, -1.0, 5.0, 0.0, 0.0], [2.0, 1.0, 5.0, 1.0, 1.0]], np.float32)
    data_range = DataRange.of(rows, layout)
    assert data_range.checked.tolist() == [True, True, False, True, False]
    probe = np.array([[2.19, 1.0, 99.0, 0.5, 7.0], [2.21, 1.0, 5.0, 0.5, 0.0], [-0.2, -1.5, 5.0, 0.5, 0.0]])
    # k = 0.1: column 0 allows [-0.2, 2.2], column 1 [-1.2, 1.2], column 3 [-0.1, 1.1].
    assert data_range.outside(probe, 0.1).tolist() == [
        [False, False, False, False, False],
        [True, False, False, False, False],
        [False, True, False, False, False],
    ]
    with pytest.raises(ValueError, match="finite number >= 0"):
        data_range.outside(probe, -1.0)


# --------------------------------------------------------------------------------------------- fitting
@pytest.mark.parametrize("kind", ["transitions", "minari", "d3rlpy", "sb3"])
def test_fit_accepts_every_input_type(kind: str, hopper: minari.MinariDataset) -> None:
    real = Transitions.from_minari(hopper)[:300]
    if kind == "transitions":
        data, source = real, "data range"
    elif kind == "minari":
        data, source = hopper, "action space"
    elif kind == "d3rlpy":
        data, source = real.to_d3rlpy(), "data range"
    else:
        data, source = _sb3_hopper_buffer(steps=120), "action space"
    gen = SynthER("tiny", device="cpu", train_steps=5).fit(data, progress=False)
    assert (gen.model.layout.obs_dim, gen.model.layout.act_dim) == (HOPPER_OBS, HOPPER_ACT)
    assert gen.model.action_bounds.source == source
    assert gen.model.training_data["n_transitions"] == {"minari": hopper.total_steps, "sb3": 120}.get(kind, 300)
    assert len(gen.training_losses) == 1 and np.isfinite(gen.training_losses[0])


def _sb3_hopper_buffer(steps: int) -> ReplayBuffer:
    env = gym.make("Hopper-v5")
    buffer = ReplayBuffer(steps, env.observation_space, env.action_space, handle_timeout_termination=True)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        action = env.action_space.sample()  # Hopper's actions lie in [-1, 1]: SB3's scaling is the identity
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]), [{}])
        obs = env.reset()[0] if terminated or truncated else next_obs
    return buffer


def test_bad_training_data_raises_named_errors(hopper: minari.MinariDataset) -> None:
    real = Transitions.from_minari(hopper)
    gen = SynthER("tiny", device="cpu", train_steps=2)
    with pytest.raises(ValueError, match="holds no transitions"):
        gen.fit(real[:0], progress=False)
    with pytest.raises(TypeError, match=r"cannot read RL data from a numpy\.ndarray"):
        gen.fit(real.observations, progress=False)
    with pytest.raises(ValueError, match="action_bounds have 2 dimensions but the actions 3"):
        gen.fit(real, action_bounds=(np.zeros(2), np.ones(2)), progress=False)
    observations = real.observations.copy()
    observations[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"Transitions.observations contains NaN or Inf \(first at index \(5, 2\)\)"):
        gen.fit(real.replace(observations=observations), progress=False)


def test_fitting_and_sampling_leave_the_real_data_untouched(hopper: minari.MinariDataset) -> None:
    real = Transitions.from_minari(hopper)[:400]
    before = real.fingerprint()
    gen = SynthER("tiny", device="cpu", train_steps=5).fit(real, progress=False)
    gen.sample(50, progress=False)
    assert real.fingerprint() == before
    assert Transitions.from_minari(hopper)[:400].fingerprint() == before


# -------------------------------------------------------------------------------------------- sampling
def test_samples_are_float32_transitions_post_processed_from_the_raw_rows(fitted: SynthER) -> None:
    samples = fitted.sample(600, progress=False, seed=7, batch_size=256)
    assert len(samples) == 600 and (samples.obs_dim, samples.act_dim) == (HOPPER_OBS, HOPPER_ACT)
    for name, value in samples.as_dict().items():
        assert value is None or value.dtype == np.float32, name
    assert set(np.unique(samples.terminals)) <= {0.0, 1.0} and not samples.timeouts.any()
    assert samples.actions.min() >= -1.0 and samples.actions.max() <= 1.0

    raw = fitted._generate_rows(600, 256, seed=7, progress=False)
    actions = raw[:, HOPPER_OBS : HOPPER_OBS + HOPPER_ACT]
    assert (np.abs(actions) > 1).any()  # the tiny model overshoots, so clipping is exercised
    _assert_same(samples, fitted.model.layout.decode(raw, fitted.model.action_bounds))


def test_rejection_drops_exactly_the_rows_outside_the_data_range(fitted: SynthER, hopper) -> None:
    rows = fitted.model.layout.encode(Transitions.from_minari(hopper))
    low, high = rows.min(0), rows.max(0)
    raw = fitted._generate_rows(800, 10_000, seed=3, progress=False)
    kept = {}
    for k in (0.0, 0.1):
        margin = k * (high - low)
        outside = ((raw < low - margin) | (raw > high + margin))[:, :-1]  # every column but the terminal flag
        samples = fitted.sample(800, progress=False, seed=3, reject_outside=k)
        stats = fitted.last_sample_stats
        assert (stats.generated, stats.rejected, stats.kept) == (800, outside.any(1).sum(), len(samples))
        assert stats.outside_by_column[:-1].tolist() == outside.sum(0).tolist() and stats.outside_by_column[-1] == 0
        assert np.array_equal(samples.observations, raw[~outside.any(1), :HOPPER_OBS])
        kept[k] = len(samples)
    assert 0 < kept[0.0] < kept[0.1] < 800
    fitted.sample(10, progress=False)
    assert fitted.last_sample_stats.rejected == 0


def test_bad_sample_arguments_raise(fitted: SynthER) -> None:
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            fitted.sample(n, progress=False)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        fitted.sample(5, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="tolerance k must be a finite number >= 0"):
        fitted.sample(5, reject_outside=-0.5, progress=False)


def test_same_seed_same_samples_and_save_load_repeats_them(
    fitted: SynthER, hopper: minari.MinariDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = SynthER("tiny", device="cpu", seed=0).fit(hopper, progress=False)
    path = twin.save(tmp_path / "synther.safetensors")
    loaded = SynthER.load(path, device="cpu")
    assert loaded.config == twin.config and loaded.seed == 0 and loaded.training_losses == twin.training_losses
    bounds, twin_bounds = loaded.model.action_bounds, twin.model.action_bounds
    assert bounds.source == twin_bounds.source == "action space"
    assert np.array_equal(bounds.low, twin_bounds.low) and np.array_equal(bounds.high, twin_bounds.high)
    assert np.array_equal(loaded.model.data_range.low, twin.model.data_range.low)
    assert np.array_equal(loaded.model.codec.normalizer.scale, twin.model.codec.normalizer.scale)

    first, first_loaded = twin.sample(300, progress=False), loaded.sample(300, progress=False)
    _assert_same(first, first_loaded)
    second = twin.sample(300, progress=False)
    assert not np.array_equal(first.observations, second.observations)  # successive calls differ
    _assert_same(second, loaded.sample(300, progress=False))
    _assert_same(fitted.sample(300, seed=11, progress=False), twin.sample(300, seed=11, progress=False))

    other_seed = SynthER("tiny", device="cpu", seed=1, train_steps=5).fit(hopper, progress=False)
    assert not np.array_equal(other_seed.sample(50, seed=11, progress=False).observations, first.observations[:50])

    # sampling settings may change on load, training settings may not
    sde = SynthER.load(path, device="cpu", solver="dpmpp_2m_sde", sampler_steps=8)
    assert sde.config == dataclasses.replace(twin.config, solver="dpmpp_2m_sde", sampler_steps=8)
    assert sde.config.sampler().network_evaluations == 8
    rows = sde.sample(300, seed=11, progress=False)
    assert not np.array_equal(rows.observations, twin.sample(300, seed=11, progress=False).observations)
    _assert_same(rows, SynthER.load(path, device="cpu", solver="dpmpp_2m_sde", sampler_steps=8).sample(300, seed=11))
    with pytest.raises(ValueError, match=r"only change sampling settings .* got \['width'\]"):
        SynthER.load(path, device="cpu", width=32)
    # a saved generator keeps the sampler it was saved with when its preset changes later
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], solver="dpmpp_2m_sde"))
    kept = SynthER.load(path, device="cpu")
    assert kept.config.solver == "heun" and SynthER("tiny").config.solver == "dpmpp_2m_sde"
    _assert_same(kept.sample(300, seed=11, progress=False), twin.sample(300, seed=11, progress=False))


def test_an_interrupted_fit_resumes_from_its_checkpoint_to_the_same_generator(
    fitted: SynthER, hopper: minari.MinariDataset, tmp_path: Path
) -> None:
    class Stop(Exception):
        pass

    def stop_at_200(generator: SynthER, step: int) -> None:
        if step == 200:  # before the checkpoint of step 200 is written: the fit resumes from step 100
            raise Stop

    path = tmp_path / "fit.safetensors"
    with pytest.raises(Stop):
        SynthER("tiny", device="cpu", seed=0).fit(
            hopper, progress=False, callback=stop_at_200, checkpoint=path, checkpoint_every=100
        )
    seen: list[int] = []
    resumed = SynthER("tiny", device="cpu", seed=0).fit(
        hopper, progress=False, callback=lambda _, step: seen.append(step), checkpoint=path, checkpoint_every=100
    )
    assert seen == [200, 300]  # continued from the checkpoint of step 100
    assert resumed.training_losses == fitted.training_losses
    _assert_same(resumed.sample(300, seed=11, progress=False), fitted.sample(300, seed=11, progress=False))
    real = Transitions.from_minari(hopper)
    with pytest.raises(ValueError, match=r"\(data: checkpoint '[0-9a-f]{64}', this run '[0-9a-f]{64}'\)"):
        SynthER("tiny", device="cpu", seed=0).fit(real.replace(rewards=real.rewards + 1), checkpoint=path)
    with pytest.raises(ValueError, match=r"\(generator.width: checkpoint 64, this run 32\)"):
        SynthER("tiny", device="cpu", seed=0, width=32).fit(hopper, checkpoint=path)
    # sampling settings are not training settings: the finished fit resumes (and trains nothing)
    seen.clear()
    other_sampler = SynthER("tiny", device="cpu", seed=0, sampler_steps=8, solver="dpmpp_2m_sde")
    other_sampler.fit(hopper, progress=False, callback=lambda _, step: seen.append(step), checkpoint=path)
    assert seen == [] and other_sampler.training_losses == fitted.training_losses
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        SynthER("tiny", device="cpu").fit(hopper, checkpoint=path, checkpoint_every=0)


def test_load_refuses_other_checkpoints(tmp_path: Path) -> None:
    path = save_model(
        tmp_path / "other.safetensors", "diffusion_policy", modules={"net": torch.nn.Linear(2, 2)}, config={}
    )
    with pytest.raises(ValueError, match="holds a 'diffusion_policy' checkpoint but a 'synther' checkpoint"):
        SynthER.load(path, device="cpu")


# ------------------------------------------------------------------------------------------ integration
@pytest.mark.filterwarnings("ignore:.*next_actions:UserWarning")
def test_augment_mixes_n_samples_into_a_d3rlpy_buffer(fitted: SynthER, hopper: minari.MinariDataset) -> None:
    from dyaug.integrations.d3rlpy import SyntheticReplayBuffer

    real = Transitions.from_minari(hopper)[:200]
    mixed = fitted.augment(real.to_d3rlpy(), 64, real_ratio=0.5, seed=2, progress=False)
    synthetic = fitted.sample(64, seed=2, progress=False)  # the same draw
    assert isinstance(mixed, SyntheticReplayBuffer) and len(mixed) == 200 + 64
    batch = mixed.sample_transition_batch(40)
    real_rows = {row.tobytes() for row in real.observations}
    synthetic_rows = {row.tobytes() for row in synthetic.observations}
    assert all(row.tobytes() in real_rows for row in batch.observations[:20])
    assert all(row.tobytes() in synthetic_rows for row in batch.observations[20:])


@pytest.mark.filterwarnings("ignore::UserWarning:minari")
def test_synthetic_data_saves_as_a_minari_dataset_marked_synthetic(fitted: SynthER) -> None:
    samples = fitted.sample(25, progress=False)
    dataset = samples.to_minari("test/hopper-synthetic-v0", "Hopper-v5", synthetic=True, generator=fitted.provenance())
    meta = minari.load_dataset("test/hopper-synthetic-v0").storage.metadata
    assert meta["synthetic"] is True
    generator = meta["generator"]
    assert generator["generator"] == "dyaug.SynthER" and generator["dyaug_version"] == dyaug.__version__
    assert generator["training_data"] == {
        "id": "dyaug/hopper/random-tiny-v0",
        "n_transitions": 2000,
        "obs_dim": 11,
        "act_dim": 3,
        "env_id": "Hopper-v5",
    }
    assert SynthERConfig(**generator["config"]) == fitted.config and generator["seed"] == 0
    assert dataset.total_episodes == 25  # unordered synthetic transitions: one 1-step episode each
    assert np.array_equal(Transitions.from_minari(dataset).next_observations, samples.next_observations)


# ------------------------------------------------------------------------------------- fast inference path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_residual_mlp_in_place_inference_equals_the_reference_path(dtype: torch.dtype, monkeypatch) -> None:
    from dyaug.diffusion.networks.residual_mlp import PreActivationBlock, ResidualMLP

    in_place_calls = []
    add_to_ = PreActivationBlock.add_to_
    monkeypatch.setattr(PreActivationBlock, "add_to_", lambda *a: in_place_calls.append(1) or add_to_(*a))
    torch.manual_seed(0)
    net = ResidualMLP(9, width=48, depth=3, dim_t=16).to(dtype)
    x, t = torch.randn(64, 9, dtype=dtype), torch.randn(64, dtype=dtype)
    reference = net(x, t)  # parameters require grad: the reference path
    assert reference.requires_grad and not in_place_calls
    with torch.no_grad():
        fused = net(x, t)
        assert len(in_place_calls) == 3  # one per block
        net.fused_inference = False
        assert torch.equal(net(x, t), reference.detach()) and len(in_place_calls) == 3
    tolerance = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(fused, reference.detach(), rtol=tolerance, atol=tolerance)


def test_residual_mlp_keeps_the_reference_path_under_autocast() -> None:
    from dyaug.diffusion.networks import ResidualMLP

    torch.manual_seed(0)
    net = ResidualMLP(5, width=32, depth=2, dim_t=16).eval().requires_grad_(False)
    x, t = torch.randn(16, 5), torch.randn(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused_allowed = net(x, t)
        net.fused_inference = False
        reference = net(x, t)
    assert torch.equal(fused_allowed, reference)
