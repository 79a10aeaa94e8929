"""DyDiff in d3rlpy (``DyDiffAugmenter``) and SB3 (``DyDiffCallback``): the FIFO model buffer, batch mixing, the
policy adapters against the libraries' own ``predict``, the rollout schedule, checkpoints and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import warnings
from pathlib import Path

import d3rlpy
import gymnasium as gym
import numpy as np
import pytest
import structlog
import torch
from d3rlpy.algos.utility import build_scalers_with_transition_picker
from d3rlpy.dataset import MDPDataset
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.preprocessing import MinMaxActionScaler, StandardObservationScaler
from dyaug.integrations.d3rlpy import (
    D3rlpyPolicy,
    DiffusionQLConfig,
    DyDiffAugmenter,
    DyDiffReplayBuffer,
    SRPOConfig,
    transitions_to_d3rlpy,
)
from dyaug.integrations.sb3 import DyDiffCallback, SB3Policy, SyntheticReplayBuffer, scale_sb3_actions
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from dyaug import DyDiff, Transitions
from dyaug.data.fifo import TransitionFIFO
from dyaug.dydiff.generator import RolloutStats
from dyaug.dydiff.phases import PHASE_PRESETS, RolloutPhases
from dyaug.models import EnsembleConfig, RewardConfig, TerminalConfig

tiny_tensors = True
N, EPISODE = 300, 50
QUIET = {"show_progress": False, "logger_adapter": NoopAdapterFactory()}
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _small_dydiff(seed: int = 0) -> DyDiff:
    """DyDiff's tiny preset, shortened further: fits in about a second."""
    short = {"max_epochs": 3}
    return DyDiff(
        "tiny",
        device="cpu",
        seed=seed,
        train_steps=20,
        dynamics=EnsembleConfig.from_preset("tiny", **short),
        reward=RewardConfig.from_preset("tiny", **short),
        terminal=TerminalConfig.from_preset("tiny", **short),
    )


