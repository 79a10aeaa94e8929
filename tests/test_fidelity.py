from __future__ import annotations

import dataclasses
import functools
import warnings

import gymnasium as gym
import numpy as np
import pytest

from dyaug.data.transitions import Transitions
from dyaug.metrics import SUPPORTED_ENVS, FidelityReport, dynamics_error


@dataclasses.dataclass(frozen=True)
class Recorded:
    transitions: Transitions
    next_obs64: np.ndarray  # env.step's float64 s'
    rewards64: np.ndarray  # env.step's float64 r


@functools.cache
def record(env_id: str, n: int, seed: int = 0, action_scale: float = 1.2) -> Recorded:
    """``n`` env.step transitions under uniform actions in ±action_scale (so some leave the action space).

    The simulator state is rounded to float32 before each step, so float32 observations fix it exactly.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
    sim = env.unwrapped
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}

    def rounded_obs() -> np.ndarray:
        sim.set_state(sim.data.qpos.astype(np.float32), sim.data.qvel.astype(np.float32))
        return sim._get_obs()

    env.reset(seed=seed)
    obs = rounded_obs()
    for _ in range(n):
        action = rng.uniform(-action_scale, action_scale, env.action_space.shape).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            rows[key].append(value)
        if terminated or truncated:
            env.reset()
        obs = rounded_obs()
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    transitions = Transitions(
        observations=arrays["obs"],
        actions=arrays["act"],
        rewards=arrays["rew"],
        next_observations=arrays["next"],
        terminals=arrays["term"],
        timeouts=arrays["trunc"],
    )
    return Recorded(transitions, arrays["next"], arrays["rew"])


N_STEPS = {"Hopper-v5": 200, "Walker2d-v5": 300, "HalfCheetah-v5": 150}
PLANAR = tuple(env for env in SUPPORTED_ENVS if env in N_STEPS)


def test_ant_steps_and_contact_forces_are_reproduced_on_real_data() -> None:
    """Ant-v5 (105-dimensional: positions, velocities, 78 clipped contact forces), collected as Gymnasium collects
    it. The forward reward reads the torso's ``xpos``, which MuJoCo leaves at the start of the last physics
    substep, one substep behind the state; the check uses the whole step's displacement, so rewards agree to about
    1% of a step's reward, not to float precision."""
    env = gym.make("Ant-v5")
    rng = np.random.default_rng(0)
    rows = []
    obs, _ = env.reset(seed=0)
    for t in range(300):
        action = rng.uniform(-1, 1, 8)
        nxt, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, reward, nxt, float(terminated), float(truncated)))
        obs = nxt if not (terminated or truncated) else env.reset(seed=t)[0]
    o, a, r, o2, d, tt = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    report = dynamics_error("Ant-v5", Transitions(o, a, r, o2, d, tt), threads=1)
    assert report.checkable.all() and (np.abs(o2[:, 27:]) > 0).any()  # contact forces present
    assert np.abs(report.simulated_next_observations - o2).max() < 1e-4  # float32 storage of s, amplified by contacts
    assert np.abs(report.simulated_rewards - r).mean() < 0.02
    assert report.terminal_agreement == 1.0


@pytest.mark.parametrize("env_id", PLANAR)
def test_env_step_is_reproduced_on_checkable_rows(env_id: str) -> None:
    rec = record(env_id, N_STEPS[env_id])
    t = rec.transitions
    report = dynamics_error(env_id, t, threads=2)
    ok = report.checkable
    assert (np.abs(t.actions) > 1).any(), "the data must include actions outside the action space"
    assert ok.sum() >= 30
    assert np.abs(report.simulated_next_observations[ok] - rec.next_obs64[ok]).max() < 1e-6
    # Gymnasium sums the control cost of a float32 action in float32; dynamics_error uses float64.
    assert np.abs(report.simulated_rewards[ok] - rec.rewards64[ok]).max() < 1e-7
    # s' is stored in float32, so state_error is its rounding error ‖s'₆₄ − s'₃₂‖ plus at most ‖ŝ' − s'₆₄‖.
    rounding = np.linalg.norm(rec.next_obs64 - t.next_observations, axis=1)
    assert np.abs(report.state_error[ok] - rounding[ok]).max() < 1e-6
    assert report.state_error[ok].max() < 5e-6
    assert report.reward_error[ok].max() < 1e-6
    assert report.terminal_agree[ok].all()
    assert report.terminal_agreement == 1.0
    if env_id == "HalfCheetah-v5":
        assert not report.simulated_terminals.any()
    else:
        assert report.simulated_terminals[ok].any(), "terminations must be exercised"


def test_walker_rows_with_clipped_velocity_are_flagged_and_not_simulated() -> None:
    t = record("Walker2d-v5", N_STEPS["Walker2d-v5"]).transitions
    report = dynamics_error("Walker2d-v5", t, threads=1)
    clipped = (np.abs(t.observations[:, 8:]) >= 10).any(axis=1)
    assert 0 < clipped.sum() < len(t)
    np.testing.assert_array_equal(report.checkable, ~clipped)
    assert np.isnan(report.state_error[clipped]).all() and np.isnan(report.reward_error[clipped]).all()
    assert np.isnan(report.simulated_next_observations[clipped]).all()
    assert not report.terminal_agree[clipped].any() and not report.simulated_terminals[clipped].any()
    assert report.fraction_checkable == pytest.approx(1 - clipped.mean())


