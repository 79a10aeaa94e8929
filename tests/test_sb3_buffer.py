from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from dyaug.integrations.sb3 import SynthERCallback, SyntheticReplayBuffer, scale_sb3_actions, unscale_sb3_actions
from stable_baselines3 import SAC
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from dyaug.data import Transitions

tiny_tensors = True
SENTINEL = 1000.0  # synthetic observations live far from the real ones, so rows can be told apart
PENDULUM = gym.make("Pendulum-v1")  # obs (3,) in [-8, 8], action (1,) in [-2, 2]


def _buffer(real_ratio: float = 0.5, n_real: int = 40, n_envs: int = 1, seed: int = 0) -> SyntheticReplayBuffer:
    """A buffer holding ``n_real`` random real steps per env (|obs| < 1, stored actions in [-1, 1])."""
    buffer = SyntheticReplayBuffer(
        100, PENDULUM.observation_space, PENDULUM.action_space, device="cpu", n_envs=n_envs, real_ratio=real_ratio
    )
    rng = np.random.default_rng(seed)
    for _ in range(n_real):
        obs, next_obs = rng.uniform(-1, 1, size=(2, n_envs, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, size=(n_envs, 1)).astype(np.float32)
        buffer.add(obs, next_obs, action, rng.normal(size=n_envs), np.zeros(n_envs), [{}] * n_envs)
    return buffer


def _synthetic(n: int = 20, seed: int = 1) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions(
        observations=SENTINEL + np.arange(n)[:, None] + rng.uniform(0, 0.5, size=(n, 3)),  # row i: obs[0] ~ 1000 + i
        actions=rng.uniform(-2, 2, size=(n, 1)),
        rewards=rng.normal(size=n),
        next_observations=SENTINEL + rng.uniform(size=(n, 3)),
        terminals=(np.arange(n) % 3 == 0).astype(np.float32),
        timeouts=(np.arange(n) % 3 == 1).astype(np.float32),
    )


def _sac(env, **kwargs) -> SAC:
    return SAC(
        "MlpPolicy",
        env,
        learning_starts=50,
        batch_size=32,
        buffer_size=1_000,
        policy_kwargs={"net_arch": [16]},
        replay_buffer_class=SyntheticReplayBuffer,
        device="cpu",
        seed=0,
        **kwargs,
    )


@pytest.mark.parametrize("real_ratio", [0.0, 0.25, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batch_composition_is_exact(real_ratio, batch_size):
    buffer = _buffer(real_ratio)
    buffer.set_synthetic(_synthetic(n=64))
    batch = buffer.sample(batch_size)
    n_real = int(np.floor(real_ratio * batch_size + 0.5))
    synthetic_rows = (batch.observations[:, 0] > SENTINEL / 2).tolist()
    assert synthetic_rows == [False] * n_real + [True] * (batch_size - n_real)  # real rows first
    assert batch.discounts is None
    for field in ("observations", "actions", "next_observations", "dones", "rewards"):
        value = getattr(batch, field)
        assert value.dtype == th.float32 and value.shape[0] == batch_size and value.ndim == 2, field


def test_batches_are_real_until_there_is_a_synthetic_row_then_keep_the_share():
    """The rule of every dyaug buffer (dyaug.integrations.mixing.batch_split)."""
    buffer = _buffer(real_ratio=0.5)
    assert not (buffer.sample(16).observations[:, 0] > SENTINEL / 2).any()  # nothing installed
    buffer.set_synthetic(_synthetic(n=7))  # fewer than the 8 synthetic rows of a batch of 16: drawn with replacement
    assert (buffer.sample(16).observations[:, 0] > SENTINEL / 2).sum() == 8
    assert (buffer.sample(14).observations[:, 0] > SENTINEL / 2).sum() == 7
    buffer.clear_synthetic()
    assert buffer.synthetic_size == 0 and not (buffer.sample(16).observations[:, 0] > SENTINEL / 2).any()


def test_synthetic_rows_follow_sb3_units():
    synthetic = _synthetic(n=6)
    buffer = _buffer(real_ratio=0.0)
    buffer.set_synthetic(synthetic)
    batches = [buffer.sample(6) for _ in range(50)]  # a batch needs at most 6 synthetic rows
    batch = ReplayBufferSamples(*(th.cat(fields) for fields in zip(*(b[:5] for b in batches), strict=True)))
    rows = np.floor(batch.observations[:, 0].numpy() - SENTINEL).astype(int)
    assert set(rows.tolist()) == set(range(6))
    low, high = PENDULUM.action_space.low, PENDULUM.action_space.high
    expected_actions = (synthetic.actions - low) / (high - low) * 2 - 1  # [-2, 2] -> [-1, 1]
    np.testing.assert_allclose(batch.actions.numpy(), expected_actions[rows], rtol=1e-6)
    np.testing.assert_array_equal(batch.observations.numpy(), synthetic.observations[rows])  # raw
    np.testing.assert_array_equal(batch.next_observations.numpy(), synthetic.next_observations[rows])
    np.testing.assert_array_equal(batch.rewards.numpy()[:, 0], synthetic.rewards[rows])
    np.testing.assert_array_equal(batch.dones.numpy()[:, 0], synthetic.terminals[rows])  # timeouts bootstrap


def test_scaling_round_trips_with_the_converter():
    actions = np.array([[-2.0], [-0.5], [0.0], [1.25], [2.0]], np.float32)
    scaled = scale_sb3_actions(actions, PENDULUM.action_space)
    np.testing.assert_array_equal(scaled[:, 0], [-1.0, -0.25, 0.0, 0.625, 1.0])
    np.testing.assert_allclose(unscale_sb3_actions(scaled, PENDULUM.action_space), actions, atol=1e-6)
    buffer = _buffer(real_ratio=0.0)
    real = buffer.real_transitions()  # env units
    assert len(real) == 40 and np.abs(real.actions).max() > 1.0
    buffer.set_synthetic(real)
    batch = buffer.sample(200)
    stored = buffer.actions[:40, 0]
    matches = np.abs(batch.actions.numpy() - stored[None, :, 0]).min(axis=1)
    assert matches.max() < 1e-6  # synthetic actions in SB3 units are the stored actions again


def test_vec_normalize_applies_to_synthetic_observations_and_rewards():
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=1e4, clip_reward=1e4)
    env.obs_rms.mean, env.obs_rms.var = np.array([1.0, -2.0, 3.0]), np.array([4.0, 9.0, 16.0])
    env.ret_rms.var = np.array(25.0)
    buffer = _buffer(real_ratio=0.5)
    buffer.set_synthetic(_synthetic(n=60))
    th.manual_seed(0)
    np.random.seed(0)
    normalized = buffer.sample(40, env=env)
    th.manual_seed(0)
    np.random.seed(0)
    plain = buffer.sample(40)  # raw: without env nothing is normalized
    assert (plain.observations[:, 0] > SENTINEL / 2).tolist() == [False] * 20 + [True] * 20
    expected_observations = env.normalize_obs(plain.observations.numpy())
    np.testing.assert_allclose(normalized.observations.numpy(), expected_observations, rtol=1e-6)
    np.testing.assert_allclose(normalized.observations[20:, 0].numpy(), (plain.observations[20:, 0] - 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(normalized.next_observations.numpy(), env.normalize_obs(plain.next_observations.numpy()))
    np.testing.assert_allclose(normalized.rewards.numpy(), plain.rewards.numpy() / np.sqrt(25.0 + 1e-8), rtol=1e-6)
    np.testing.assert_array_equal(normalized.actions.numpy(), plain.actions.numpy())


def test_same_seed_gives_the_same_batches():
    buffer = _buffer(real_ratio=0.5)
    buffer.set_synthetic(_synthetic(n=50))
    batches = []
    for seed in (3, 3, 4):
        th.manual_seed(seed)
        np.random.seed(seed)
        batches.append(th.cat(list(buffer.sample(32)[:5]), dim=1))
    assert th.equal(batches[0], batches[1]) and not th.equal(batches[0], batches[2])


def test_bad_synthetic_data_and_settings_raise_named_errors():
    buffer = _buffer()
    with pytest.raises(
        ValueError, match=r"observation size 4 and action size 1, but the buffer's real data have 3 and 1;"
    ):
        buffer.set_synthetic(
            Transitions(np.zeros((2, 4)), np.zeros((2, 1)), np.zeros(2), np.zeros((2, 4)), np.zeros(2), np.zeros(2))
        )
    outside = _synthetic(n=4).replace(actions=np.array([[0.0], [2.5], [-3.0], [1.0]]))
    with pytest.raises(ValueError, match=r"2 synthetic actions lie outside the action space"):
        buffer.set_synthetic(outside)
    with pytest.raises(TypeError, match="must be a dyaug Transitions"):
        buffer.set_synthetic({"observations": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="hold no rows"):
        buffer.set_synthetic(_synthetic()[:0])
    with pytest.raises(ValueError, match="real_ratio must lie in"):
        buffer.real_ratio = 2.0
    with pytest.raises(ValueError, match="flat Box observation space"):
        SyntheticReplayBuffer(10, gym.spaces.Dict({"x": PENDULUM.observation_space}), PENDULUM.action_space)
    with pytest.raises(ValueError, match="unbounded"):
        SyntheticReplayBuffer(10, PENDULUM.observation_space, gym.spaces.Box(-np.inf, np.inf, (1,)))
    with pytest.raises(ValueError, match="retrain_every must be an integer >= 1"):
        SynthERCallback(retrain_every=0)


def test_callback_needs_the_synthetic_buffer():
    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=10, policy_kwargs={"net_arch": [8]}, device="cpu")
    with pytest.raises(TypeError, match=r"replay_buffer_class=dyaug\.integrations\.sb3\.SyntheticReplayBuffer"):
        model.learn(5, callback=SynthERCallback(retrain_every=10, n_samples=10, preset="tiny"))


def test_sac_with_online_synther_refits_at_the_expected_steps(monkeypatch):
    model = _sac(gym.make("Pendulum-v1"))
    installed = []  # (num_timesteps, real transitions then, synthetic set)
    set_synthetic = SyntheticReplayBuffer.set_synthetic

    def spy(buffer: SyntheticReplayBuffer, transitions: Transitions) -> None:
        installed.append((model.num_timesteps, buffer.size(), transitions))
        set_synthetic(buffer, transitions)

    monkeypatch.setattr(SyntheticReplayBuffer, "set_synthetic", spy)
    callback = SynthERCallback(retrain_every=100, n_samples=256, preset="tiny", real_ratio=0.25, seed=3)
    model.learn(250, callback=callback)
    buffer = model.replay_buffer
    assert [(step, size) for step, size, _ in installed] == [(100, 100), (200, 200)]  # fitted on every real step
    assert callback.retrained_at == [100, 200] and buffer.real_ratio == 0.25
    assert buffer.synthetic_size == 256 and model.logger.name_to_value["synther/refits"] == 2
    assert model.logger.name_to_value["synther/synthetic_size"] == 256
    assert not np.array_equal(installed[0][2].observations, installed[1][2].observations)  # a fresh set
    batch = buffer.sample(32)
    synthetic_obs = th.tensor(installed[-1][2].observations)
    is_synthetic = (batch.observations[:, None, :] == synthetic_obs[None]).all(dim=2).any(dim=1)
    assert is_synthetic.tolist() == [False] * 8 + [True] * 24  # 8 real rows, then 24 synthetic rows
    assert batch.actions.abs().max() <= 1.0


def test_sac_with_vec_normalize_and_two_envs_runs():
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2))
    model = _sac(env, train_freq=2)
    callback = SynthERCallback(retrain_every=60, n_samples=128, preset="tiny")
    model.learn(130, callback=callback)
    assert callback.retrained_at == [60, 120] and model.replay_buffer.synthetic_size == 128
    batch = model.replay_buffer.sample(32, env=env)
    assert th.isfinite(batch.observations).all() and batch.observations.shape == (32, 3)
