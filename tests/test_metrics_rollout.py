"""``dyaug.metrics.rollouts``: simulator rollouts of a policy match Gymnasium's env.step, termination masks the
compounding error, and policy consistency is exact."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from dyaug.metrics import policy_action_distance, reached_states, simulate_policy

tiny_tensors = True
ENV = "Hopper-v5"


def policy(states: torch.Tensor) -> torch.Tensor:
    """Elementwise (no reductions), so a row's action does not depend on the batch it is computed in."""
    return torch.tanh(2.0 * states[:, 2:5] - 0.5 * states[:, 8:11])


def gym_rollouts(starts: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations, rewards and ``terminated`` of env.step, one start at a time, the state set from the start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(ENV)
    sim = env.unwrapped
    all_obs, all_rew, all_term = [], [], []
    for start in starts:
        env.reset(seed=0)
        sim.set_state(np.concatenate([[0.0], start[:5]]), start[5:])
        obs, rows, rewards, terms = sim._get_obs(), [start], [], []
        for _ in range(steps):
            action = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            obs, reward, terminated, _, _ = env.step(action)
            rows.append(obs)
            rewards.append(reward)
            terms.append(terminated)
        all_obs.append(rows)
        all_rew.append(rewards)
        all_term.append(terms)
    env.close()
    return np.array(all_obs), np.array(all_rew), np.array(all_term)


@pytest.fixture(scope="module")
def starts() -> np.ndarray:
    """Standing Hopper states with small float32-exact perturbations (velocities far below the clip)."""
    rng = np.random.default_rng(0)
    obs = np.zeros((6, 11))
    obs[:, 0] = 1.25
    obs += rng.uniform(-0.2, 0.2, obs.shape)
    return obs.astype(np.float32).astype(np.float64)


def test_simulate_policy_matches_env_step(starts: np.ndarray) -> None:
    rollouts = simulate_policy(ENV, starts, policy, horizon=31)
    obs, rewards, terminals = gym_rollouts(starts, 30)
    assert rollouts.observations.shape == (6, 31, 11) and rollouts.actions.shape == (6, 30, 3)
    np.testing.assert_array_equal(rollouts.observations[:, 0], starts)
    np.testing.assert_allclose(rollouts.observations, obs, atol=1e-8)  # only the solver warm start differs
    np.testing.assert_allclose(rollouts.rewards, rewards, atol=1e-8)
    np.testing.assert_array_equal(rollouts.terminals, terminals)
    assert rollouts.terminals.any() and not rollouts.terminals.all()  # the policy falls from some starts only
    np.testing.assert_allclose(rollouts.actions[:, 0], policy(torch.as_tensor(starts, dtype=torch.float32)).numpy())


def test_reached_states_and_state_error_stop_at_either_termination(starts: np.ndarray) -> None:
    flags = np.array([[False, True, False, True], [False, False, False, False]])
    expected = [[True, True, True, False, False], [True] * 5]
    np.testing.assert_array_equal(reached_states(flags), expected)

    rollouts = simulate_policy(ENV, starts, policy, horizon=31)
    offset = np.full(11, 0.1)
    error = rollouts.state_error(rollouts.observations + offset)
    np.testing.assert_allclose(error[rollouts.reached], np.linalg.norm(offset))
    assert np.isnan(error[~rollouts.reached]).all()
    predicted_terminals = np.zeros_like(rollouts.terminals)
    predicted_terminals[:, 4] = True  # the prediction ends at s_5
    error = rollouts.state_error(rollouts.observations, predicted_terminals)
    assert np.isnan(error[:, 6:]).all()
    np.testing.assert_array_equal(error[:, :6][rollouts.reached[:, :6]], 0.0)


def test_policy_action_distance_is_zero_for_relabelled_rows(starts: np.ndarray) -> None:
    actions = policy(torch.as_tensor(starts, dtype=torch.float32)).numpy()
    np.testing.assert_array_equal(policy_action_distance(policy, starts, actions), 0.0)
    shifted = actions + np.array([0.3, 0.0, -0.4], dtype=np.float32)
    np.testing.assert_allclose(policy_action_distance(policy, starts, shifted), 0.5, rtol=1e-6)


def test_bad_inputs_raise(starts: np.ndarray) -> None:
    clipped = starts.copy()
    clipped[2, 7] = 10.0
    with pytest.raises(ValueError, match=r"start observations \[2\].*rebuildable"):
        simulate_policy(ENV, clipped, policy, horizon=3)
    with pytest.raises(ValueError, match=r"shape \(B, 11\)"):
        simulate_policy(ENV, starts[:, :5], policy, horizon=3)
    with pytest.raises(ValueError, match="horizon"):
        simulate_policy(ENV, starts, policy, horizon=1)
    with pytest.raises(ValueError, match=r"policy must return a tensor of shape \(6, 3\)"):
        simulate_policy(ENV, starts, lambda s: s[:, :2], horizon=3)
    with pytest.raises(ValueError, match="not supported"):
        simulate_policy("Humanoid-v5", starts, policy, horizon=3)
    rollouts = simulate_policy(ENV, starts, policy, horizon=3)
    with pytest.raises(ValueError, match="simulated shape"):
        rollouts.state_error(rollouts.observations[:, :2])
