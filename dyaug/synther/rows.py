"""SynthER's flat rows ``x = [s | a | r | s' | terminal]`` and the post-processing of generated rows.

Lu et al. (2023), "Synthetic Experience Replay" (arXiv 2303.06614) model the joint p(s, a, r, s', d) of
single transitions as one vector of size D = 2 d_s + d_a + 2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dyaug.data.coerce import ActionBounds
from dyaug.data.transitions import Transitions


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """Column layout of a row: ``s`` (obs_dim), ``a`` (act_dim), ``r`` (1), ``s'`` (obs_dim), ``terminal`` (1).

    With ``residual`` the s' block holds the change Δ = s' − s instead (a deviation from the paper, which models
    s' itself): Δ is small and centred where s' is a near copy of s, and s' = s + Δ is rebuilt after sampling,
    so a generated transition's state change is modelled directly rather than as the difference of two large,
    independently generated vectors.
    """

    obs_dim: int
    act_dim: int
    residual: bool = False
    joint: bool = True

    @property
    def dim(self) -> int:
        """D = 2 obs_dim + act_dim + 2 (``joint=False``: obs_dim + act_dim, rows [s, a] only)."""
        return 2 * self.obs_dim + self.act_dim + 2 if self.joint else self.obs_dim + self.act_dim

    @property
    def terminal_column(self) -> int | None:
        return self.dim - 1 if self.joint else None

    def encode(self, transitions: Transitions) -> np.ndarray:
        """``(N, D)`` float32 rows of ``transitions`` (timeouts and next actions are not modelled)."""
        if (transitions.obs_dim, transitions.act_dim) != (self.obs_dim, self.act_dim):
            raise ValueError(
                f"these transitions have (obs_dim, act_dim) = ({transitions.obs_dim}, {transitions.act_dim}) but "
                f"the layout is ({self.obs_dim}, {self.act_dim}); use data of the same spaces."
            )
        t = transitions
        if not self.joint:
            return np.concatenate([t.observations, t.actions], axis=1)
        nxt = t.next_observations - t.observations if self.residual else t.next_observations
        return np.concatenate([t.observations, t.actions, t.rewards[:, None], nxt, t.terminals[:, None]], axis=1)

    def decode(self, rows: np.ndarray, bounds: ActionBounds) -> Transitions:
        """Generated rows as :class:`Transitions`, post-processed (both are deviations from the official code):

        terminal = 1[x_terminal > 0.5] and a = clip(a, bounds.low, bounds.high); timeouts = 0 (a synthetic
        transition ends no recorded episode).
        """
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be shaped (N, {self.dim}) for this layout, got {rows.shape}.")
        if not self.joint:
            raise ValueError("rows of (s, a) only carry no r, s' or terminal; label them (SynthER labels='models').")
        o, a = self.obs_dim, self.act_dim
        terminals = (rows[:, -1] > 0.5).astype(np.float32)
        nxt = rows[:, o + a + 1 : 2 * o + a + 1]
        return Transitions(
            observations=rows[:, :o],
            actions=np.clip(rows[:, o : o + a], bounds.low, bounds.high),
            rewards=rows[:, o + a],
            next_observations=rows[:, :o] + nxt if self.residual else nxt,
            terminals=terminals,
            timeouts=np.zeros_like(terminals),
        )


@dataclasses.dataclass(frozen=True)
class DataRange:
    """Per-column range ``[low, high]`` of the training rows, used to reject generated outliers.

    A row is outside at tolerance k when some checked column j has x_j < low_j − k (high_j − low_j) or
    x_j > high_j + k (high_j − low_j). Unchecked columns (``checked`` False): the terminal flag (it is
    thresholded, not ranged) and constant columns (no range to scale k by).
    """

    low: np.ndarray
    high: np.ndarray
    checked: np.ndarray

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        checked = np.asarray(self.checked, bool)
        if not (low.ndim == 1 and low.shape == high.shape == checked.shape) or (low > high).any():
            raise ValueError(f"DataRange needs 1-D low <= high and checked of one length, got {low}, {high}.")
        for name, value in (("low", low), ("high", high), ("checked", checked)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, rows: np.ndarray, layout: RowLayout) -> DataRange:
        low, high = rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64)
        checked = high > low
        if layout.terminal_column is not None:
            checked[layout.terminal_column] = False
        return cls(low, high, checked)

    def outside(self, rows: np.ndarray, k: float) -> np.ndarray:
        """``(N, D)`` bool: entry (i, j) is True when row i is outside the range in checked column j."""
        if not (np.isfinite(k) and k >= 0):
            raise ValueError(f"the rejection tolerance k must be a finite number >= 0, got {k!r}.")
        margin = k * (self.high - self.low)
        return ((rows < self.low - margin) | (rows > self.high + margin)) & self.checked
