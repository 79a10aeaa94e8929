"""Exact conversions between :class:`dyaug.data.Transitions` and d3rlpy 2.8 replay buffers.

d3rlpy stores episodes, not transitions. An ``Episode`` of size K that terminated holds K observations
and K transitions, and d3rlpy's ``BasicTransitionPicker`` returns zeros as s' (and a') at the terminal
step; an episode that did not terminate (timeout) holds K observations and K − 1 transitions, its last
observation being the final s' and its last action only padding (returned as a' of the last transition).

d3rlpy keeps no s' for terminal steps. :class:`EpisodeWithFinalObservation` adds it, so
``transitions_from_d3rlpy(transitions_to_d3rlpy(t))`` gives back ``t`` exactly.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from d3rlpy.constants import ActionSpace
from d3rlpy.dataset import (
    Episode,
    FIFOBuffer,
    InfiniteBuffer,
    ReplayBuffer,
    ReplayBufferBase,
    Signature,
)

from dyaug.data.transitions import Transitions

__all__ = ["EpisodeWithFinalObservation", "transitions_from_d3rlpy", "transitions_to_d3rlpy"]


@dataclasses.dataclass(frozen=True)
class EpisodeWithFinalObservation(Episode):
    """A d3rlpy ``Episode`` that also stores the true s' of its terminal step.

    ``final_observation`` is ``(obs_dim,)`` for a terminated episode and ``None`` otherwise; d3rlpy's
    buffers, transition pickers and algorithms ignore it (the picker still returns zeros at terminals).
    It survives ``ReplayBuffer.dump`` and ``ReplayBuffer.load(f, buffer,
    episode_cls=EpisodeWithFinalObservation)``; loading with d3rlpy's default ``Episode`` drops it.
    """

    final_observation: np.ndarray | None = None

    def serialize(self) -> dict[str, Any]:
        # d3rlpy's h5 writer stores arrays only: keep a (0 or 1, obs_dim) array.
        observations = np.asarray(self.observations)
        final = (
            np.zeros((0, *observations.shape[1:]), observations.dtype)
            if self.final_observation is None
            else np.asarray(self.final_observation)[None]
        )
        return {**super().serialize(), "final_observation": final}

    @classmethod
    def deserialize(cls, serialized: dict[str, Any]) -> EpisodeWithFinalObservation:
        final = serialized.get("final_observation")
        return cls(
            observations=serialized["observations"],
            actions=serialized["actions"],
            rewards=serialized["rewards"],
            terminated=bool(serialized["terminated"]),
            final_observation=None if final is None or len(final) == 0 else np.asarray(final[0]),
        )


def transitions_from_d3rlpy(buffer: ReplayBufferBase) -> Transitions:
    """All transitions held by a d3rlpy ``ReplayBuffer``/``MDPDataset``, episode by episode.

    Each field equals what ``BasicTransitionPicker`` returns for that transition (``next_actions``
    included: a_{t+1}, zero at terminal steps), except s' at terminal steps, which is the true one when
    the episode stores it (:class:`EpisodeWithFinalObservation`). Otherwise it is zero, as in d3rlpy, and
    one ``UserWarning`` says how many terminal transitions lack it. The last transition of an episode that
    did not terminate gets ``timeouts = 1``. Transitions a FIFO buffer already evicted are left out.
    """
    if not isinstance(buffer, ReplayBufferBase):
        raise TypeError(
            f"transitions_from_d3rlpy needs a d3rlpy ReplayBuffer or MDPDataset, got {type(buffer).__name__}."
        )
    if buffer.dataset_info.action_space != ActionSpace.CONTINUOUS:
        raise ValueError("the d3rlpy buffer has a discrete action space; dyaug handles continuous actions only.")
    episodes = [episode for episode in buffer.episodes if episode.transition_count > 0]
    if not episodes:
        raise ValueError("the d3rlpy buffer holds no episodes; there is nothing to convert.")
    # A FIFO buffer evicts the oldest transitions first; the first episode may be partly gone.
    evicted = sum(episode.transition_count for episode in episodes) - buffer.transition_count
    parts = [_episode_transitions(episode) for episode in episodes]
    parts[0] = {name: column[evicted:] for name, column in parts[0].items()}
    missing_final = sum(
        1 for episode in episodes if episode.terminated and getattr(episode, "final_observation", None) is None
    )
    if missing_final:
        warnings.warn(
            f"{missing_final} terminal transitions of this d3rlpy buffer have no stored s' (d3rlpy keeps "
            "none); their next_observations are zeros, as d3rlpy's transition picker returns. To keep the "
            "true s', load the data with Transitions.from_minari or build the buffer with "
            "transitions_to_d3rlpy.",
            UserWarning,
            stacklevel=2,
        )
    return Transitions(**{name: np.concatenate([part[name] for part in parts]) for name in parts[0]})


def transitions_to_d3rlpy(
    transitions: Transitions, *, env: gym.Env | None = None, fifo_limit: int | None = None
) -> ReplayBuffer:
    """A d3rlpy ``ReplayBuffer`` of :class:`EpisodeWithFinalObservation` episodes holding ``transitions``.

    Episodes are the runs of ``Transitions.episode_slices(contiguous=True)`` (split at flags and
    where ``next_observations``/``next_actions`` do not continue into the next row), so every transition is
    kept and ``BasicTransitionPicker`` returns it unchanged, with d3rlpy's zeros as s' and a' at terminal
    steps. A run that does not end in a terminal is a timeout episode whose padded last action is
    ``next_actions`` of its last row (zeros without ``next_actions``); a row flagged both terminal and
    timeout becomes terminal (d3rlpy has one flag). ``env`` only checks the sizes and is handed to d3rlpy;
    ``fifo_limit`` makes a ``FIFOBuffer`` (it must hold all transitions), else an ``InfiniteBuffer``.
    """
    if not isinstance(transitions, Transitions):
        raise TypeError(f"transitions_to_d3rlpy needs a Transitions, got {type(transitions).__name__}.")
    if env is not None:
        for role, space, size in (
            ("observation", env.observation_space, transitions.obs_dim),
            ("action", env.action_space, transitions.act_dim),
        ):
            if not isinstance(space, gym.spaces.Box) or space.shape != (size,):
                raise ValueError(f"env {role} space {space} does not match the transitions' size {size}.")
    if fifo_limit is not None and fifo_limit < len(transitions):
        raise ValueError(
            f"fifo_limit={fifo_limit} is smaller than the {len(transitions)} transitions, so d3rlpy "
            "would drop the oldest ones; raise the limit or slice the transitions first."
        )
    episodes = [
        _make_episode(transitions, rows)
        for rows in transitions.episode_slices(contiguous=True, match_next_actions=True)
    ]
    return ReplayBuffer(
        FIFOBuffer(fifo_limit) if fifo_limit is not None else InfiniteBuffer(),
        episodes=episodes,
        env=env,
        observation_signature=Signature(dtype=[np.dtype(np.float32)], shape=[(transitions.obs_dim,)]),
        action_signature=Signature(dtype=[np.dtype(np.float32)], shape=[(transitions.act_dim,)]),
        reward_signature=Signature(dtype=[np.dtype(np.float32)], shape=[(1,)]),
        # d3rlpy guesses "discrete" when the first episode's actions happen to be integers; never guess.
        action_space=ActionSpace.CONTINUOUS,
        action_size=transitions.act_dim,
    )


def _make_episode(transitions: Transitions, rows: slice) -> EpisodeWithFinalObservation:
    last = rows.stop - 1
    observations = transitions.observations[rows]
    actions = transitions.actions[rows]
    rewards = transitions.rewards[rows, None]
    if transitions.terminals[last] > 0:
        return EpisodeWithFinalObservation(
            observations,
            actions,
            rewards,
            terminated=True,
            final_observation=transitions.next_observations[last],
        )
    pad_action = transitions.next_actions[last] if transitions.next_actions is not None else np.zeros_like(actions[-1])
    return EpisodeWithFinalObservation(
        observations=np.concatenate([observations, transitions.next_observations[last : last + 1]]),
        actions=np.concatenate([actions, pad_action[None]]),
        rewards=np.concatenate([rewards, np.zeros((1, 1), np.float32)]),
        terminated=False,
    )


def _episode_transitions(episode: Any) -> dict[str, np.ndarray]:
    """The fields of an episode's ``transition_count`` (≥ 1) transitions as flat arrays."""
    observations = episode.observations
    if not isinstance(observations, np.ndarray) or observations.ndim != 2:
        raise ValueError(
            "dyaug handles flat vector observations only; this d3rlpy episode stores "
            f"{type(observations).__name__} observations."
        )
    rewards = np.asarray(episode.rewards)
    if rewards.ndim == 2 and rewards.shape[1] != 1:
        raise ValueError(f"d3rlpy rewards must be scalars per step, got shape {rewards.shape}.")
    n = episode.transition_count
    actions = np.asarray(episode.actions)
    obs_dim = observations.shape[1]
    if episode.terminated:
        final = getattr(episode, "final_observation", None)
        final = np.zeros((1, obs_dim), observations.dtype) if final is None else np.asarray(final)[None]
        next_observations = np.concatenate([observations[1:n], final])
        next_actions = np.concatenate([actions[1:n], np.zeros_like(actions[:1])])
    else:
        next_observations = observations[1 : n + 1]
        next_actions = actions[1 : n + 1]
    terminals = np.zeros(n, np.float32)
    timeouts = np.zeros(n, np.float32)
    (terminals if episode.terminated else timeouts)[n - 1 :] = 1.0
    return {
        "observations": observations[:n],
        "actions": actions[:n],
        "rewards": rewards.reshape(-1)[:n],
        "next_observations": next_observations,
        "terminals": terminals,
        "timeouts": timeouts,
        "next_actions": next_actions,
    }
