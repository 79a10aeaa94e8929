from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from dyaug.integrations.sb3.convert import transitions_from_sb3
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from dyaug.data import Transitions


class _Recorder(gym.Wrapper):
    """Records every step in environment units, exactly as the environment saw it."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps: list[tuple] = []

    def reset(self, **kwargs):
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps.append((self._obs, np.array(action), reward, obs, terminated, truncated))
        self._obs = obs
        return obs, reward, terminated, truncated, info


def _expected(recorders: list[_Recorder], keep: int) -> Transitions:
    """The newest ``keep`` recorded steps of each env, envs one after another, ending in a timeout."""
    parts = []
    for recorder in recorders:
        obs, act, rew, next_obs, term, trunc = (np.array(c) for c in zip(*recorder.steps[-keep:], strict=True))
        timeouts = trunc & ~term
        timeouts[-1] |= not (term[-1] or trunc[-1])
        parts.append(Transitions(obs, act, rew, next_obs, term, timeouts))
    return Transitions.concatenate(parts)


def _assert_same(a: Transitions, b: Transitions) -> None:
    for name, value in b.as_dict().items():
        assert (value is None and getattr(a, name) is None) or np.array_equal(getattr(a, name), value), name


def _recorded_envs(env_id: str, n_envs: int, max_episode_steps: int) -> tuple[DummyVecEnv, list[_Recorder]]:
    recorders = [_Recorder(gym.make(env_id, max_episode_steps=max_episode_steps)) for _ in range(n_envs)]
    return DummyVecEnv([lambda r=r: r for r in recorders]), recorders


def _tiny() -> dict:
    """Small, fast settings (a fresh dict: SB3 writes into policy_kwargs)."""
    return {
        "learning_starts": 40,
        "batch_size": 16,
        "policy_kwargs": {"net_arch": [16]},
        "device": "cpu",
        "seed": 0,
    }


def test_sac_pendulum_buffer_matches_the_env_steps_with_actions_in_env_units():
    venv, recorders = _recorded_envs("Pendulum-v1", n_envs=1, max_episode_steps=50)
    model = SAC("MlpPolicy", venv, buffer_size=1000, **_tiny())
    model.learn(120)
    t = transitions_from_sb3(model.replay_buffer)
    _assert_same(t, _expected(recorders, keep=120))
    assert t.timeouts.sum() == 3 and t.timeouts[-1] == 1.0 and t.terminals.sum() == 0  # steps 50, 100, end
    assert np.abs(t.actions).max() > 1.0  # env units (bounds ±2), not SB3's [-1, 1]
    assert np.abs(model.replay_buffer.actions).max() <= 1.0


def test_td3_hopper_two_envs_with_wrap_around():
    venv, recorders = _recorded_envs("Hopper-v5", n_envs=2, max_episode_steps=20)
    model = TD3("MlpPolicy", venv, buffer_size=80, **_tiny())  # 40 rows per env
    model.learn(140)  # 70 steps per env: the ring wrapped
    assert model.replay_buffer.full
    t = transitions_from_sb3(model.replay_buffer)
    _assert_same(t, _expected(recorders, keep=40))
    inner_timeouts = np.delete(t.timeouts, [39, 79])  # leave out the two "data stops here" flags
    assert len(t) == 80 and t.terminals.sum() > 0 and inner_timeouts.sum() > 0


def test_memory_optimized_buffer_uses_the_next_row_and_zeroes_lost_next_observations():
    venv, recorders = _recorded_envs("Hopper-v5", n_envs=1, max_episode_steps=15)
    model = SAC(
        "MlpPolicy", venv, buffer_size=25, optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False}, **_tiny(),
    )  # fmt: skip
    model.learn(60)
    assert model.replay_buffer.full
    with pytest.warns(UserWarning, match="done transitions of this SB3 buffer have no stored s'") as record:
        t = transitions_from_sb3(model.replay_buffer)
    assert len(record) == 1
    # the oldest row was overwritten by s' of the newest one: 24 usable rows
    expected = _expected(recorders, keep=24)
    assert len(t) == 24
    dones = ((expected.terminals + expected.timeouts) > 0)[:-1]
    lost = np.r_[dones, False]  # the newest row keeps its s'
    assert lost.any()
    for name in ("observations", "actions", "rewards"):
        np.testing.assert_array_equal(getattr(t, name), getattr(expected, name))
    np.testing.assert_array_equal(t.next_observations[~lost], expected.next_observations[~lost])
    np.testing.assert_array_equal(t.next_observations[lost], 0.0)
    # without timeout handling every done is a terminal; only the data's end is a timeout
    np.testing.assert_array_equal(t.terminals, np.r_[dones, False])
    np.testing.assert_array_equal(t.timeouts, np.r_[np.zeros(23), 1.0])


def test_unsupported_buffers_raise():
    space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
    dict_buffer = DictReplayBuffer(10, space, gym.spaces.Box(-1, 1, (1,)), device="cpu")
    with pytest.raises(ValueError, match=r"DictReplayBuffer .* is not supported"):
        transitions_from_sb3(dict_buffer)
    discrete = ReplayBuffer(10, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(3), device="cpu")
    with pytest.raises(ValueError, match=r"unsupported action space Discrete\(3\)"):
        transitions_from_sb3(discrete)
    with pytest.raises(ValueError, match="replay buffer is empty"):
        transitions_from_sb3(ReplayBuffer(10, gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (1,)), device="cpu"))
    with pytest.raises(TypeError, match="needs an SB3 ReplayBuffer"):
        transitions_from_sb3({"observations": np.zeros(3)})