@pytest.fixture(scope="module")
def pendulum() -> Transitions:
    """Random Pendulum-v1 steps (actions in [-2, 2]) in episodes of 50, ending alternately in a terminal and a
    timeout (the terminals are invented, so the generator learns a termination classifier)."""
    env, rng = gym.make("Pendulum-v1"), np.random.default_rng(0)
    rows = []
    obs, _ = env.reset(seed=0)
    for i in range(N):
        action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
        next_obs, reward, *_ = env.step(action)
        rows.append((obs, action, reward, next_obs))
        obs = next_obs if (i + 1) % EPISODE else env.reset(seed=i)[0]
    observations, actions, rewards, next_observations = (np.array(column) for column in zip(*rows, strict=True))
    ends = np.arange(N) % EPISODE == EPISODE - 1
    terminal = ends & (np.arange(N) // EPISODE % 2 == 0)
    return Transitions(observations, actions, rewards, next_observations, terminal, ends & ~terminal)


@pytest.fixture(scope="module")
def generator(pendulum: Transitions) -> DyDiff:
    return _small_dydiff().fit(pendulum, progress=False)


def _dataset(t: Transitions) -> MDPDataset:
    return MDPDataset(
        np.array(t.observations), np.array(t.actions), np.array(t.rewards), np.array(t.terminals), np.array(t.timeouts)
    )


def _digest(dataset: MDPDataset) -> str:
    h = hashlib.sha256()
    for episode in dataset.episodes:
        for array in (episode.observations, episode.actions, episode.rewards):
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _rows(start: int, n: int, obs_dim: int = 3, with_next_actions: bool = False) -> Transitions:
    """``n`` transitions whose observations count up from ``start`` (so rows can be told apart)."""
    values = np.arange(start, start + n, dtype=np.float32)
    return Transitions(
        next_actions=np.zeros((n, 1), np.float32) if with_next_actions else None,
        observations=np.repeat(values[:, None], obs_dim, axis=1),
        actions=np.zeros((n, 1), np.float32),
        rewards=values,
        next_observations=np.repeat(values[:, None] + 0.5, obs_dim, axis=1),
        terminals=np.zeros(n, np.float32),
        timeouts=np.zeros(n, np.float32),
    )


def _augmenter(generator: DyDiff, base_algo=None, **kwargs) -> DyDiffAugmenter:
    base_algo = base_algo or d3rlpy.algos.TD3PlusBCConfig(batch_size=32, observation_scaler=StandardObservationScaler())
    return DyDiffAugmenter(base_algo, generator=generator, preset="tiny", device="cpu", **kwargs)


# --------------------------------------------------------------------------------------------- FIFO, mixing
def test_fifo_keeps_the_newest_rows_and_evicts_the_oldest_first() -> None:
    fifo = TransitionFIFO(capacity=7)
    assert fifo.add(_rows(0, 4)) == 0 and len(fifo) == 4
    assert fifo.add(_rows(4, 5)) == 2  # 9 rows, 2 over capacity: rows 0 and 1 go
    np.testing.assert_array_equal(fifo.transitions().rewards, np.arange(2, 9))
    assert fifo.add(_rows(100, 3)) == 3
    np.testing.assert_array_equal(fifo.transitions().rewards, [5, 6, 7, 8, 100, 101, 102])
    assert fifo.add(_rows(200, 10)) == 10  # a set larger than the store keeps its own newest rows
    np.testing.assert_array_equal(fifo.transitions().rewards, np.arange(203, 210))
    assert (len(fifo), fifo.added, fifo.evicted) == (7, 22, 15)
    with pytest.raises(ValueError, match="observation/action sizes"):
        fifo.add(_rows(0, 2, obs_dim=4))
    with pytest.raises(ValueError, match="next_actions"):
        fifo.add(_rows(0, 2, with_next_actions=True))
    with pytest.raises(ValueError, match="capacity"):
        TransitionFIFO(0)
    fifo.clear()
    with pytest.raises(ValueError, match="empty"):
        fifo.transitions()


def test_batches_keep_the_synthetic_share_of_the_model_buffer(pendulum: Transitions) -> None:
    """The rule of every dyaug buffer (dyaug.integrations.mixing.batch_split): the share holds from the first
    phase on, the model buffer's rows drawn with replacement."""
    fifo = TransitionFIFO(capacity=1000)
    fifo.add(_rows(10_000, 12, with_next_actions=True))
    buffer = DyDiffReplayBuffer(transitions_to_d3rlpy(pendulum), fifo, real_ratio=0.6)
    np.random.seed(0)
    batch = buffer.sample_transition_batch(32)  # synthetic share: 32 - round(0.6 * 32) = 13 > 12 rows
    assert batch.observations.shape == (32, 3) and (batch.observations[:, 0] >= 10_000).sum() == 13
    fifo.add(_rows(20_000, 1, with_next_actions=True))
    buffer.refresh()
    batch = buffer.sample_transition_batch(32)
    synthetic = batch.observations[:, 0] >= 10_000
    assert synthetic.sum() == 13 and not synthetic[:19].any()


# --------------------------------------------------------------------------------------- policy adapters
@pytest.mark.parametrize(
    "config",
    [
        d3rlpy.algos.TD3PlusBCConfig,
        d3rlpy.algos.CQLConfig,
        d3rlpy.algos.IQLConfig,
        d3rlpy.algos.BCConfig,
        d3rlpy.algos.AWACConfig,
        d3rlpy.algos.SACConfig,
        d3rlpy.algos.ReBRACConfig,
        DiffusionQLConfig,
        SRPOConfig,
    ],
)
def test_d3rlpy_policy_gives_exactly_the_algorithms_predict_actions(config, pendulum: Transitions) -> None:
    dataset = _dataset(pendulum)
    algo = config(observation_scaler=StandardObservationScaler(), action_scaler=MinMaxActionScaler()).create("cpu:0")
    build_scalers_with_transition_picker(algo, dataset)
    algo.build_with_dataset(dataset)
    states = np.array(pendulum.observations[:64])
    torch.manual_seed(1)  # Diffusion-QL's predict draws its candidates
    ours = D3rlpyPolicy(algo)(torch.from_numpy(states))
    torch.manual_seed(1)
    theirs = algo.predict(states)
    assert ours.dtype == torch.float32 and np.array_equal(ours.numpy(), theirs)
    assert (theirs.min(), theirs.max()) != (0.0, 0.0) and np.abs(theirs).max() <= 2.0  # env units, not [-1, 1]


@pytest.mark.parametrize("algorithm", [TD3, SAC])
def test_sb3_policy_gives_exactly_predicts_deterministic_actions(algorithm, pendulum: Transitions) -> None:
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    env.obs_rms.mean, env.obs_rms.var = np.array([0.1, -0.2, 0.3]), np.array([0.5, 2.0, 4.0])  # non-trivial stats
    model = algorithm("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [16, 16]})
    states = np.array(pendulum.observations[:64])
    ours = SB3Policy(model.policy, env)(torch.from_numpy(states)).numpy()
    theirs, _ = model.predict(env.normalize_obs(states), deterministic=True)
    assert np.array_equal(ours, theirs) and np.abs(theirs).max() > 0.0


# ------------------------------------------------------------------------------------------ d3rlpy fit loop
def test_fit_runs_phases_at_the_stated_steps_and_never_touches_the_real_data(generator, pendulum) -> None:
    dataset = _dataset(pendulum)
    before = _digest(dataset)
    d3rlpy.seed(0)
    augmenter = _augmenter(generator, rollout_every=10, buffer_size=150)
    calls, labels = [], {}

    def callback(algo, epoch: int, step: int) -> None:  # runs right after the phase of its step
        calls.append(step)
        if step == 30:
            newest = augmenter.synthetic.transitions()[-augmenter.reports[-1].stats.transitions :]
            labels["rollout"], labels["predict"] = newest.actions, algo.predict(np.array(newest.observations))

    history = augmenter.fit(dataset, 40, 20, callback=callback, **QUIET)
    assert augmenter.rollout_steps == [0, 10, 20, 30] and calls == list(range(1, 41))
    # The phase at step 30 rolled out the policy of step 30 (observation scaler included), in env units.
    np.testing.assert_allclose(labels["rollout"], labels["predict"], atol=1e-6)
    assert _digest(dataset) == before
    reports = augmenter.reports
    added = sum(r.stats.transitions for r in reports)
    assert len(augmenter.synthetic) == min(150, added) and augmenter.synthetic.evicted == max(0, added - 150)
    # logged at each epoch's end: the phase after step 20 runs before epoch 1's evaluators
    sizes = [metrics["dydiff_synthetic_size"] for _, metrics in history]
    assert sizes == [reports[2].synthetic_size, len(augmenter.synthetic)]
    synthetic = augmenter.synthetic.transitions()
    # a' of the synthetic rows: the policy's action at s' (zero at terminals), as ReBRAC's critic reads it
    assert synthetic.next_actions is not None and (synthetic.next_actions[synthetic.terminals > 0] == 0).all()
    # Continuing: the schedule and the model buffer go on.
    augmenter.fit(dataset, 20, 20, **QUIET)
    assert augmenter.rollout_steps == [0, 10, 20, 30, 40, 50] and augmenter.steps_done == 60
    # Same seeds, same run.
    d3rlpy.seed(0)
    again = _augmenter(generator, rollout_every=10, buffer_size=150)
    again.fit(dataset, 40, 20, **QUIET)
    np.testing.assert_array_equal(again.reports[-1].stats.returns, reports[3].stats.returns)


def test_base_algo_may_be_a_class_a_config_or_an_algorithm(generator, pendulum) -> None:
    instance = d3rlpy.algos.IQLConfig(batch_size=16).create("cpu:0")
    for base_algo, kind in (
        (d3rlpy.algos.TD3PlusBC, d3rlpy.algos.TD3PlusBC),
        (d3rlpy.algos.CQLConfig(batch_size=16), d3rlpy.algos.CQL),
        (instance, d3rlpy.algos.IQL),
    ):
        augmenter = _augmenter(generator, base_algo)
        augmenter.fit(pendulum, 10, 10, **QUIET)
        assert type(augmenter.algo) is kind and augmenter.predict(np.array(pendulum.observations[:4])).shape == (4, 1)
    assert augmenter.algo is instance and augmenter.steps_done == 10


def test_an_unfitted_generator_is_fitted_on_the_first_fit(pendulum) -> None:
    augmenter = _augmenter(_small_dydiff(seed=3))
    augmenter.fit(pendulum, 10, 10, **QUIET)
    assert augmenter.generator.model.training_data["n_transitions"] == N and augmenter.rollout_steps == [0]


def test_save_and_load_restore_the_policy_the_generator_and_the_schedule(generator, pendulum, tmp_path) -> None:
    augmenter = _augmenter(generator, rollout_every=10)
    augmenter.fit(pendulum, 20, 10, **QUIET)
    path = augmenter.save(tmp_path / "augmenter")
    augmenter.save(path)  # replaces its own checkpoint
    loaded = DyDiffAugmenter.load(path, device="cpu")
    states = np.array(pendulum.observations[:32])
    assert np.array_equal(loaded.predict(states), augmenter.predict(states))
    policy = D3rlpyPolicy(augmenter.algo)
    a, b = (g.rollout(policy, states[:8], seed=5) for g in (generator, loaded.generator))
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)
    assert (loaded.steps_done, loaded.real_ratio, loaded.phases.settings) == (20, 0.6, augmenter.phases.settings)
    assert loaded.rollout_algo is None and loaded.policy.algo is loaded.algo
    loaded.fit(pendulum, 10, 10, **QUIET)
    assert loaded.rollout_steps == [20]  # the model buffer is not saved: a phase refills it
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="not a DyDiffAugmenter checkpoint"):
        augmenter.save(tmp_path / "other")
    with pytest.raises(ValueError, match="not a DyDiffAugmenter checkpoint"):
        DyDiffAugmenter.load(tmp_path / "other")