def test_crafted_fast_hopper_state_is_flagged() -> None:
    env = gym.make("Hopper-v5").unwrapped
    env.reset(seed=1)
    env.set_state(env.data.qpos, np.array([0.0, 0.0, 0.0, 12.0, 0.0, 0.0]))  # thigh spinning at 12 rad/s
    obs = env._get_obs()
    action = np.zeros(3, dtype=np.float32)
    next_obs, reward, terminated, _, _ = env.step(action)
    assert obs[8] == 10.0  # the observation clipped the velocity
    one = Transitions(obs[None], action[None], [reward], next_obs[None], [float(terminated)], [0.0])
    report = dynamics_error("Hopper-v5", one, threads=1)
    assert not report.checkable[0] and np.isnan(report.state_error[0])
    assert np.isnan(report.mean_state_error) and report.fraction_checkable == 0.0


def test_errors_equal_the_injected_perturbations() -> None:
    t = record("Hopper-v5", N_STEPS["Hopper-v5"]).transitions
    delta = np.zeros(t.obs_dim, dtype=np.float32)
    delta[[0, 6]] = [0.3, -0.4]  # norm 0.5
    flipped = np.zeros(len(t), dtype=bool)
    flipped[[3, 50]] = True
    wrong = t.replace(
        next_observations=t.next_observations + delta,
        rewards=t.rewards + 0.25,
        terminals=np.where(flipped, 1.0 - t.terminals, t.terminals),
    )
    report = dynamics_error("Hopper-v5", wrong, threads=1)
    assert report.checkable.all()
    np.testing.assert_allclose(report.state_error, 0.5, atol=2e-6)
    np.testing.assert_allclose(report.reward_error, 0.25, atol=1e-6)
    np.testing.assert_array_equal(report.terminal_agree, ~flipped)
    assert report.terminal_agreement == pytest.approx(1 - 2 / len(t))


def test_result_is_bitwise_independent_of_threads_and_chunks() -> None:
    t = record("Walker2d-v5", N_STEPS["Walker2d-v5"]).transitions
    reference = dynamics_error("Walker2d-v5", t, threads=1)
    for threads, chunk_size in ((2, 8192), (2, 7), (1, 1)):
        other = dynamics_error("Walker2d-v5", t, threads=threads, chunk_size=chunk_size)
        for field in dataclasses.fields(FidelityReport):
            np.testing.assert_array_equal(getattr(other, field.name), getattr(reference, field.name))


def test_summary_uses_checkable_rows_only() -> None:
    nan = np.nan
    report = FidelityReport(
        env_id="Hopper-v5",
        state_error=np.array([1.0, 2.0, 3.0, nan]),
        reward_error=np.array([0.5, 0.0, 0.1, nan]),
        terminal_agree=np.array([True, True, False, False]),
        checkable=np.array([True, True, True, False]),
        simulated_next_observations=np.zeros((4, 11)),
        simulated_rewards=np.zeros(4),
        simulated_terminals=np.zeros(4, dtype=bool),
    )
    assert report.summary() == pytest.approx(
        {
            "env_id": "Hopper-v5",
            "count": 4,
            "fraction_checkable": 0.75,
            "state_error_mean": 2.0,
            "state_error_median": 2.0,
            "state_error_p90": 2.8,
            "reward_error_mean": 0.2,
            "terminal_agreement": 2 / 3,
        }
    )
    text = str(report)
    assert "Hopper-v5: 4 transitions, 75.0% checkable" in text and "66.7% agree" in text


def _tiny(obs_dim: int, act_dim: int, n: int = 2) -> Transitions:
    z = np.zeros(n)
    return Transitions(np.zeros((n, obs_dim)), np.zeros((n, act_dim)), z, np.zeros((n, obs_dim)), z, z)


@pytest.mark.parametrize(
    ("env_id", "data", "error", "match"),
    [
        ("Hopper-v5", _tiny(10, 3), ValueError, "observation dimension 10 but Hopper-v5 has 11"),
        ("Walker2d-v5", _tiny(17, 3), ValueError, "action dimension 3 but Walker2d-v5 has 6"),
        ("Hopper-v5", _tiny(11, 3, n=0), ValueError, "transitions is empty"),
        ("Hopper-v4", _tiny(11, 3), ValueError, r"not supported.*Did you mean 'Hopper-v5'"),
        ("Ant-v5", _tiny(27, 8), ValueError, "observation dimension 27 but Ant-v5 has 105"),
        ("Swimmer-v5", _tiny(8, 2), ValueError, r"\['Hopper-v5', 'Walker2d-v5', 'HalfCheetah-v5', 'Ant-v5'\]"),
        ("Hopper-v5", {"observations": np.zeros((2, 11))}, TypeError, "must be a dyaug Transitions"),
    ],
)
def test_bad_input_raises_named_errors(env_id: str, data: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        dynamics_error(env_id, data)  # type: ignore[arg-type]


def test_bad_thread_count_raises() -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        dynamics_error("Hopper-v5", _tiny(11, 3), threads=0)
