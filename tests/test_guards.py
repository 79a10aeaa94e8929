"""Guards against synthetic data that would poison a learner silently, on a dataset built to trigger them: a
never-terminating task whose observation holds a constant column and two nearly constant goal coordinates."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dyaug import DyDiff, Transitions
from dyaug.dydiff.rollout import Trajectories
from dyaug.models import DynamicsEnsemble, never_terminates
from dyaug.models.support import DataSupport

tiny_tensors = True
GOAL = np.array([0.45, -0.05])


def goal_task(n_episodes: int = 40, length: int = 50, seed: int = 0) -> Transitions:
    """s = [x (2), goal (2, std 1e-4), 1.0 (constant)]; x' = x + 0.1 a; r = −|x − goal|; never terminates."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_episodes):
        goal = GOAL + rng.normal(0, 1e-4, 2)
        x = rng.uniform(-0.5, 0.5, 2)
        for t in range(length):
            a = rng.uniform(-1, 1, 2)
            nxt = x + 0.1 * a
            s, s2 = np.r_[x, goal, 1.0], np.r_[nxt, goal, 1.0]
            rows.append((s, a, -np.abs(nxt - goal).sum(), s2, 0.0, float(t == length - 1)))
            x = nxt
    o, a, r, o2, d, tout = (np.array(c, dtype=np.float32) for c in zip(*rows, strict=True))
    return Transitions(o, a, r, o2, d, tout)


class DriftingDynamics:
    """A bad single-step model: moves the goal coordinates by 1e-2 per step (100 of their standard deviations)."""

    def step(self, obs: torch.Tensor, act: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        nxt = obs.clone()
        nxt[:, :2] = obs[:, :2] + 0.1 * act
        nxt[:, 2:4] = obs[:, 2:4] + 1e-2
        return nxt


class ExplodingReward:
    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return -1e4 * (obs[:, 2:4] - torch.tensor(GOAL, dtype=obs.dtype)).abs().sum(1) - 1.0


def policy(states: torch.Tensor) -> torch.Tensor:
    return torch.tanh(states[:, 2:4] - states[:, :2])


@pytest.fixture(scope="module")
def fitted() -> DyDiff:
    data = goal_task()
    return DyDiff("tiny", device="cpu", seed=0).fit(
        data, dynamics=DriftingDynamics(), reward=ExplodingReward(), termination=never_terminates, progress=False
    )


def test_rollouts_leaving_the_support_are_cut_and_rewards_clipped(fitted: DyDiff) -> None:
    data = goal_task()
    starts = data.observations[:64]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synthetic = fitted.rollout(policy, starts, seed=0, filter="none")
        fitted.rollout(policy, starts, seed=1, filter="none")
    stats = fitted.last_rollout_stats
    assert stats.truncated == stats.trajectories  # the drift leaves the goal's range within a step or two
    support = fitted.model.support
    low, high = support.reward_bounds
    assert support.reward_low == pytest.approx(data.rewards.min()) and high == pytest.approx(
        data.rewards.max() + 0.1 * (data.rewards.max() - data.rewards.min())
    )
    if len(synthetic):  # nothing kept outside the support, no reward outside its bounds
        inside = support.inside(torch.as_tensor(np.array(synthetic.next_observations)))
        assert inside.all()
        assert synthetic.rewards.min() >= low - 1e-6 and synthetic.timeouts[-1] == 1.0
    assert stats.clipped_rewards > 0
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("left the data's support" in m for m in messages) == 1  # warned once, not per rollout
    assert not any("far outside the data's" in m for m in messages)  # clipped rewards keep the returns in range


def test_returns_far_outside_the_data_warn_once(fitted: DyDiff) -> None:
    import dataclasses

    support = fitted.model.support
    far = support.return_low - 5 * (support.return_high - support.return_low)
    stats = dataclasses.replace(fitted.last_rollout_stats, returns=np.full(8, far), truncated=0)
    fitted._warned.discard("returns")
    with pytest.warns(RuntimeWarning, match="far outside the data's"):
        fitted._warn_off_support(stats)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted._warn_off_support(stats)  # once per generator


def test_without_the_margin_the_same_rollout_keeps_everything(fitted: DyDiff) -> None:
    import copy
    import dataclasses

    loose = copy.copy(fitted)
    loose.config = dataclasses.replace(fitted.config, support_margin=None)
    loose.rollout(policy, goal_task().observations[:16], seed=0, filter="none")
    assert loose.last_rollout_stats.truncated == 0 and loose.last_rollout_stats.clipped_rewards == 0


def test_support_is_saved_and_its_margin_is_a_sampling_setting(tmp_path) -> None:
    generator = DyDiff("tiny", device="cpu", seed=0).fit(goal_task(10), termination=never_terminates, progress=False)
    path = generator.save(tmp_path / "g")
    again = DyDiff.load(path, device="cpu")
    assert again.model.support.state() == generator.model.support.state()
    assert DyDiff.load(path, device="cpu", support_margin=0.5)._support().margin == 0.5
    assert DyDiff.load(path, device="cpu", support_margin=None)._support() is None


def test_constant_columns_are_held_by_the_trajectory_model_and_the_ensemble(fitted: DyDiff) -> None:
    data = goal_task()
    s0 = torch.as_tensor(np.array(data.observations[:32]))
    actions = torch.zeros(32, fitted.config.horizon, 2)
    states = fitted.model.trajectory_model.resample_states(s0, actions, generator=torch.Generator().manual_seed(0))
    assert (states[:, :, 4] == 1.0).all()
    ensemble = DynamicsEnsemble.fit(data, "tiny", seed=0, device="cpu")
    nxt = ensemble.step(s0, torch.zeros(32, 2))
    assert (nxt[:, 4] == 1.0).all()
    # and the near-constant goal columns are not blown up as inputs: their scale has the floor
    assert ensemble.input_normalizer.scale[2] >= 0.01 * 0.45


def test_trajectories_cut_where_a_state_leaves_the_support() -> None:
    """B = 3, H = 5: one never leaves, one leaves at t = 3, one terminates at t = 1 and leaves at t = 4."""
    states = torch.zeros(3, 5, 1)
    inside = torch.ones(3, 5, dtype=torch.bool)
    inside[1, 3:] = False
    inside[2, 4] = False
    dones = torch.zeros(3, 4, dtype=torch.bool)
    dones[2, 1] = True
    rewards = torch.ones(3, 5)
    traj = Trajectories(states, torch.zeros(3, 5, 1), rewards, dones, inside)
    assert traj.last_steps().tolist() == [4, 2, 1] and traj.truncated().tolist() == [False, True, False]
    assert traj.returns().tolist() == [5.0, 3.0, 2.0]
    t = traj.to_transitions()
    # rows: 4 (t = 0..3, timeout at 3), 2 (t = 0, 1: s_2 is the last state inside; timeout at 1), 2 (terminal at 1)
    assert len(t) == 8
    assert t.timeouts.tolist() == [0, 0, 0, 1, 0, 1, 0, 0] and t.terminals.tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_support_bounds_follow_the_data() -> None:
    data = goal_task()
    support = DataSupport.fit(data, horizon=10)
    states = torch.as_tensor(np.array(data.observations))
    assert support.inside(states).all()
    moved = states.clone()
    moved[:, 2] += 1e-3  # ten standard deviations of a goal coordinate, beyond 10% of its range
    assert not support.inside(moved).any()
    assert support.return_low <= -0.0 and support.return_high <= 0.0
    assert not support.returns_far_outside(np.array([support.return_low, support.return_high]))
    assert support.returns_far_outside(np.array([support.return_low - 3 * (support.return_high - support.return_low)]))
