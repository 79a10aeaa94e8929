"""Returns of a policy in a real environment, and D4RL-normalised scores (Fu et al. 2020, arXiv 2004.07219)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

__all__ = ["episode_returns", "evaluate_returns", "normalized_scores"]


def episode_returns(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``act`` (an observation -> an action) over ``episodes`` episodes of ``env``, reset
    seeds ``10_000 * seed + episode``, so every policy evaluated with the same ``seed`` meets the same start states."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 * seed + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def evaluate_returns(act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int, seed: int) -> list[float]:
    """:func:`episode_returns` of ``act`` (a ``(1, obs_dim)`` float32 batch -> a ``(1, act_dim)`` action batch, e.g. a
    d3rlpy algorithm's ``predict``) in a fresh ``env_id`` environment."""
    env = gym.make(env_id)
    try:
        return episode_returns(env, lambda obs: act(obs[None].astype(np.float32))[0], episodes, seed)
    finally:
        env.close()


def normalized_scores(env: str, returns: list[float]) -> list[float]:
    """D4RL-normalised scores 100 (R - R_random) / (R_expert - R_random) with the forge catalog's reference
    returns of ``env`` (a short name such as ``"hopper"`` or a Gymnasium id)."""
    from dyaug.datasets.catalog import resolve_env

    ref = resolve_env(env)
    return [100 * (r - ref.ref_min_score) / (ref.ref_max_score - ref.ref_min_score) for r in returns]
