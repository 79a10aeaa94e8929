"""Conversion of a Stable-Baselines3 2.9 ``ReplayBuffer`` to :class:`dyaug.data.Transitions`.

SB3 stores rows ``(buffer_size, n_envs, dim)`` in a ring (``pos`` is the next row to write, ``full`` says
it wrapped), observations raw and actions scaled to [-1, 1] by ``BasePolicy.scale_action``.
"""

from __future__ import annotations

import warnings

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

from dyaug.data.transitions import Transitions

__all__ = ["transitions_from_sb3", "unscale_sb3_actions"]


def transitions_from_sb3(replay_buffer: ReplayBuffer) -> Transitions:
    """The transitions of an SB3 ``ReplayBuffer``: time order per env, the envs one after another.

    - actions are unscaled to env units with :func:`unscale_sb3_actions`;
    - with ``handle_timeout_termination``: ``terminals = dones · (1 − timeouts)``,
      ``timeouts = dones · timeouts``; without it every done is a terminal (SB3 trains on it that way);
    - the newest row of each env that is not done gets ``timeouts = 1`` (the data stops there); after a
      wrap-around the oldest row starts mid-episode;
    - ``optimize_memory_usage=True`` keeps s' only as the next row's observation: s'_i is
      ``observations[(i + 1) % size]``, and once the ring is full the oldest row is left out (its
      observation was overwritten). The next write also overwrites s' of a done row with the next episode's
      first observation, so those rows get zeros as s' and one ``UserWarning`` counts them.
    """
    if isinstance(replay_buffer, DictReplayBuffer):
        raise ValueError(
            "DictReplayBuffer (dict observations) is not supported; dyaug handles flat Box observations. "
            "Flatten the observations (gymnasium.wrappers.FlattenObservation) and use a ReplayBuffer."
        )
    if not isinstance(replay_buffer, ReplayBuffer):
        raise TypeError(f"transitions_from_sb3 needs an SB3 ReplayBuffer, got {type(replay_buffer).__name__}.")
    for role, space in (
        ("observation", replay_buffer.observation_space),
        ("action", replay_buffer.action_space),
    ):
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"unsupported {role} space {space}: dyaug handles flat Box spaces only.")

    size = replay_buffer.buffer_size
    memory_optimized = replay_buffer.optimize_memory_usage
    if replay_buffer.full:
        order = (replay_buffer.pos + np.arange(size)) % size
        if memory_optimized:
            order = order[1:]
    else:
        order = np.arange(replay_buffer.pos)
    if len(order) == 0:
        raise ValueError("the SB3 replay buffer is empty; collect some steps first.")

    # (T, n_envs, ...) in time order, then env-major so each env's episodes are contiguous.
    def env_major(array: np.ndarray, rows: np.ndarray = order) -> np.ndarray:
        taken = array[rows]
        return np.swapaxes(taken, 0, 1).reshape(-1, *taken.shape[2:])

    observations = env_major(replay_buffer.observations)
    if memory_optimized:
        next_observations = env_major(replay_buffer.observations, (order + 1) % size)
    else:
        next_observations = env_major(replay_buffer.next_observations)
    dones = env_major(replay_buffer.dones) > 0
    if replay_buffer.handle_timeout_termination:
        timed_out = env_major(replay_buffer.timeouts) > 0
    else:
        timed_out = np.zeros_like(dones)
    terminals = dones & ~timed_out
    timeouts = dones & timed_out
    newest: np.ndarray = np.zeros((replay_buffer.n_envs, len(order)), dtype=bool)
    newest[:, -1] = True
    newest = newest.reshape(-1)
    timeouts |= newest & ~dones

    if memory_optimized:
        lost = dones & ~newest
        if lost.any():
            next_observations = np.where(lost[:, None], 0.0, next_observations)
            warnings.warn(
                f"{int(lost.sum())} done transitions of this SB3 buffer have no stored s': with "
                "optimize_memory_usage=True, SB3 overwrites it with the next episode's first observation. "
                "Their next_observations are zeros; use optimize_memory_usage=False to keep the true s'.",
                UserWarning,
                stacklevel=2,
            )

    action_space = replay_buffer.action_space
    assert isinstance(action_space, spaces.Box)  # checked above
    return Transitions(
        observations=observations,
        actions=unscale_sb3_actions(env_major(replay_buffer.actions), action_space),
        rewards=env_major(replay_buffer.rewards),
        next_observations=next_observations,
        terminals=terminals,
        timeouts=timeouts,
    )


def unscale_sb3_actions(scaled: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """Actions in env units: ``low + 0.5 · (a + 1) · (high − low)`` for stored actions a ∈ [−1, 1].

    Same operations, order and dtype as SB3's ``BasePolicy.unscale_action``, so the result is bit-for-bit
    the action SB3 sent to the environment.
    """
    low, high = action_space.low, action_space.high
    return low + (0.5 * (scaled + 1.0) * (high - low))
