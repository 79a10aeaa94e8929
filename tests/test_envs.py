"""``dyaug.envs``: Gymnasium's checker, shapes and dtypes, seeds, terminated/truncated and autoreset semantics on
exact fake models, the diffusion window, MOPO's penalty, checkpoints without the simulator, and bad inputs."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import dyaug.datasets
from dyaug import DyDiff
from dyaug.data import Transitions
from dyaug.envs import (
    ActionContinuations,
    LearnedDynamicsVectorEnv,
    LearnedDynamicsWrapper,
    LearnedEnvConfig,
    LearnedModels,
    SimulatorStub,
    uncertainty,
)
from dyaug.models import EnsembleConfig, RewardConfig, never_terminates

tiny_tensors = True
ENV_ID = "Hopper-v5"


@pytest.fixture(scope="module")
def data() -> Transitions:
    return Transitions.from_minari(dyaug.datasets.forge("hopper", "random", budget="tiny", progress=False))


@pytest.fixture(scope="module")
def models(data: Transitions) -> LearnedModels:
    """DyDiff's tiny models, briefly trained: the tests check the environment's plumbing, not the models."""
    gen = DyDiff(
        "tiny",
        device="cpu",
        seed=0,
        train_steps=30,
        dynamics=EnsembleConfig.from_preset("tiny", max_steps=100),
        reward=RewardConfig.from_preset("tiny", max_steps=100),
    ).fit(data, env_id=ENV_ID, progress=False)
    return LearnedModels.from_dydiff(gen, ENV_ID, start_states=data.observations[:300], data=data)


def _quiet_check(env: gym.Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite observation bounds, checking a wrapper
        check_env(env, skip_render_check=True)  # the real environment's render check needs a display


# --------------------------------------------------------------------------------------- exact fakes
class Shift:
    """s' = s + (a, 2a); states its sizes and device like dyaug's models."""

    obs_dim, act_dim, device = 2, 1, torch.device("cpu")

    def step(self, obs, act, *, generator=None):
        return obs + torch.cat([act, 2 * act], dim=1)


def fake_reward(obs, act):
    return obs[:, 0] + act[:, 0]


def ends_above(limit: float):
    return lambda obs, act, next_obs: next_obs[:, 0] > limit


class Identity:
    @staticmethod
    def normalize(x):
        return x


class RecordingWindows:
    """A trajectory model that records every window it is asked to inpaint and predicts s_{t+1} = s_t + 1."""

    horizon, obs_dim, act_dim = 4, 2, 1
    network = torch.nn.Linear(1, 1)
    normalizer = Identity()

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def inpaint_states(self, windows, known, *, generator=None):
        self.calls.append((windows.clone(), known.clone()))
        states = windows[..., :2].clone()
        for b, k in enumerate(known[:, :, 0].sum(dim=1).tolist()):
            states[b, k] = states[b, k - 1] + 1.0
        return states


def fake_models(termination=None, **fields) -> LearnedModels:
    return LearnedModels(
        dynamics=Shift(),
        reward=fake_reward,
        termination=termination or ends_above(2.5),
        observation_space=spaces.Box(-np.inf, np.inf, (2,), np.float32),
        action_space=spaces.Box(-1.0, 1.0, (1,), np.float32),
        start_states=np.zeros((1, 2), np.float32),
        **fields,
    )


def test_terminated_and_truncated_follow_the_models_and_the_episode_length() -> None:
    env = LearnedDynamicsWrapper(SimulatorStub(fake_models()), fake_models(), max_episode_steps=3)
    assert env.config.reset_from == "dataset"
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs, [0.0, 0.0]) and obs.dtype == np.float32 and info == {}
    steps = [env.step(np.array([1.0], np.float32)) for _ in range(3)]
    assert [s[0].tolist() for s in steps] == [[1, 2], [2, 4], [3, 6]]
    assert [s[1] for s in steps] == [1.0, 2.0, 3.0]  # r(s_t, a_t): of the state before the step
    assert [(s[2], s[3]) for s in steps] == [(False, False), (False, False), (True, True)]  # both at step 3
    assert all(type(s[1]) is float and type(s[2]) is bool and type(s[3]) is bool for s in steps)
    env = LearnedDynamicsWrapper(SimulatorStub(fake_models()), fake_models(max_episode_steps=2))
    env.reset(options={"state": [-5.0, 0.0]})  # an explicit start; the models' episode length applies
    assert [env.step([0.5])[2:4] for _ in range(2)] == [(False, False), (False, True)]


def test_vector_env_autoresets_on_the_next_step() -> None:
    envs = LearnedDynamicsVectorEnv(fake_models(), 2, max_episode_steps=5)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 2) and obs.dtype == np.float32
    actions = np.array([[1.0], [0.5]], np.float32)
    out = [envs.step(actions) for _ in range(5)]
    np.testing.assert_array_equal(out[2][0], [[3, 6], [1.5, 3]])
    np.testing.assert_array_equal(out[2][2], [True, False])  # episode 0 terminates at step 3
    np.testing.assert_array_equal(out[3][0], [[0, 0], [2, 4]])  # ... and restarts at step 4
    np.testing.assert_array_equal(out[3][1], [0.0, 2.0])  # reward 0 for the restart, r(s, a) for the other
    assert not out[3][2].any() and not out[3][3].any()
    np.testing.assert_array_equal(out[4][0], [[1, 2], [2.5, 5]])
    np.testing.assert_array_equal(out[4][3], [False, True])  # episode 1 reaches 5 steps; episode 0 is at 1
    assert out[4][1].dtype == np.float64 and out[4][2].dtype == bool
    obs, _ = envs.reset(options={"states": [[1.0, 1.0], [2.0, 2.0]]})
    np.testing.assert_array_equal(obs, [[1, 1], [2, 2]])


def test_diffusion_mode_inpaints_a_sliding_window_of_the_episode() -> None:
    recorder = RecordingWindows()
    actions = [0.1 * (t + 1) for t in range(6)]
    # the step (s_t, a_t) = ((t, t), a_t) of the episode below is followed, in these "data", by -(t + 1) - 0.01 i
    keys = torch.tensor([[t, t, actions[t]] for t in range(6)])
    following = torch.tensor([[[-(t + 1) - 0.01 * i] for i in range(1, 4)] for t in range(6)])
    continuations = ActionContinuations(keys, following)
    models = fake_models(termination=never_terminates, trajectory_model=recorder, continuations=continuations)
    env = LearnedDynamicsWrapper(SimulatorStub(models), models, mode="diffusion")
    env.reset(seed=0)
    states = [[0.0, 0.0]] + [env.step([a])[0].tolist() for a in actions]
    assert states == [[t, t] for t in range(7)]  # s_{t+1} is what the model put in row k
    for t, (windows, known) in enumerate(recorder.calls):
        k = min(t + 1, recorder.horizon - 1)  # known states in the window
        first = t + 1 - k
        expected_states = torch.tensor(states[first : t + 1], dtype=torch.float32)
        guessed = following[t, : recorder.horizon - k, 0].tolist()  # the continuation of the nearest key
        expected_actions = torch.tensor(actions[first : t + 1] + guessed)
        assert torch.equal(windows[0, :k, :2], expected_states), t
        assert torch.allclose(windows[0, :, 2], expected_actions), t
        assert known[0, :, 2].all() and torch.equal(known[0, :, 0], torch.arange(4) < k), t


def test_action_continuations_return_what_followed_the_nearest_real_step(
    data: Transitions, models: LearnedModels
) -> None:
    model = models.trajectory_model
    continuations = ActionContinuations.from_data(data, model, max_steps=10**6)
    horizon = model.horizon
    episode = next(s for s in data.episode_slices(contiguous=True) if s.stop - s.start >= horizon + 2)
    steps = np.array([episode.start, episode.start + 1])
    rows = np.concatenate([data.observations[steps], data.actions[steps]], axis=1)
    guessed = continuations(model.normalizer.normalize(torch.as_tensor(rows)))
    assert guessed.shape == (2, horizon - 1, 3) and continuations.length == horizon - 1
    for row, step in enumerate(steps):
        assert torch.equal(guessed[row], torch.tensor(data.actions[step + 1 : step + horizon]))
    end = np.eye(5, dtype=np.float32)[4]
    short = Transitions(
        *(x[:5] for x in (data.observations, data.actions, data.rewards, data.next_observations)),
        terminals=end,
        timeouts=0 * end,
    )
    with pytest.raises(ValueError, match="no episode of the data has 8 steps"):
        ActionContinuations.from_data(short, model)
    narrow = dataclasses.replace(
        data, observations=data.observations[:, :5], next_observations=data.observations[:, :5]
    )
    with pytest.raises(ValueError, match="pass the data the model was fitted on"):
        ActionContinuations.from_data(narrow, model)
    with pytest.raises(ValueError, match="needs continuations of 7 actions"):
        dataclasses.replace(models, continuations=ActionContinuations(continuations.keys, continuations.actions[:, :3]))


# ------------------------------------------------------------------------------------ fitted models
@pytest.mark.parametrize("mode", ["ensemble", "diffusion"])
def test_gymnasium_checker_passes_around_the_real_env(models: LearnedModels, mode: str) -> None:
    env = LearnedDynamicsWrapper(gym.make(ENV_ID), models, mode)
    _quiet_check(env)
    assert env.config.reset_from == "env" and env.config.max_episode_steps == 1000 and env.spec.id == ENV_ID
    env.reset(seed=0)
    next_obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert next_obs.shape == (11,) and next_obs.dtype == env.observation_space.dtype == np.float64
    assert type(reward) is float and np.isfinite(reward) and type(terminated) is bool and not truncated and info == {}


def test_same_seed_same_episode(models: LearnedModels) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (12, 3)).astype(np.float32)

    def episode(mode: str, seed: int) -> np.ndarray:
        env = LearnedDynamicsWrapper(gym.make(ENV_ID), models, mode, reset_from="dataset")
        rows = [env.reset(seed=seed)[0]]
        rows += [np.append(*env.step(a)[:2]) for a in actions]
        return np.concatenate(rows)

    for mode in ("ensemble", "diffusion"):
        assert np.array_equal(episode(mode, 3), episode(mode, 3))
        assert not np.array_equal(episode(mode, 3), episode(mode, 4))
    envs = LearnedDynamicsVectorEnv(models, 8, "diffusion")
    first = [envs.reset(seed=1)[0]] + [envs.step(np.tile(a, (8, 1)))[0] for a in actions[:3]]
    again = [envs.reset(seed=1)[0]] + [envs.step(np.tile(a, (8, 1)))[0] for a in actions[:3]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_vector_env_starts_from_the_real_reset_with_derived_seeds(models: LearnedModels) -> None:
    envs = LearnedDynamicsVectorEnv(models, 4, env=gym.make(ENV_ID))
    assert (envs.config.reset_from, envs.config.max_episode_steps) == ("env", 1000)
    first, _ = envs.reset(seed=5)
    assert np.abs(first[:, 0] - 1.25).max() <= 0.005 and len(np.unique(first[:, 0])) == 4  # Hopper's reset noise
    assert np.array_equal(envs.reset(seed=5)[0], first) and not np.array_equal(envs.reset(seed=6)[0], first)
    envs.close()


def test_mopo_penalty_subtracts_the_largest_elite_deviation(models: LearnedModels) -> None:
    def first_step(penalty: float) -> tuple[np.ndarray, float]:
        env = LearnedDynamicsWrapper(gym.make(ENV_ID), models, penalty=penalty)
        obs, _ = env.reset(seed=2)
        return obs, env.step(np.full(3, 0.3, np.float32))[1]

    (obs, plain), (_, penalised) = first_step(0.0), first_step(2.0)
    ensemble = models.dynamics
    _, logvar = ensemble.predict(torch.tensor(obs[None], dtype=torch.float32), torch.full((1, 3), 0.3))
    by_hand = max(np.linalg.norm(np.exp(0.5 * logvar[e, 0].numpy().astype(np.float64))) for e in ensemble.elites)
    assert by_hand > 0 and plain - penalised == pytest.approx(2.0 * by_hand, rel=1e-5)
    assert float(uncertainty(ensemble, torch.tensor(obs[None]).float(), torch.full((1, 3), 0.3))) == pytest.approx(
        by_hand, rel=1e-6
    )


def test_inpainting_keeps_the_known_states_and_the_data_range(models: LearnedModels, data: Transitions) -> None:
    traj = models.trajectory_model
    rows = torch.from_numpy(np.concatenate([data.observations, data.actions], axis=1)[: 5 * traj.horizon].copy())
    windows = rows.reshape(5, traj.horizon, -1)
    known = torch.zeros_like(windows, dtype=torch.bool)
    known[:, :3, :11] = True
    known[:, :, 11:] = True
    states = traj.inpaint_states(windows, known, generator=torch.Generator().manual_seed(0))
    assert states.shape == (5, traj.horizon, 11)
    assert torch.equal(states[:, :3], windows[:, :3, :11])  # bit for bit
    assert not torch.equal(states[:, 3:], windows[:, 3:, :11])
    low, high = data.observations.min(0), data.observations.max(0)
    assert (states.numpy() >= low - 1e-5).all() and (states.numpy() <= high + 1e-5).all()
    again = traj.inpaint_states(windows, known, generator=torch.Generator().manual_seed(0))
    assert torch.equal(states, again)


def test_checkpoint_serves_the_same_episodes_without_the_simulator(models: LearnedModels, tmp_path: Path) -> None:
    path = models.save(tmp_path / "models")
    models.save(path)  # replacing a checkpoint works
    loaded = LearnedModels.load(path, device="cpu")
    assert loaded.observation_space == models.observation_space and loaded.action_space == models.action_space
    assert (loaded.env_id, loaded.max_episode_steps) == (ENV_ID, 1000)
    assert np.array_equal(loaded.start_states, models.start_states)
    assert torch.equal(loaded.continuations.keys, models.continuations.keys)
    assert torch.equal(loaded.continuations.actions, models.continuations.actions)
    assert loaded.termination.env_id == ENV_ID  # the known rule, stored by its id
    rebuilt = LearnedModels.for_env(ENV_ID, dynamics=loaded.dynamics, reward=loaded.reward)  # an ensemble alone
    assert rebuilt.termination.env_id == ENV_ID and rebuilt.trajectory_model is None
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 3)).astype(np.float32)
    for mode in ("ensemble", "diffusion"):
        here = LearnedDynamicsWrapper(gym.make(ENV_ID), models, mode, reset_from="dataset")
        there = LearnedDynamicsWrapper.from_checkpoint(path, ENV_ID, mode, device="cpu")
        assert isinstance(there.unwrapped, SimulatorStub) and there.config == here.config
        for env in (here, there):
            env.reset(seed=9)
        for a in actions:
            assert all(np.array_equal(x, y) for x, y in zip(here.step(a), there.step(a), strict=True))
    _quiet_check(there)
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="not a LearnedModels checkpoint"):
        LearnedModels.load(tmp_path / "other")
    with pytest.raises(ValueError, match="exists and is not a LearnedModels checkpoint"):
        models.save(tmp_path / "other")
    with pytest.raises(ValueError, match="saved for 'Hopper-v5'"):
        LearnedDynamicsWrapper.from_checkpoint(path, "Walker2d-v5", device="cpu")
    with pytest.raises(TypeError, match="only a DynamicsEnsemble can be saved"):
        fake_models().save(tmp_path / "fake")


def test_stable_baselines3_trains_inside_the_wrapper(models: LearnedModels) -> None:
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = LearnedDynamicsWrapper(gym.make(ENV_ID), models, reset_from="dataset", max_episode_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env)
    agent = SAC("MlpPolicy", env, learning_starts=16, batch_size=16, policy_kwargs={"net_arch": [16]}, seed=0)
    agent.learn(40)
    assert agent.replay_buffer.size() == 40 and agent.num_timesteps == 40


# --------------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_named_errors(models: LearnedModels) -> None:
    with pytest.raises(ValueError, match=r"fitted for observations of shape \(11,\).*\(17,\)"):
        LearnedDynamicsWrapper(gym.make("Walker2d-v5"), models)
    with pytest.raises(ValueError, match="fitted with obs_dim=2"):
        dataclasses.replace(models, dynamics=Shift())
    with pytest.raises(ValueError, match="no known termination rule for 'Pendulum-v1'"):
        LearnedModels.for_env("Pendulum-v1", dynamics=Shift(), reward=fake_reward)
    env = LearnedDynamicsWrapper(gym.make(ENV_ID), models)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, np.float32))
    env.reset(seed=0)
    for action, words in (
        (np.array([0.0, 1.5, 0.0]), "outside the action space"),
        (np.zeros(4), r"shape \(3,\)"),
        (np.array([0.0, np.nan, 0.0]), "NaN"),
    ):
        with pytest.raises(ValueError, match=words):
            env.step(action)
    envs = LearnedDynamicsVectorEnv(models, 2)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        envs.step(np.full((2, 3), -1.01))
    with pytest.raises(ValueError, match="needs a trajectory model and its action continuations"):
        LearnedDynamicsWrapper(gym.make(ENV_ID), dataclasses.replace(models, continuations=None), "diffusion")
    with pytest.raises(ValueError, match=r"needs LearnedModels\.start_states"):
        LearnedDynamicsWrapper(gym.make(ENV_ID), dataclasses.replace(models, start_states=None), reset_from="dataset")
    with pytest.raises(ValueError, match="no simulator"):
        LearnedDynamicsWrapper(SimulatorStub(models), models, reset_from="env")
    with pytest.raises(TypeError, match="predict"):
        LearnedDynamicsWrapper(SimulatorStub(fake_models()), fake_models(), penalty=1.0)
    with pytest.raises(TypeError, match=r"1-D gymnasium\.spaces\.Box"):
        dataclasses.replace(models, action_space=spaces.Discrete(3))
    with pytest.raises(ValueError, match="start_states"):
        dataclasses.replace(models, start_states=np.zeros((4, 5)))
    for settings, words in (
        ({"mode": "dreamer"}, "mode must be one of"),
        ({"penalty": -1.0}, "penalty"),
        ({"reset_from": "data"}, "reset_from"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ):
        with pytest.raises(ValueError, match=words):
            LearnedEnvConfig(**settings)
    with pytest.raises(ValueError, match="num_envs"):
        LearnedDynamicsVectorEnv(models, 0)


def test_a_fitted_dydiff_serves_an_environment_directly(data: Transitions) -> None:
    gen = DyDiff(
        "tiny",
        device="cpu",
        seed=0,
        train_steps=10,
        dynamics=EnsembleConfig.from_preset("tiny", max_steps=20),
        reward=RewardConfig.from_preset("tiny", max_steps=20),
    ).fit(data, env_id=ENV_ID, progress=False)
    env = LearnedDynamicsWrapper(gym.make(ENV_ID), gen)  # LearnedModels.from_dydiff inside
    obs, _ = env.reset(seed=0)
    next_obs, *_ = env.step(np.zeros(3, np.float32))
    assert obs.shape == next_obs.shape == (11,) and env.models.dynamics is gen.model.dynamics
    with pytest.raises(TypeError, match=r"LearnedModels\.from_dydiff\(generator, env\)"):
        LearnedDynamicsWrapper(gym.make(ENV_ID), object())


def test_a_residual_trajectory_model_serves_the_diffusion_mode_past_its_horizon(
    data: Transitions, tmp_path: Path
) -> None:
    """The sliding window always knows its first state, which a residual model (``DyDiffConfig.residual``)
    generates the others from; the offsets' normalizer travels with the environment's checkpoint."""
    gen = DyDiff(
        "tiny",
        device="cpu",
        seed=0,
        residual=True,
        train_steps=30,
        dynamics=EnsembleConfig.from_preset("tiny", max_steps=20),
        reward=RewardConfig.from_preset("tiny", max_steps=20),
    ).fit(data, env_id=ENV_ID, progress=False)
    models = LearnedModels.from_dydiff(gen, ENV_ID, start_states=data.observations[:300], data=data)
    horizon = models.trajectory_model.horizon
    actions = np.random.default_rng(2).uniform(-1, 1, (2 * horizon, 3)).astype(np.float32)
    path = models.save(tmp_path / "residual")
    loaded = LearnedModels.load(path, device="cpu").trajectory_model.offsets
    assert np.array_equal(loaded.shift, models.trajectory_model.offsets.shift)
    assert np.array_equal(loaded.scale, models.trajectory_model.offsets.scale)
    episodes = []
    for env in (
        LearnedDynamicsWrapper(gym.make(ENV_ID), models, "diffusion", reset_from="dataset"),
        LearnedDynamicsWrapper.from_checkpoint(path, ENV_ID, "diffusion", device="cpu"),
    ):
        rows = [env.reset(seed=5)[0]] + [env.step(a)[0] for a in actions]  # twice the horizon: the window slides
        episodes.append(np.stack(rows))
    assert np.array_equal(episodes[0], episodes[1])
    low, high = data.observations.min(0), data.observations.max(0)
    assert (episodes[0] >= low - 1e-5).all() and (episodes[0] <= high + 1e-5).all()
    assert np.abs(np.diff(episodes[0], axis=0)).max(axis=1).min() > 0  # every step moves the state