def _bc(t: Transitions, steps: int = 20) -> d3rlpy.algos.BC:
    bc = d3rlpy.algos.BCConfig(batch_size=32, observation_scaler=StandardObservationScaler()).create("cpu:0")
    bc.fit(_dataset(t), n_steps=steps, n_steps_per_epoch=steps, **QUIET)
    return bc


def _weights(algo) -> list[np.ndarray]:
    return [p.detach().clone().numpy() for p in algo.impl.modules.imitator.parameters()]


def test_a_fixed_rollout_policy_drives_every_phase_and_is_saved_with_the_augmenter(generator, pendulum, tmp_path):
    d3rlpy.seed(0)
    bc = _bc(pendulum)
    before = _weights(bc)
    augmenter = _augmenter(generator, rollout_every=10, rollout_policy=bc)
    newest = []

    def callback(algo, epoch: int, step: int) -> None:  # runs right after the phase of its step
        if step in (1, 10, 20):  # the newest rows: phase 0 (before step 0), then those of steps 10 and 20
            rows = augmenter.synthetic.transitions()[-augmenter.reports[-1].stats.transitions :]
            states = np.array(rows.observations)
            newest.append((rows.actions, bc.predict(states), algo.predict(states)))

    augmenter.fit(pendulum, 30, 10, callback=callback, **QUIET)
    # Every phase's rows follow the fixed policy, not the learner, and the fixed policy is never trained.
    assert len(newest) == 3 and augmenter.rollout_steps == [0, 10, 20]
    for rollout, fixed, _ in newest:
        np.testing.assert_allclose(rollout, fixed, atol=1e-6)
    assert np.abs(newest[-1][0] - newest[-1][2]).max() > 0.05
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(bc), strict=True))
    assert "rollouts by a fixed BC" in repr(augmenter)
    loaded = DyDiffAugmenter.load(augmenter.save(tmp_path / "fixed"), device="cpu")
    states = np.array(pendulum.observations[:16])
    assert np.array_equal(loaded.rollout_algo.predict(states), bc.predict(states))
    assert np.array_equal(loaded.predict(states), augmenter.predict(states))


