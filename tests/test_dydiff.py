"""``dyaug.DyDiff``: windows, conditioning held exactly, the rollout engine on exact fakes, filters, policy
consistency, determinism, checkpoints and errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import minari
import numpy as np
import pytest
import torch

import dyaug.datasets
from dyaug import DyDiff, DyDiffConfig
from dyaug.data import Transitions, make_windows
from dyaug.data.normalizers import MinMaxNormalizer
from dyaug.diffusion import EDMDenoiser, edm_loss
from dyaug.dydiff import PRESETS, Hardmax, KeepAll, RolloutEngine, Softmax, Trajectories, WindowIndex
from dyaug.dydiff.filters import kept_count
from dyaug.dydiff.phases import PHASE_PRESETS
from dyaug.dydiff.trajectory_model import (
    TrajectoryModel,
    encode_windows,
    fit_trajectory_model,
    given_mask,
    offset_normalizer,
)
from dyaug.models import LocomotionTermination
from dyaug.models.support import DataSupport

tiny_tensors = True
OBS, ACT = 11, 3


def policy(states: torch.Tensor) -> torch.Tensor:
    """Elementwise (no reductions), so its value on a row does not depend on the batch it is computed in."""
    return (0.5 * states[:, :ACT] - 0.25 * states[:, ACT : 2 * ACT]).clamp(-1.0, 1.0)


@pytest.fixture(scope="module")
def hopper() -> minari.MinariDataset:
    return dyaug.datasets.forge("hopper", "random", budget="tiny", progress=False)


@pytest.fixture(scope="module")
def real(hopper: minari.MinariDataset) -> Transitions:
    return Transitions.from_minari(hopper)


@pytest.fixture(scope="module")
def fitted(hopper: minari.MinariDataset) -> DyDiff:
    return DyDiff("tiny", device="cpu", seed=0).fit(hopper, progress=False)


@pytest.fixture(scope="module")
def starts(real: Transitions) -> np.ndarray:
    return real.observations[::40][:40]


def _same(a: Transitions, b: Transitions) -> bool:
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    )


# ------------------------------------------------------------------------------------------ config
def test_paper_preset_holds_the_official_settings() -> None:
    paper = PRESETS["paper"]
    assert (paper.horizon, paper.dim, paper.dim_mults, paper.kernel_size) == (100, 128, (1, 4, 8), 5)
    assert paper.schedule().sigma_data == 0.5 and (paper.batch_size, paper.train_steps) == (8, 375_000)
    sampler = paper.sampler()
    assert (sampler.n_steps, sampler.churn, sampler.s_tmin, sampler.s_tmax, sampler.s_noise) == (
        34,
        60.0,
        0.3699,
        52.24,
        1.002,
    )
    assert sampler.network_evaluations == 67
    gammas = sampler.churn_factors(paper.schedule().sigmas(34))
    assert [i for i, g in enumerate(gammas) if g > 0] == list(range(3, 23))  # sigma in [0.37, 52.24]: i = 3..22
    optim = paper.train_config()
    assert (optim.betas, optim.grad_clip, optim.weight_decay, optim.cosine_decay) == ((0.9, 0.999), None, 0.0, False)
    assert (paper.iterations, paper.average, paper.filter, paper.keep_fraction, paper.temperature) == (
        2,
        True,
        "softmax",
        0.6,
        0.05,
    )
    assert paper.model_config("dynamics").n_members == 7 and paper.model_config("dynamics").n_elites == 5
    # "cpu-v1" stays the offline-RL study's frozen preset; "cpu" differs from it only in the sampler.
    frozen, cpu = PRESETS["cpu-v1"], PRESETS["cpu"]
    assert (frozen.solver, frozen.churn, frozen.sampler().network_evaluations) == ("heun", 60.0, 31)
    assert (cpu.solver, cpu.sampler().network_evaluations) == ("dpmpp_2m_sde", 16)
    assert dataclasses.replace(cpu, solver="heun") == frozen
    assert set(PHASE_PRESETS) == set(PRESETS)  # DyDiffAugmenter(preset=p) takes every DyDiff preset


def test_config_survives_json_and_arguments_override_the_preset() -> None:
    for preset in PRESETS.values():
        assert DyDiffConfig(**json.loads(json.dumps(preset.to_dict()))) == preset
    custom = dataclasses.replace(PRESETS["tiny"], dynamics=PRESETS["paper"].model_config("dynamics"))
    assert DyDiffConfig(**json.loads(json.dumps(custom.to_dict()))) == custom
    gen = DyDiff("cpu", horizon=64, iterations=3, device="cpu", average=False)
    assert (gen.config.horizon, gen.config.iterations, gen.config.average, gen.config.dim) == (64, 3, False, 32)
    assert DyDiff("paper", device="cpu").config.horizon == 100


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: DyDiff("tiny", horizon=9), ValueError, "divisible by 2"),
        (lambda: DyDiff("tiny", iterations=-1), ValueError, "iterations"),
        (lambda: DyDiff("huge"), ValueError, "unknown DyDiff preset"),
        (lambda: DyDiff("tiny", width=3), TypeError, "unknown settings"),
        (lambda: DyDiff("tiny", filter="best"), ValueError, "unknown trajectory filter"),
        (lambda: DyDiff("tiny", keep_fraction=0.0), ValueError, "keep_fraction"),
        (lambda: DyDiff("tiny", dynamics="big"), ValueError, "preset"),
        (lambda: DyDiff("tiny", seed=-1), ValueError, "seed"),
    ],
)
def test_bad_settings_raise_named_errors(make, error, words) -> None:
    with pytest.raises(error, match=words):
        make()


# ----------------------------------------------------------------------------------------- windows
def _episodes(lengths: list[int]) -> Transitions:
    n = sum(lengths)
    rows = np.arange(n, dtype=np.float32)
    ends = np.cumsum(lengths) - 1
    timeouts = np.zeros(n, np.float32)
    timeouts[ends] = 1.0
    return Transitions(
        observations=np.stack([rows, -rows], 1),
        actions=rows[:, None] + 0.5,
        rewards=rows,
        next_observations=np.stack([rows + 1, -rows - 1], 1),
        terminals=np.zeros(n, np.float32),
        timeouts=timeouts,
    )


def test_lazy_windows_equal_the_materialised_ones_with_padding_masked() -> None:
    t = _episodes([7, 3, 5])
    index, dense = WindowIndex.of(t, 5), make_windows(t, 5)
    assert len(index) == len(dense) == 5  # 3 + 1 (padded) + 1
    rows = torch.from_numpy(np.concatenate([t.observations, t.actions], 1))
    windows, valid = index.gather(rows, index.descriptors("cpu")[torch.arange(5)])
    np.testing.assert_array_equal(windows.numpy(), dense.states_actions())
    np.testing.assert_array_equal(valid[..., 0].numpy(), dense.mask)
    assert valid.sum() == 5 * 5 - 2  # the 3-step episode's window has 2 padded steps
    np.testing.assert_array_equal(index.complete(), [0, 1, 2, 10])  # episodes at rows 0-6, 7-9, 10-14
    # A continuity break inside a flagged episode also ends a run: no window spans it.
    next_observations = t.next_observations.copy()
    next_observations[2] += 1.0
    broken = t.replace(next_observations=next_observations)
    assert len(WindowIndex.of(broken, 3)) == 1 + 2 + 1 + 3  # runs of 3, 4, 3 and 5 steps


# ------------------------------------------------------------------------------------ trajectory model
def test_sampled_windows_hold_s0_and_the_actions_exactly(
    fitted: DyDiff, real: Transitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fitted.model.trajectory_model
    gammas = model.sampler.churn_factors(model.schedule.sigmas(model.sampler.n_steps))
    assert sum(g > 0 for g in gammas) >= 2  # the churn noise, which also hits the given entries, is exercised
    s0 = torch.from_numpy(real.observations[:16].copy())
    actions = torch.rand(16, model.horizon, ACT, generator=torch.Generator().manual_seed(0)) * 2 - 1
    values = model.condition(s0, actions).values
    seen = []

    class Recording(EDMDenoiser):
        def forward(self, x, sigma, cond=None):
            seen.append(x.clone())
            return super().forward(x, sigma, cond)

    monkeypatch.setattr("dyaug.dydiff.trajectory_model.EDMDenoiser", Recording)
    x = model.sample(s0, actions, generator=torch.Generator().manual_seed(1))
    assert len(seen) == model.sampler.network_evaluations
    for x_in in [*seen, x]:  # every network input (after churn and after each Euler step) and the output
        assert torch.equal(x_in[:, 0, :OBS], values[:, 0, :OBS])  # bit for bit, in normalised space
        assert torch.equal(x_in[:, :, OBS:], values[:, :, OBS:])
    assert not torch.equal(x[:, 1:, :OBS], values[:, 1:, :OBS])  # the states are generated
    states = model.resample_states(s0, actions, generator=torch.Generator().manual_seed(1))
    assert torch.equal(states[:, 0], s0)
    low, high = real.observations.min(0), real.observations.max(0)
    assert (states.numpy() >= low - 1e-5).all() and (states.numpy() <= high + 1e-5).all()  # clamped to the data


class _ZeroProbe(torch.nn.Module):
    """Records the inputs F sees and outputs zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))
        self.inputs: list[torch.Tensor] = []
        self.levels: list[torch.Tensor] = []

    def forward(self, x, noise_level, cond=None):
        self.inputs.append(x.clone())
        self.levels.append(noise_level.clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("given_input", ["clean", "scaled"])
def test_the_network_reads_the_condition_at_the_configured_scale(
    fitted: DyDiff, real: Transitions, given_input: str
) -> None:
    probe = _ZeroProbe()
    trained = fitted.model.trajectory_model
    config = dataclasses.replace(trained.config, given_input=given_input)
    model = dataclasses.replace(trained, network=probe, config=config)
    s0 = torch.from_numpy(real.observations[:8].copy())
    actions = torch.rand(8, model.horizon, ACT, generator=torch.Generator().manual_seed(0)) * 2 - 1
    values = model.condition(s0, actions).values
    model.sample(s0, actions, generator=torch.Generator().manual_seed(1))
    given = given_mask(model.horizon, OBS, ACT).expand_as(values)
    sigma_data = config.schedule().sigma_data
    assert max(float((4 * c).exp().max()) for c in probe.levels) > 10  # the high-σ steps are exercised
    for x_in, c_noise in zip(probe.inputs, probe.levels, strict=True):
        c_in = config.schedule().preconditioning((4 * c_noise).exp())[2][:, None, None]
        expected = values / sigma_data if given_input == "clean" else c_in * values
        torch.testing.assert_close(x_in[given], expected[given], rtol=1e-6, atol=1e-7)
    # inpainting: a known state beyond s_0 enters like a generated entry (c_in-scaled), s_0 and actions clean
    probe.inputs.clear(), probe.levels.clear()
    windows = model.normalizer.unnormalize(values)
    known = given.clone()
    known[:, 1, :OBS] = True
    model.inpaint_states(windows, known, generator=torch.Generator().manual_seed(2))
    for x_in, c_noise in zip(probe.inputs, probe.levels, strict=True):
        c_in = config.schedule().preconditioning((4 * c_noise).exp())[2][:, None]
        torch.testing.assert_close(x_in[:, 1, :OBS], c_in * values[:, 1, :OBS], rtol=1e-5, atol=1e-6)


def test_training_lowers_the_denoising_loss(fitted: DyDiff, real: Transitions) -> None:
    config = fitted.config
    untrained, _ = fit_trajectory_model(
        real, dataclasses.replace(config, train_steps=1), seed=0, device="cpu", progress=False
    )
    trained = fitted.model.trajectory_model
    index = WindowIndex.of(real, config.horizon)
    rows = trained.normalizer.normalize(torch.from_numpy(np.concatenate([real.observations, real.actions], 1)))
    windows, valid = index.gather(rows, index.descriptors("cpu"))
    given = given_mask(config.horizon, OBS, ACT)

    def loss(network: torch.nn.Module) -> float:
        generator = torch.Generator().manual_seed(0)
        denoiser = EDMDenoiser(network, config.schedule())
        with torch.no_grad():
            return float(edm_loss(denoiser, windows, given=given, loss_mask=valid, generator=generator))

    before, after = loss(untrained.network), loss(trained.network)
    assert after < 0.8 * before, (before, after)
    assert len(fitted.training_losses) >= 1 and all(math.isfinite(v) for v in fitted.training_losses)


# ---------------------------------------------------------------------------------- engine on fakes
class _AddAction:
    """s' = s + a (the action broadcast over the state)."""

    def step(self, obs, act, *, generator=None):
        return obs + act


class _Ramp:
    """Resampled states s_t = s_0 + 10 t."""

    def resample_states(self, s0, actions, *, generator=None):
        steps = torch.arange(actions.shape[1], dtype=torch.float32)
        return s0[:, None, :] + 10.0 * steps[None, :, None]


def _fake_engine(threshold: float = math.inf) -> RolloutEngine:
    return RolloutEngine(
        dynamics=_AddAction(),
        reward=lambda obs, act: obs[:, 0] + act[:, 0],
        termination=lambda obs, act, next_obs: next_obs[:, 0] > threshold,
        resampler=_Ramp(),
        horizon=5,
        obs_dim=2,
        act_dim=1,
    )


def _half(states: torch.Tensor) -> torch.Tensor:
    return states[:, :1] * 0.5


@pytest.mark.parametrize("average", [True, False])
def test_engine_resamples_relabels_and_averages_as_stated(average: bool) -> None:
    s0 = torch.tensor([[1.0, 2.0], [-4.0, 0.0]])
    initial = _fake_engine().run(_half, s0, iterations=0, average=average)
    expected = [s0]
    for _ in range(4):  # s' = s + s[0]/2
        expected.append(expected[-1] + expected[-1][:, :1] * 0.5)
    assert torch.equal(initial.states, torch.stack(expected, 1))
    once = _fake_engine().run(_half, s0, iterations=1, average=average)
    ramp = _Ramp().resample_states(s0, initial.actions)
    want = (ramp + initial.states) / 2 if average else ramp
    assert torch.equal(once.states[:, 1:], want[:, 1:]) and torch.equal(once.states[:, 0], s0)
    assert torch.equal(once.actions, _half(once.states.reshape(-1, 2)).reshape(2, 5, 1))
    assert torch.equal(once.rewards, once.states[..., 0] + once.actions[..., 0])


def test_model_labels_give_each_row_the_dynamics_next_state() -> None:
    """``labels="models"``: s'_t = f(s_t, a_t) (here s + a) on the resampled states, judged by the termination
    rule and the support; ``"trajectory"``: s'_t = s_{t+1}. Ramp states s_t = (1 + 10 t, 10 t), a_t = s_t[0] / 2."""
    s0 = torch.tensor([[1.0, 0.0]])
    support = DataSupport(np.array([-100.0, -100.0]), np.array([45.0, 100.0]), -1e9, 1e9, -1e9, 1e9, margin=0.0)
    runs = {}
    for labels in ("trajectory", "models"):
        engine = dataclasses.replace(_fake_engine(), labels=labels, support=support)
        runs[labels] = engine.run(_half, s0, iterations=1, average=False)
    trajectory, models = runs["trajectory"], runs["models"]
    assert torch.equal(trajectory.states, models.states) and torch.equal(trajectory.actions, models.actions)
    expected = models.states[:, :-1] + models.actions[:, :-1]
    assert torch.equal(models.next_states, expected) and trajectory.next_states is None
    assert expected[0, :, 0].tolist() == [1.5, 16.5, 31.5, 46.5]  # s'_3 leaves the support (45), s_4 = 41 does not
    rows = models.to_transitions()
    np.testing.assert_array_equal(rows.next_observations, expected[0, :3].numpy())  # row 3 cut; timeout at 2
    np.testing.assert_array_equal(rows.timeouts, [0, 0, 1])
    np.testing.assert_array_equal(trajectory.to_transitions().next_observations, trajectory.states[0, 1:].numpy())
    ends = dataclasses.replace(_fake_engine(threshold=2.0), labels="models").run(_half, s0, iterations=1, average=False)
    assert ends.dones[0].tolist() == [False, True, True, True]  # judged on s'_t: 1.5, then 16.5 > 2
    assert runs["trajectory"].dones.sum() == 0 and _fake_engine(threshold=2.0).run(
        _half, s0, iterations=1, average=False
    ).dones[0].tolist() == [True, True, True, True]  # judged on s_{t+1} = 11, ...
    with pytest.raises(ValueError, match="labels must be one of"):
        DyDiff("tiny", device="cpu", labels="ensemble")


def test_each_trajectory_ends_at_its_first_terminal() -> None:
    states = torch.arange(3 * 5 * 2, dtype=torch.float32).reshape(3, 5, 2)
    actions = -states[..., :1]
    rewards = torch.arange(15, dtype=torch.float32).reshape(3, 5)
    dones = torch.tensor([[False, True, False, True], [False, False, False, False], [True, True, True, True]])
    trajectories = Trajectories(states, actions, rewards, dones)
    np.testing.assert_array_equal(trajectories.last_steps().numpy(), [1, 4, 0])
    np.testing.assert_array_equal(trajectories.returns().numpy(), [0 + 1, 5 + 6 + 7 + 8 + 9, 10])
    out = trajectories.to_transitions()
    assert len(out) == 2 + 4 + 1
    np.testing.assert_array_equal(out.terminals, [0, 1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(out.timeouts, [0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(out.observations, torch.cat([states[0, :2], states[1, :4], states[2, :1]]).numpy())
    np.testing.assert_array_equal(out.next_observations, torch.cat([states[0, 1:3], states[1, 1:], states[2, 1:2]]))
    np.testing.assert_array_equal(out.rewards, [0, 1, 5, 6, 7, 8, 10])
    assert [s.stop - s.start for s in out.episode_slices()] == [2, 4, 1]
    # The engine truncates too: with s' = s + s[0]/2 from s0[0] = 1, s_1[0] = 1.5, s_2[0] = 2.25 > 2.
    engine_out = _fake_engine(threshold=2.0).run(_half, torch.tensor([[1.0, 0.0]]), iterations=0, average=True)
    assert engine_out.last_steps().item() == 1 and len(engine_out.to_transitions()) == 2


# --------------------------------------------------------------------------------------------- filters
def test_hardmax_keeps_exactly_the_top_fraction() -> None:
    returns = torch.randperm(50, generator=torch.Generator().manual_seed(0)).double()
    kept = Hardmax(0.6)(returns)
    assert len(kept) == 30 == kept_count(50, 0.6)
    assert set(kept.tolist()) == set(torch.argsort(returns, descending=True)[:30].tolist())
    assert torch.equal(kept, kept.sort().values)
    assert len(Hardmax(0.6)(torch.zeros(1))) == 1 and len(KeepAll()(returns)) == 50


def test_softmax_keeps_the_fraction_and_tends_to_hardmax() -> None:
    returns = torch.randn(50, generator=torch.Generator().manual_seed(1)).double()
    generator = torch.Generator().manual_seed(2)
    kept = Softmax(0.6, temperature=0.05)(returns, generator)
    assert len(kept) == 30 and len(set(kept.tolist())) == 30 and torch.equal(kept, kept.sort().values)
    assert torch.equal(Softmax(0.6, temperature=1e-6)(returns, generator), Hardmax(0.6)(returns))
    assert not torch.equal(Softmax(0.6, temperature=10.0)(returns, generator), Hardmax(0.6)(returns))


def test_softmax_draws_with_probabilities_proportional_to_exp_z_over_t() -> None:
    returns = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    one = Softmax(keep_fraction=0.25, temperature=1.0)  # keeps 1 of 4: a single draw
    generator = torch.Generator().manual_seed(3)
    draws = torch.cat([one(returns, generator) for _ in range(4000)])
    frequencies = torch.bincount(draws, minlength=4).double() / 4000
    z = (returns - returns.mean()) / (returns.std(correction=0) + 1e-6)
    assert torch.allclose(frequencies, torch.softmax(z, 0), atol=0.025), frequencies


# --------------------------------------------------------------------------------------------- rollout
def test_rollout_is_policy_consistent_and_starts_at_the_given_states(fitted: DyDiff, starts: np.ndarray) -> None:
    out = fitted.rollout(policy, starts, seed=0)
    stats = fitted.last_rollout_stats
    assert out.observations.dtype == np.float32 and len(out) == stats.transitions > 0
    assert np.array_equal(policy(torch.from_numpy(out.observations.copy())).numpy(), out.actions)  # exactly
    assert (stats.trajectories, stats.kept, stats.filtered) == (40, 24, 16) and stats.returns.shape == (40,)
    episodes = out.episode_slices()
    assert len(episodes) == stats.kept == len(out.episode_slices(contiguous=True))  # one run per trajectory
    assert all(s.stop - s.start <= fitted.config.horizon - 1 for s in episodes)
    first_rows = out.observations[[s.start for s in episodes]]
    assert np.array_equal(first_rows, starts[stats.kept_indices])  # s_0 kept bit for bit
    assert out.terminals.sum() == stats.terminated and out.terminals.sum() + out.timeouts.sum() == stats.kept
    everything = fitted.rollout(policy, starts, seed=0, filter="none")
    assert fitted.last_rollout_stats.kept == 40 and len(everything) >= len(out)


def test_known_task_uses_its_termination_rule(fitted: DyDiff) -> None:
    assert isinstance(fitted.model.termination, LocomotionTermination)
    assert fitted.model.termination.env_id == "Hopper-v5"


def test_same_seed_same_rollout_and_save_load_round_trip(fitted: DyDiff, starts: np.ndarray, tmp_path: Path) -> None:
    a = fitted.rollout(policy, starts, seed=7)
    assert _same(a, fitted.rollout(policy, starts, seed=7))
    assert not _same(a, fitted.rollout(policy, starts, seed=8))
    path = fitted.save(tmp_path / "dydiff")
    fitted.save(path)  # replacing a checkpoint works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dydiff"]
    loaded = DyDiff.load(path, device="cpu")
    assert loaded.config == fitted.config and loaded.training_losses == fitted.training_losses
    assert _same(a, loaded.rollout(policy, starts, seed=7))
    again = DyDiff.load(path, device="cpu")
    assert _same(loaded.rollout(policy, starts), again.rollout(policy, starts))  # the unseeded sequence too
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="not a DyDiff checkpoint"):
        fitted.save(tmp_path / "other")
    with pytest.raises(ValueError, match="not a DyDiff checkpoint"):
        DyDiff.load(tmp_path / "other")
    # sampling settings may change on load, training settings may not
    fewer = DyDiff.load(path, device="cpu", sampler_steps=3, iterations=1)
    assert (fewer.config.sampler_steps, fewer.config.iterations) == (3, 1)
    assert fewer.config == dataclasses.replace(fitted.config, sampler_steps=3, iterations=1)
    assert not _same(a, fewer.rollout(policy, starts, seed=7))
    with pytest.raises(ValueError, match=r"only change sampling settings .* got \['horizon'\]"):
        DyDiff.load(path, device="cpu", horizon=16)
    sde = DyDiff.load(path, device="cpu", solver="dpmpp_2m_sde", sampler_steps=3)  # one evaluation per step
    assert type(sde.config.sampler()).__name__ == "DPMSolverSDESampler"
    b = sde.rollout(policy, starts, seed=7)
    assert len(b) > 0 and np.isfinite(b.next_observations).all() and not _same(a, b)
    assert _same(
        b, DyDiff.load(path, device="cpu", solver="dpmpp_2m_sde", sampler_steps=3).rollout(policy, starts, seed=7)
    )
    # labels are a sampling setting: the trajectory's own s_{t+1} chains the rows, the ensemble's s' does not
    for labels, chained in (("trajectory", True), ("models", False)):
        rows = DyDiff.load(path, device="cpu", labels=labels).rollout(policy, starts, seed=7, filter="none")
        inner = np.concatenate([np.arange(e.start, e.stop - 1) for e in rows.episode_slices()])
        assert len(inner) > 100
        same = np.all(rows.next_observations[inner] == rows.observations[inner + 1], axis=1)
        assert same.all() if chained else not same.any()


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("bad_policy", "bad_starts", "error", "words"),
    [
        (lambda s: s[:, :2], None, ValueError, r"policy must return a tensor of shape \(\d+, 3\)"),
        (lambda s: policy(s).numpy(), None, TypeError, "policy must return a floating-point torch tensor"),
        (lambda s: policy(s) * float("nan"), None, ValueError, "policy returned NaN"),
        (policy, np.zeros((4, 10), np.float32), ValueError, r"start_states must have shape \(B, 11\)"),
        (policy, np.full((4, 11), np.nan, np.float32), ValueError, "NaN"),
        (policy, "states", TypeError, "start_states"),
        ("policy", None, TypeError, "callable"),
    ],
)
def test_bad_rollout_inputs_raise_named_errors(fitted: DyDiff, starts, bad_policy, bad_starts, error, words) -> None:
    with pytest.raises(error, match=words):
        fitted.rollout(bad_policy, starts if bad_starts is None else bad_starts, seed=0)


def test_unfitted_or_unterminated_data_raise_named_errors() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        DyDiff("tiny", device="cpu").rollout(policy, np.zeros((2, OBS), np.float32))
    with pytest.raises(ValueError, match="never_terminates"):
        DyDiff("tiny", device="cpu").fit(_episodes([6, 6]), progress=False)


def test_filter_objects_are_used_and_checked(fitted: DyDiff, starts: np.ndarray) -> None:
    fitted.rollout(policy, starts, seed=0, filter=Hardmax(0.25))
    stats = fitted.last_rollout_stats
    assert stats.kept == 10 and set(stats.kept_indices) == set(np.argsort(stats.returns)[-10:])
    with pytest.raises(ValueError, match="int64"):
        fitted.rollout(policy, starts, seed=0, filter=lambda returns, generator=None: returns > 0)


# ------------------------------------------------------------------------------- residual (offset) windows
def test_offset_windows_cover_every_window_and_rebuild_the_states(real: Transitions) -> None:
    horizon = 8
    index = WindowIndex.of(real, horizon)
    rows = np.concatenate([real.observations, real.actions], axis=1)
    normalizer = MinMaxNormalizer.fit(rows)
    offsets = offset_normalizer(real.observations, index, chunk=7)  # many chunks, the last one short
    windows, _ = index.gather(torch.as_tensor(rows), index.descriptors("cpu"))
    x = encode_windows(windows, normalizer, offsets, OBS)
    moved = windows[:, 1:, :OBS] - windows[:, :1, :OBS]
    torch.testing.assert_close(x[:, 1:, :OBS], offsets.normalize(moved))
    torch.testing.assert_close(x[:, 0], normalizer.normalize(windows[:, 0]))  # s_0 and the actions as before
    torch.testing.assert_close(x[..., OBS:], normalizer.normalize(windows)[..., OBS:])
    assert x.abs().max() <= 1.0 + 1e-6 and x[:, 1:, :OBS].abs().max() >= 1.0 - 1e-6  # the range is each extreme
    model = TrajectoryModel(torch.nn.Identity(), normalizer, OBS, ACT, PRESETS["tiny"], offsets=offsets)
    s0 = windows[:, 0, :OBS]
    states = model.states_of(x, s0)
    assert torch.equal(states[:, 0], s0)
    torch.testing.assert_close(states, windows[..., :OBS], rtol=0, atol=1e-5 * float(np.abs(rows).max()))


def test_a_fit_with_a_checkpoint_resumes_its_trajectory_model_only_on_the_same_data(
    fitted: DyDiff,
    hopper: minari.MinariDataset,
    real: Transitions,
    starts: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "trajectory.safetensors"
    first = DyDiff("tiny", device="cpu", seed=0).fit(hopper, progress=False, checkpoint=path, checkpoint_every=50)
    assert first.training_losses == fitted.training_losses
    assert _same(first.rollout(policy, starts, seed=7), fitted.rollout(policy, starts, seed=7))

    # the finished checkpoint is resumed at its last step: the trajectory model trains no further step (the loss is
    # never computed), with other sampling and one-step-model settings too, and ends with the same weights
    def no_step(*args: object, **kwargs: object) -> None:
        raise AssertionError("a training step ran")

    with monkeypatch.context() as patch:
        patch.setattr("dyaug.dydiff.trajectory_model.edm_loss", no_step)
        again = DyDiff("tiny", device="cpu", seed=0, sampler_steps=4, iterations=1).fit(
            hopper, progress=False, checkpoint=path
        )
    weights = [gen.model.trajectory_model.network.state_dict() for gen in (again, first)]
    assert all(torch.equal(weights[0][name], value) for name, value in weights[1].items())
    with pytest.raises(ValueError, match=r"\(data: checkpoint '[0-9a-f]{64}', this run '[0-9a-f]{64}'\)"):
        DyDiff("tiny", device="cpu", seed=0).fit(real.replace(rewards=real.rewards * 2), checkpoint=path)
    with pytest.raises(ValueError, match=r"seed: checkpoint 0, this run 1"):
        DyDiff("tiny", device="cpu", seed=1).fit(hopper, checkpoint=path)


def test_residual_fit_samples_offsets_from_s0_and_round_trips(
    hopper: minari.MinariDataset, real: Transitions, starts: np.ndarray, tmp_path: Path
) -> None:
    generator = DyDiff("tiny", device="cpu", seed=0, residual=True).fit(hopper, progress=False)
    model = generator.model.trajectory_model
    assert model.offsets is not None and model.offsets.dim == OBS
    s0 = torch.from_numpy(real.observations[:16].copy())
    actions = torch.rand(16, model.horizon, ACT, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = model.sample(s0, actions, generator=torch.Generator().manual_seed(1))
    states = model.resample_states(s0, actions, generator=torch.Generator().manual_seed(1))
    assert torch.equal(states[:, 0], s0)
    offset = model.offsets.unnormalize(x[:, 1:, :OBS].clamp(-1.0, 1.0))
    low, high = real.observations.min(0), real.observations.max(0)
    margin = 1e-4 * (high - low)
    inside = torch.from_numpy((states[:, 1:].numpy() > low + margin) & (states[:, 1:].numpy() < high - margin))
    assert inside.float().mean() > 0.5  # most entries are not clamped to the data's range, and there s_0 + offset:
    torch.testing.assert_close((states[:, 1:] - s0[:, None])[inside], offset[inside], rtol=0, atol=1e-4)
    assert (states.numpy() >= low - 1e-5).all() and (states.numpy() <= high + 1e-5).all()
    a = generator.rollout(policy, starts, seed=7)
    loaded = DyDiff.load(generator.save(tmp_path / "dydiff"), device="cpu")
    assert loaded.config.residual and _same(a, loaded.rollout(policy, starts, seed=7))
    windows = torch.cat([states, actions], dim=-1)
    known = given_mask(model.horizon, OBS, ACT).expand_as(windows).clone()
    known[:, 0, 0] = False
    with pytest.raises(ValueError, match=r"offsets from s_0 .* mark s_0 known"):
        model.inpaint_states(windows, known)
