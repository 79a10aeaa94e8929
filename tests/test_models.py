"""``dyaug.models``: the dynamics ensemble, the reward model and the termination functions."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dyaug.data import Transitions
from dyaug.models import (
    DynamicsEnsemble,
    EnsembleConfig,
    LocomotionTermination,
    RewardConfig,
    RewardModel,
    TerminalClassifier,
    TerminalConfig,
    TerminationFn,
    never_terminates,
    termination_for,
    termination_rule,
)
from dyaug.models.fitting import Seeds, holdout_data

tiny_tensors = True
OBS, ACT, NOISE = 3, 2, 0.01
_RNG = np.random.default_rng(123)
A_MATRIX = _RNG.normal(0.0, 0.1, (OBS, OBS))
B_MATRIX = _RNG.normal(0.0, 0.3, (ACT, OBS))


def linear_data(n: int, seed: int) -> Transitions:
    """s' = s + A s + B a + ε, ε ~ N(0, NOISE²); r = s₀ − ½‖a‖²; terminal iff s'₀ > 1.5 (about 7%)."""
    rng = np.random.default_rng(seed)
    s, a = rng.normal(0.0, 1.0, (n, OBS)), rng.uniform(-1.0, 1.0, (n, ACT))
    s2 = s + s @ A_MATRIX + a @ B_MATRIX + NOISE * rng.normal(size=(n, OBS))
    rewards = s[:, 0] - 0.5 * (a**2).sum(axis=1)
    return Transitions(s, a, rewards, s2, (s2[:, 0] > 1.5).astype(np.float32), np.zeros(n))


@pytest.fixture(scope="module")
def data() -> Transitions:
    return linear_data(1500, seed=0)


@pytest.fixture(scope="module")
def fresh() -> Transitions:
    return linear_data(1000, seed=1)


@pytest.fixture(scope="module")
def ensemble(data: Transitions) -> DynamicsEnsemble:
    return DynamicsEnsemble.fit(data, "tiny", seed=0, device="cpu")


@pytest.fixture(scope="module")
def reward(data: Transitions) -> RewardModel:
    return RewardModel.fit(data, "tiny", seed=0, device="cpu")


@pytest.fixture(scope="module")
def classifier() -> TerminalClassifier:
    return TerminalClassifier.fit(linear_data(3000, seed=2), "tiny", seed=0, device="cpu")


# ------------------------------------------------------------------------------------------------ config
def test_paper_presets_hold_dydiffs_settings() -> None:
    paper = EnsembleConfig.from_preset("paper")
    assert (paper.n_members, paper.n_elites, paper.width, paper.depth) == (7, 5, 200, 4)
    assert paper.layer_weight_decay() == (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    assert (paper.lr, paper.batch_size, paper.holdout_fraction, paper.max_holdout) == (1e-4, 256, 0.2, 5000)
    assert (paper.patience, paper.logvar_bounds, paper.max_epochs, paper.max_steps) == (7, (-10.0, 0.5), None, None)
    assert paper == EnsembleConfig()
    rew = RewardConfig.from_preset("paper")
    assert (rew.width, rew.depth, rew.lr, rew.batch_size, rew.layer_weight_decay()) == (256, 2, 1e-4, 256, (0.0,) * 3)
    assert EnsembleConfig.from_preset("cpu", n_elites=3).n_elites == 3
    assert dataclasses.replace(RewardConfig.from_preset("tiny"), width=8).width == 8
    assert EnsembleConfig(**paper.to_dict()) == paper  # JSON round trip (lists back to tuples)


def test_bad_configs_raise() -> None:
    with pytest.raises(ValueError, match="unknown EnsembleConfig preset 'huge'"):
        EnsembleConfig.from_preset("huge")
    with pytest.raises(TypeError, match=r"no fields \['members'\]"):
        EnsembleConfig.from_preset("cpu", members=3)
    with pytest.raises(ValueError, match="n_elites"):
        EnsembleConfig(n_members=3, n_elites=4)
    with pytest.raises(ValueError, match="5 linear layers"):
        EnsembleConfig(weight_decay=(1e-4, 1e-4))
    with pytest.raises(ValueError, match="holdout_fraction"):
        RewardConfig(holdout_fraction=0.0)
    with pytest.raises(TypeError, match="preset name"):
        DynamicsEnsemble.fit(linear_data(10, 0), RewardConfig())


# ------------------------------------------------------------------------------------------------ ensemble
def test_ensemble_learns_linear_dynamics(ensemble: DynamicsEnsemble, fresh: Transitions) -> None:
    assert (ensemble.obs_dim, ensemble.act_dim, ensemble.device) == (OBS, ACT, torch.device("cpu"))
    # Normalised Δs have unit variance; the noise floor is NOISE² / Var(Δs) ≈ 0.002.
    assert ensemble.holdout_mse.shape == (3,) and ensemble.holdout_mse.max() < 0.005
    obs, act, target = fresh.observations, fresh.actions, torch.tensor(fresh.next_observations)
    mean, logvar = ensemble.predict(obs, act)
    assert mean.shape == logvar.shape == (3, len(fresh), OBS) and mean.dtype == torch.float32
    delta_std = np.std(fresh.next_observations - fresh.observations, axis=0)
    for predicted in (ensemble.step(obs, act), ensemble.mean_step(obs, act)):
        rmse = (predicted - target).square().mean(dim=0).sqrt().numpy()
        assert (rmse < 1.5 * NOISE).all(), (rmse, delta_std)  # Δs itself varies 15-45x more
    # The predicted standard deviation of s' is the noise level.
    sigma = torch.exp(0.5 * logvar).median().item()
    assert 0.5 * NOISE < sigma < 2 * NOISE


def test_log_variance_stays_within_the_bounds(ensemble: DynamicsEnsemble, fresh: Transitions) -> None:
    net = ensemble.network
    shift = ensemble._target_logvar_shift
    low, high = net.min_logvar + shift, net.max_logvar + shift  # (members, 1, obs_dim), raw units
    assert (net.min_logvar > -10.5).all() and (net.max_logvar < 1.0).all()  # learned, from (-10, 0.5)
    overshoot = torch.log1p(torch.exp(low - high))  # the soft clamp's upper limit is hi + log(1 + e^(lo − hi))
    assert overshoot.max() < 1e-4
    for scale in (1.0, 1e3):  # far outside the data the raw head saturates; the soft clamp still holds
        _, logvar = ensemble.predict(fresh.observations * scale, fresh.actions * scale)
        assert (logvar >= low).all() and (logvar <= high + overshoot + 1e-6).all()
    _, logvar = ensemble.predict(fresh.observations * 1e3, fresh.actions * 1e3)
    assert torch.isclose(logvar, low, atol=1e-3).any() or torch.isclose(logvar, high, atol=1e-3).any()


def test_elites_are_the_members_of_lowest_holdout_mse(ensemble: DynamicsEnsemble, data: Transitions) -> None:
    assert ensemble.elites == tuple(int(i) for i in np.argsort(ensemble.holdout_mse)[:2])
    others = [m for m in range(3) if m not in ensemble.elites]
    assert ensemble.holdout_mse[list(ensemble.elites)].max() <= ensemble.holdout_mse[others].min()
    # The kept weights are each member's best epoch: recompute the hold-out MSE from the final network.
    config = EnsembleConfig.from_preset("tiny")
    inputs = np.concatenate([data.observations, data.actions], axis=1)
    deltas = data.next_observations.astype(np.float64) - data.observations
    rows = holdout_data(inputs, deltas, config, Seeds.of(0).split, torch.device("cpu"), normalize_targets=True)
    mean, _ = ensemble.network(rows.holdout_x.expand(3, *rows.holdout_x.shape))
    recomputed = (mean - rows.holdout_y).square().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(recomputed, ensemble.holdout_mse, rtol=1e-5)
    record = ensemble.fit_record
    assert ensemble.holdout_mse.mean() <= min(record.holdout_curve) + 1e-12
    assert record.stopped_by in ("patience", "max_epochs", "max_steps") and record.n_holdout == 300


def test_step_draws_one_elite_per_row(ensemble: DynamicsEnsemble, fresh: Transitions) -> None:
    obs, act = fresh.observations, fresh.actions
    mean, _ = ensemble.predict(obs, act)
    next_obs = ensemble.step(obs, act, generator=torch.Generator().manual_seed(0))
    matches = (next_obs[None] == mean).all(dim=2)  # (members, B): which member each row came from
    assert (matches.sum(dim=0) == 1).all()
    used = matches.any(dim=1).nonzero().flatten().tolist()
    assert sorted(used) == sorted(ensemble.elites)
    share = matches[ensemble.elites[0]].float().mean().item()
    assert 0.45 < share < 0.55  # uniform over the two elites
    again = ensemble.step(obs, act, generator=torch.Generator().manual_seed(0))
    assert torch.equal(next_obs, again)
    assert torch.equal(ensemble.mean_step(obs, act), mean[list(ensemble.elites)].mean(dim=0))


def test_same_seed_gives_identical_weights() -> None:
    small = linear_data(400, seed=3)
    config = EnsembleConfig.from_preset("tiny", max_epochs=3)
    a, b, c = (DynamicsEnsemble.fit(small, config, seed=s, device="cpu") for s in (0, 0, 1))
    state_a, state_b, state_c = (m.network.state_dict() for m in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not torch.equal(state_a["mlp.layers.0.weight"], state_c["mlp.layers.0.weight"])
    assert np.array_equal(a.holdout_mse, b.holdout_mse)


def test_checkpoints_round_trip_and_refuse_other_kinds(
    ensemble: DynamicsEnsemble, reward: RewardModel, classifier: TerminalClassifier, fresh: Transitions, tmp_path: Path
) -> None:
    obs, act, next_obs = fresh.observations, fresh.actions, fresh.next_observations
    loaded = DynamicsEnsemble.load(ensemble.save(tmp_path / "ens.safetensors"), device="cpu")
    for x, y in zip(ensemble.predict(obs, act), loaded.predict(obs, act), strict=True):
        assert torch.equal(x, y)
    assert loaded.elites == ensemble.elites and np.array_equal(loaded.holdout_mse, ensemble.holdout_mse)
    assert loaded.config == ensemble.config and loaded.fit_record == ensemble.fit_record
    draw = [m.step(obs, act, generator=torch.Generator().manual_seed(5)) for m in (ensemble, loaded)]
    assert torch.equal(*draw)
    rew = RewardModel.load(reward.save(tmp_path / "rew.safetensors"))
    assert torch.equal(rew(obs, act), reward(obs, act)) and rew.config == reward.config
    clf = TerminalClassifier.load(classifier.save(tmp_path / "clf.safetensors"))
    assert torch.equal(clf.logits(obs, act, next_obs), classifier.logits(obs, act, next_obs))
    with pytest.raises(ValueError, match="holds a 'dynamics_ensemble' checkpoint but a 'reward_model'"):
        RewardModel.load(tmp_path / "ens.safetensors")
    with pytest.raises(ValueError, match="'terminal_classifier' checkpoint was expected"):
        TerminalClassifier.load(tmp_path / "rew.safetensors")
    with pytest.raises(ValueError, match="'dynamics_ensemble' checkpoint was expected"):
        DynamicsEnsemble.load(tmp_path / "clf.safetensors")


# -------------------------------------------------------------------------------------------------- reward
def test_reward_model_fits_a_known_reward(reward: RewardModel, fresh: Transitions) -> None:
    assert reward.holdout_mse < 0.01  # of a unit-variance target
    r = reward(fresh.observations, fresh.actions)
    assert r.shape == (len(fresh),) and r.dtype == torch.float32
    rmse = (r.numpy() - fresh.rewards).std()
    assert rmse < 0.1 * fresh.rewards.std(), (rmse, fresh.rewards.std())


# --------------------------------------------------------------------------------------------- termination
@functools.cache
def random_policy_steps(env_id: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(obs, act, next_obs, terminated)`` of ``n`` env.step calls under uniform random actions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, terminated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return tuple(np.asarray(column) for column in zip(*rows, strict=True))


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5"])
def test_termination_rule_matches_gymnasium(env_id: str) -> None:
    obs, act, next_obs, terminated = random_policy_steps(env_id, 1000)
    assert terminated.sum() >= 20, "the rollout must include terminal steps"
    rule = termination_rule(env_id)
    assert isinstance(rule, LocomotionTermination) and isinstance(rule, TerminationFn)
    done = rule(torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(next_obs))
    assert done.dtype == torch.bool and done.shape == (1000,)
    assert np.array_equal(done.numpy(), terminated)
    done32 = rule(obs.astype(np.float32), act, next_obs.astype(np.float32))  # float32 rows, numpy input
    assert np.array_equal(done32.numpy(), terminated)


def test_halfcheetah_never_terminates_and_non_finite_states_always_do() -> None:
    obs, act, next_obs, terminated = random_policy_steps("HalfCheetah-v5", 200)
    rule = termination_rule("HalfCheetah-v5")
    assert not terminated.any() and not rule(obs, act, next_obs).any()
    broken = next_obs.copy()
    broken[3, 5], broken[7, 0] = np.nan, np.inf
    assert rule(obs, act, broken).nonzero().flatten().tolist() == [3, 7]
    assert never_terminates(obs, act, broken).nonzero().flatten().tolist() == [3, 7]
    hop_obs, hop_act, hop_next, hop_terminated = random_policy_steps("Hopper-v5", 1000)
    healthy = np.flatnonzero(~hop_terminated)[:2]
    hop_broken = hop_next[healthy].copy()
    hop_broken[0, 4] = np.nan
    assert termination_rule("Hopper-v5")(hop_obs[healthy], hop_act[healthy], hop_broken).tolist() == [True, False]
    assert termination_rule("Hopper-v4") is None and termination_rule("CartPole-v1") is None


def test_terminal_classifier_learns_a_rare_termination(classifier: TerminalClassifier) -> None:
    test = linear_data(4000, seed=4)
    obs, act, next_obs = test.observations, test.actions, test.next_observations
    terminal = test.terminals > 0
    assert 0.03 < terminal.mean() < 0.12  # rare
    assert classifier.pos_weight > 7
    done = classifier(obs, act, next_obs).numpy()
    balanced_accuracy = 0.5 * (done[terminal].mean() + (~done[~terminal]).mean())
    assert balanced_accuracy > 0.95, balanced_accuracy
    broken = next_obs[:4].copy()
    broken[2, 1] = np.nan
    assert classifier(obs[:4], act[:4], broken)[2].item() is True
    assert isinstance(classifier, TerminationFn)


def test_termination_for_prefers_the_rule_and_learns_otherwise(data: Transitions) -> None:
    assert isinstance(termination_for("Walker2d-v5", data), LocomotionTermination)
    with pytest.raises(ValueError, match="no known termination rule for env_id='Pendulum-v1'"):
        termination_for("Pendulum-v1")
    learned = termination_for(None, data, config=TerminalConfig.from_preset("tiny", max_epochs=2), device="cpu")
    assert isinstance(learned, TerminalClassifier) and learned.fit_record.epochs == 2
    no_terminals = data.replace(terminals=np.zeros(len(data)))
    with pytest.raises(ValueError, match="never_terminates"):
        TerminalClassifier.fit(no_terminals, "tiny")


# -------------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors(ensemble: DynamicsEnsemble, reward: RewardModel, data: Transitions) -> None:
    empty = data[np.zeros(len(data), dtype=bool)]
    with pytest.raises(ValueError, match="no transitions"):
        DynamicsEnsemble.fit(empty, "tiny")
    with pytest.raises(ValueError, match="at least 3"):
        RewardModel.fit(data[:2], "tiny")
    with pytest.raises(TypeError, match="cannot read RL data"):
        DynamicsEnsemble.fit(np.zeros((10, 5)), "tiny")
    with pytest.raises(ValueError, match="NaN or Inf"):  # NaN/Inf data cannot reach fit: Transitions refuses it
        DynamicsEnsemble.fit(data.replace(rewards=np.full(len(data), np.nan)), "tiny")
    with pytest.raises(ValueError, match="seed"):
        DynamicsEnsemble.fit(data, "tiny", seed=-1)
    obs, act = data.observations[:4], data.actions[:4]
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 3\), got \(4, 4\)"):
        ensemble.predict(np.zeros((4, 4)), act)
    with pytest.raises(ValueError, match=r"act must have shape \(B, 2\), got \(4,\)"):
        ensemble.step(obs, np.zeros(4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        ensemble.mean_step(obs, data.actions[:3])
    with pytest.raises(ValueError, match=r"RewardModel: obs must have shape \(B, 3\)"):
        reward(np.zeros((4, 11)), act)
    with pytest.raises(ValueError, match=r"Hopper-v5: next_obs must have shape \(B, 11\)"):
        termination_rule("Hopper-v5")(obs, act, np.zeros((4, 3)))
    assert np.isfinite(data.observations).all()  # the data was not modified