def test_a_fixed_rollout_policy_must_be_a_trained_algorithm_for_the_task(generator, pendulum) -> None:
    with pytest.raises(ValueError, match="no networks yet; fit it on the task"):
        _augmenter(generator, rollout_policy=d3rlpy.algos.BCConfig().create("cpu:0"))
    with pytest.raises(TypeError, match="rollout_policy must be a trained d3rlpy algorithm"):
        _augmenter(generator, rollout_policy=torch.tanh)
    learner = d3rlpy.algos.TD3PlusBCConfig(batch_size=32).create("cpu:0")
    learner.build_with_dataset(_dataset(pendulum))
    with pytest.raises(ValueError, match="is the learner itself; leave rollout_policy=None"):
        _augmenter(generator, learner, rollout_policy=learner)
    wide = Transitions(
        np.tile(pendulum.observations, 2), pendulum.actions, pendulum.rewards, np.tile(pendulum.next_observations, 2),
        pendulum.terminals, pendulum.timeouts,
    )  # fmt: skip
    with pytest.raises(ValueError, match="rollout policy was built for observations"):
        _augmenter(generator, rollout_policy=_bc(wide, steps=2)).fit(pendulum, 10, 10, **QUIET)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda g: _augmenter(g, d3rlpy.algos.DiscreteCQLConfig()), ValueError, "discrete actions"),
        (lambda g: _augmenter(g, d3rlpy.algos.CalQLConfig()), ValueError, "returns-to-go"),
        (lambda g: _augmenter(g, d3rlpy.algos.DecisionTransformerConfig()), TypeError, "Q-learning algorithm"),
        (lambda g: _augmenter(g, "TD3PlusBC"), TypeError, "Q-learning algorithm"),
        (lambda g: _augmenter(g, real_ratio=1.5), ValueError, "real_ratio"),
        (lambda g: _augmenter(g, rollout_every=0), ValueError, "rollout_every"),
        (lambda g: _augmenter(g, policy_action="mean"), ValueError, "action must be one of"),
        (lambda g: DyDiffAugmenter(generator=g, preset="huge"), ValueError, "unknown preset"),
        (lambda g: DyDiffAugmenter(generator=42, preset="tiny"), TypeError, "generator must be"),
        (lambda g: DyDiffReplayBuffer(_dataset_of(g), TransitionFIFO(5)), ValueError, "model buffer is empty"),
        (lambda g: RolloutPhases(g, PHASE_PRESETS["tiny"]).run(torch.tanh, np.zeros((0, 3)), 0), ValueError, "pool"),
    ],
)
def test_bad_input_raises_a_named_error(make, error, words, generator) -> None:
    with pytest.raises(error, match=words):
        make(generator)


