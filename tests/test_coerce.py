"""``to_transitions`` / ``action_bounds``: every accepted container, exact conversions, named errors."""

from __future__ import annotations

import types

import d3rlpy
import gymnasium as gym
import numpy as np
import pytest
from d3rlpy.dataset import MDPDataset
from stable_baselines3.common.buffers import ReplayBuffer

from dyaug.data import Transitions
from dyaug.data.coerce import ActionBounds, action_bounds, to_transitions


def _random_walk(n: int = 40, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    states = np.cumsum(rng.normal(size=(n + 1, obs_dim)), axis=0)
    ends = np.zeros(n)
    ends[[9, 24, n - 1]] = 1.0
    return Transitions(states[:-1], rng.uniform(-2, 3, (n, act_dim)), rng.normal(size=n), states[1:], ends, 0 * ends)


def _sb3_buffer(steps: int, action_space: gym.Space | None = None) -> tuple[ReplayBuffer, gym.Env]:
    """An SB3 buffer filled by ``steps`` random Pendulum steps (its action space is [-2, 2])."""
    env = gym.make("Pendulum-v1", max_episode_steps=15)
    space = action_space or env.action_space
    buffer = ReplayBuffer(64, env.observation_space, space, handle_timeout_termination=True)
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        scaled = 2.0 * (action - env.action_space.low) / (env.action_space.high - env.action_space.low) - 1.0
        buffer.add(obs[None], next_obs[None], scaled[None], np.array([reward]), np.array([terminated or truncated]),
                   [{"TimeLimit.truncated": truncated and not terminated}])  # fmt: skip
        obs = env.reset()[0] if terminated or truncated else next_obs
    return buffer, env


def test_transitions_pass_through_unchanged() -> None:
    t = _random_walk()
    assert to_transitions(t) is t


@pytest.mark.filterwarnings("ignore::UserWarning:minari")
def test_each_library_container_converts_exactly_like_its_converter() -> None:
    t = _random_walk()
    from_d3rlpy = to_transitions(t.to_d3rlpy())
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert np.array_equal(getattr(from_d3rlpy, name), getattr(t, name)), name

    ds = t.to_minari("test/coerce-walk-v0")
    assert np.array_equal(to_transitions(ds).observations, Transitions.from_minari(ds).observations)

    buffer, _ = _sb3_buffer(30)
    from_sb3, direct = to_transitions(buffer), Transitions.from_sb3(buffer)
    assert len(from_sb3) == 30
    assert np.array_equal(from_sb3.actions, direct.actions) and np.array_equal(from_sb3.timeouts, direct.timeouts)


def test_unsupported_containers_raise_type_error_naming_the_accepted_ones() -> None:
    for bad in (np.zeros((4, 5)), {"observations": np.zeros((4, 3))}, [1, 2, 3]):
        with pytest.raises(TypeError, match="Minari dataset, a d3rlpy ReplayBuffer/MDPDataset or a Stable-Baselines3"):
            to_transitions(bad)


def test_empty_data_raises() -> None:
    empty = _random_walk()[:0]
    with pytest.raises(ValueError, match="holds no transitions"):
        to_transitions(empty)


def test_discrete_spaces_are_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    discrete = MDPDataset(
        observations=rng.normal(size=(20, 3)).astype(np.float32),
        actions=rng.integers(0, 4, size=(20, 1)),
        rewards=rng.normal(size=20).astype(np.float32),
        terminals=np.eye(20)[-1].astype(np.float32),
        action_space=d3rlpy.ActionSpace.DISCRETE,
    )
    with pytest.raises(ValueError, match="discrete action space"):
        to_transitions(discrete)
    buffer, _ = _sb3_buffer(0, action_space=gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="unsupported action space Discrete"):
        to_transitions(buffer)


def test_action_bounds_come_from_the_space_where_finite_else_from_the_data() -> None:
    t = _random_walk()
    low, high = t.actions.min(0), t.actions.max(0)
    from_data = action_bounds(t, t)
    assert from_data.source == "data range"
    assert np.array_equal(from_data.low, low) and np.array_equal(from_data.high, high)

    buffer, _ = _sb3_buffer(20)
    from_space = action_bounds(buffer, to_transitions(buffer))
    assert from_space.source == "action space"
    assert np.array_equal(from_space.low, [-2.0]) and np.array_equal(from_space.high, [2.0])

    half_open = types.SimpleNamespace(action_space=gym.spaces.Box(np.float32([-1, -np.inf]), np.float32([1, np.inf])))
    mixed = action_bounds(half_open, t)
    assert mixed.source == "action space and data range"
    assert np.array_equal(mixed.low, [-1.0, low[1]]) and np.array_equal(mixed.high, [1.0, high[1]])


def test_action_bounds_refuse_inverted_or_infinite_values() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        ActionBounds(np.array([1.0]), np.array([0.0]), "given")
    with pytest.raises(ValueError, match="finite"):
        ActionBounds(np.array([-np.inf]), np.array([0.0]), "given")
