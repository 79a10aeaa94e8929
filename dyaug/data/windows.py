"""Fixed-length trajectory windows for trajectory diffusion models.

DyDiff (Zhao et al. 2024, arXiv:2405.19189) models windows of H consecutive rows ``[s_t, a_t]`` of one
episode. :func:`make_windows` cuts every ``stride``-th window of length H from each episode; an episode
shorter than H yields a single window padded at the end, and ``mask`` marks the real rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dyaug.data.transitions import Transitions


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryWindows:
    """M windows of H steps cut from the episodes of a :class:`Transitions`.

    - ``observations (M, H, obs_dim)``, ``actions (M, H, act_dim)``, ``rewards (M, H)``,
      ``terminals (M, H)``: float32, row ``j`` of window ``m`` is step ``start[m] + j`` of episode
      ``episode[m]``;
    - ``mask (M, H)`` bool: True on real rows, False on padding. Padding repeats the episode's last row
      (all fields, including its reward and terminal flag), so padded windows stay inside the data range;
    - ``episode (M,)`` int64: index into ``transitions.episode_slices()``;
    - ``start (M,)`` int64: time step of the window's first row within its episode.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    mask: np.ndarray
    episode: np.ndarray
    start: np.ndarray

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.observations.shape[1])

    def states_actions(self) -> np.ndarray:
        """The rows ``[s_t, a_t]`` stacked along the last axis: ``(M, H, obs_dim + act_dim)`` float32."""
        return np.concatenate([self.observations, self.actions], axis=-1)


def make_windows(transitions: Transitions, horizon: int, stride: int = 1) -> TrajectoryWindows:
    """Cut every ``stride``-th window of ``horizon`` steps from each episode of ``transitions``.

    An episode of length L ≥ H gives the windows starting at steps ``0, stride, 2·stride, … ≤ L − H``
    (``⌊(L − H) / stride⌋ + 1`` windows); an episode with L < H gives one window starting at step 0, padded
    by repeating its last row. Episodes are ``transitions.episode_slices()`` (a trailing run without an
    end flag counts as an episode). The index math is vectorised over all windows.

    Memory: the windows are materialised, ``M · H · (obs_dim + act_dim + 2) · 4`` bytes plus the mask.
    """
    if not isinstance(transitions, Transitions):
        raise TypeError(f"make_windows needs a Transitions, got {type(transitions).__name__}.")
    for name, value in (("horizon", horizon), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"make_windows: {name} must be an int >= 1, got {value!r}.")
    if len(transitions) == 0:
        raise ValueError("make_windows got an empty Transitions; there is nothing to cut windows from.")

    slices = transitions.episode_slices()
    offsets = np.array([s.start for s in slices], dtype=np.int64)
    lengths = np.array([s.stop - s.start for s in slices], dtype=np.int64)
    counts = np.where(lengths >= horizon, (lengths - horizon) // stride + 1, 1)

    episode = np.repeat(np.arange(len(slices), dtype=np.int64), counts)
    first_window = np.cumsum(counts) - counts
    start = (np.arange(len(episode), dtype=np.int64) - np.repeat(first_window, counts)) * stride
    steps = start[:, None] + np.arange(horizon, dtype=np.int64)[None, :]  # (M, H) time within episode
    episode_length = lengths[episode][:, None]
    mask = steps < episode_length
    rows = offsets[episode][:, None] + np.minimum(steps, episode_length - 1)

    return TrajectoryWindows(
        observations=transitions.observations[rows],
        actions=transitions.actions[rows],
        rewards=transitions.rewards[rows],
        terminals=transitions.terminals[rows],
        mask=mask,
        episode=episode,
        start=start,
    )