def _dataset_of(generator: DyDiff) -> MDPDataset:
    rng = np.random.default_rng(0)
    ends = np.zeros(20, np.float32)
    ends[-1] = 1.0
    return MDPDataset(*(rng.normal(size=shape).astype(np.float32) for shape in ((20, 3), (20, 1), 20)), ends)


def test_bad_fit_arguments_raise_before_any_work(generator, pendulum) -> None:
    augmenter = _augmenter(generator)
    with pytest.raises(ValueError, match="less than one epoch"):
        augmenter.fit(pendulum, 5, 10, **QUIET)
    with pytest.raises(ValueError, match="DyDiff's own metric names"):
        augmenter.fit(pendulum, 10, 10, evaluators={"dydiff_synthetic_size": lambda a, d: 0.0}, **QUIET)
    with pytest.raises(ValueError, match="fitted on observations/actions of sizes"):
        augmenter.fit(_rows(0, 60, obs_dim=2).replace(timeouts=np.ones(60, np.float32)), 10, 10, **QUIET)
    assert augmenter.rollout_steps == [] and augmenter.steps_done == 0 and augmenter.algo.impl is None


def _hopper_steps(n: int = 40) -> Transitions:
    """``n`` real Hopper-v5 steps of random actions (resets after a terminal)."""
    env, rng = gym.make("Hopper-v5"), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(n):
        action = rng.uniform(-1, 1, size=3).astype(np.float32)
        next_obs, reward, terminated, *_ = env.step(action)
        rows.append((obs, action, reward, next_obs, terminated))
        obs = next_obs if not terminated else env.reset()[0]
    o, a, r, o2, d = (np.array(column) for column in zip(*rows, strict=True))
    return Transitions(o, a, r, o2, d.astype(np.float32), np.zeros(n, np.float32))


