"""Lazily indexed state-action windows ``[s_t, a_t]_{t=k..k+H-1}`` for DyDiff's trajectory model.

Zhao et al. (2024), "Diffusion Models for Policy-Consistent Trajectory Generation" (arXiv 2405.19189), §1 of
the reimplementation notes: an episode of length L >= H gives every stride-1 window (L - H + 1 of them), an
episode with L < H one window padded at its end. Only a ``(M, 2)`` index of (first row, episode stop) is kept;
a batch of windows is gathered from the flat rows when it is drawn, so a 1M-transition dataset never has its
~M·H window rows materialised.

Padding (a deliberate deviation): the official code pads short episodes with the constant -1 - 1e-4 in
normalised space and learns the padding as data. Here padded steps repeat the episode's last row and are
excluded from the loss through a mask, so the model never learns to generate padding. The official code also
drops the rows after the data's last end flag; here that unfinished run is an episode like the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from dyaug.data.transitions import Transitions
from dyaug.validation import check_int


@dataclasses.dataclass(frozen=True)
class WindowIndex:
    """Window ``m`` covers rows ``first[m] .. first[m] + H - 1`` of the flat data, rows from ``stop[m]`` on
    (the next episode) being padding.

    ``descriptors()`` packs the index as a float64 ``(M, 2)`` tensor ``[first, stop]`` (integers are exact in
    float64 up to 2^53), the row format :func:`dyaug.diffusion.training.train` draws batches from.
    """

    first: np.ndarray
    stop: np.ndarray
    horizon: int

    def __post_init__(self) -> None:
        if self.first.shape != self.stop.shape or self.first.ndim != 1 or len(self.first) == 0:
            raise ValueError(f"WindowIndex needs 1-D first/stop of one non-zero length, got {self.first.shape}.")
        if not (self.first < self.stop).all():
            raise ValueError("WindowIndex needs first < stop for every window (a window holds at least one row).")

    @classmethod
    def of(cls, transitions: Transitions, horizon: int) -> WindowIndex:
        """Every window of ``horizon`` steps of the episodes of ``transitions``.

        Episodes are the contiguous runs of :meth:`Transitions.episode_slices` (``contiguous=True``: a run
        also ends where ``next_observations[i] != observations[i + 1]``), so no window spans two
        trajectories even in data whose end flags are missing.
        """
        check_int("horizon", horizon, numpy=False)
        slices = transitions.episode_slices(contiguous=True)
        starts = np.array([s.start for s in slices], dtype=np.int64)
        stops = np.array([s.stop for s in slices], dtype=np.int64)
        counts = np.maximum(stops - starts - horizon + 1, 1)
        episode = np.repeat(np.arange(len(slices)), counts)
        offset = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return cls(first=starts[episode] + offset, stop=stops[episode], horizon=horizon)

    def __len__(self) -> int:
        return int(self.first.shape[0])

    def complete(self) -> np.ndarray:
        """``first`` of the windows whose H steps all lie in their episode (no padding)."""
        return self.first[self.first + self.horizon <= self.stop]

    def descriptors(self, device: torch.device | str) -> Tensor:
        """``(M, 2)`` float64 ``[first, stop]`` on ``device``."""
        return torch.from_numpy(np.stack([self.first, self.stop], axis=1).astype(np.float64)).to(device)

    def gather(self, rows: Tensor, descriptors: Tensor) -> tuple[Tensor, Tensor]:
        """Windows ``(B, H, D)`` of ``rows (N, D)`` for a batch of ``descriptors (B, 2)``, and the ``(B, H, 1)``
        bool mask of real (not padded) steps. Padded steps repeat the episode's last row."""
        first, stop = descriptors.long().unbind(dim=1)
        steps = first[:, None] + torch.arange(self.horizon, device=rows.device)[None, :]
        valid = steps < stop[:, None]
        steps = torch.minimum(steps, stop[:, None] - 1)
        return rows[steps], valid[..., None]