@dataclasses.dataclass
class _Replay:
    """A policy-rollout generator that returns fixed ``rows`` and whose one-step model knows the true s' of each."""

    rows: Transitions
    truth: Transitions
    seed: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    env_id: str = "Hopper-v5"
    fitted: bool = True
    obs_dim: int = 11
    act_dim: int = 3
    last_rollout_stats: RolloutStats | None = None

    def fit(self, data, *args, **options) -> _Replay:
        return self

    def save(self, path) -> Path:
        raise NotImplementedError("a test double")

    def provenance(self) -> dict:
        return {}

    def rollout(self, policy, start_states, *, seed=None) -> Transitions:
        n = len(self.rows)
        self.last_rollout_stats = RolloutStats(1, 1, n, 0, np.zeros(1), np.zeros(1, np.int64), 0.0)
        return self.rows

    def one_step(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        index = {o.tobytes(): i for i, o in enumerate(self.truth.observations)}
        return torch.as_tensor(self.truth.next_observations[[index[o.tobytes()] for o in observations.numpy()]])


def test_simulator_check_measures_the_distance_to_mujoco_and_to_the_one_step_model() -> None:
    real = _hopper_steps()
    phases = RolloutPhases(_Replay(real, real), PHASE_PRESETS["tiny"], env_id="Hopper-v5")
    state_error, reward_error, reference = phases.simulator_check(real, np.random.default_rng(0))
    assert state_error < 1e-4 and reward_error < 1e-4 and reference < 1e-4
    shifted = real.replace(next_observations=real.next_observations + 1.0)
    state_error, _, reference = phases.simulator_check(shifted, np.random.default_rng(0))
    assert state_error == pytest.approx(np.sqrt(11), abs=1e-3) and reference < 1e-4


@pytest.mark.parametrize(("shift", "warns"), [(0.01, False), (1.0, True)])
def test_a_phase_warns_once_when_its_rows_are_far_less_faithful_than_the_one_step_model(shift, warns) -> None:
    real = _hopper_steps()
    truth = real.replace(next_observations=real.next_observations + 0.1 * np.sign(real.observations[:, :1]))
    rows = real.replace(next_observations=real.next_observations + shift)  # √11 · shift from the simulator
    phases = RolloutPhases(_Replay(rows, truth), PHASE_PRESETS["tiny"], env_id="Hopper-v5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reports = [phases.run(torch.tanh, real.observations, step) for step in (0, 10)]
    assert reports[0].reference_state_error == pytest.approx(0.1 * np.sqrt(11), abs=1e-3)  # the model's own error
    assert reports[0].metrics()["sim_reference_state_error"] == pytest.approx(0.1 * np.sqrt(11), abs=1e-3)
    unfaithful = [w for w in caught if "one-step model" in str(w.message)]
    assert len(unfaithful) == (1 if warns else 0)  # shift 1.0: 10x the model's error; 0.01: 0.1x
    if warns:
        assert "10.0x" in str(unfaithful[0].message) and "labels='models'" in str(unfaithful[0].message)


# ----------------------------------------------------------------------------------------------------- SB3
def test_sb3_callback_mixes_policy_consistent_rollouts_into_the_replay_buffer(generator) -> None:
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    model = TD3(
        "MlpPolicy",
        env,
        learning_starts=20,
        batch_size=32,
        seed=0,
        replay_buffer_class=SyntheticReplayBuffer,
        policy_kwargs={"net_arch": [16, 16]},
    )
    callback = DyDiffCallback(generator, rollout_every=25, preset="tiny", real_ratio=0.6)
    model.learn(100, callback=callback)
    buffer = model.replay_buffer
    assert [r.step for r in callback.reports] == [25, 50, 75, 100] and buffer.real_ratio == 0.6
    synthetic = callback.synthetic.transitions()
    assert buffer.synthetic_size == len(synthetic) == sum(r.stats.transitions for r in callback.reports)
    # Env-unit actions in the model buffer, [-1, 1] in SB3's buffer.
    stored = buffer._synthetic.actions.numpy()
    np.testing.assert_array_equal(stored, scale_sb3_actions(synthetic.actions, env.action_space).astype(np.float32))
    # A phase run now (after SB3's last gradient steps) labels its states with the actor's own actions.
    report = callback.rollout()
    last = callback.synthetic.transitions()[-report.stats.transitions :]
    expected, _ = model.predict(env.normalize_obs(np.array(last.observations)), deterministic=True)
    np.testing.assert_allclose(last.actions, expected, atol=1e-6)  # env units (Pendulum: ±2), not SB3's [-1, 1]
    assert np.abs(expected).max() > 0.1


def test_sb3_callback_refuses_a_plain_buffer_an_unfitted_generator_and_another_task(generator) -> None:
    with pytest.raises(ValueError, match="not fitted"):
        DyDiffCallback(_small_dydiff())
    plain = TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]})
    with pytest.raises(TypeError, match="SyntheticReplayBuffer"):
        plain.learn(1, callback=DyDiffCallback(generator, preset="tiny"))
    other = TD3(
        "MlpPolicy",
        "MountainCarContinuous-v0",
        replay_buffer_class=SyntheticReplayBuffer,
        policy_kwargs={"net_arch": [8]},
    )
    with pytest.raises(ValueError, match="fitted on observations/actions of sizes"):
        other.learn(1, callback=DyDiffCallback(generator, preset="tiny"))
