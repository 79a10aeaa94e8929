"""Where the training data lies, so that generated trajectories that leave it are cut instead of poisoning a learner.

A model rolled out far from its data extrapolates: in one check (a never-terminating task whose observation holds
nearly constant goal coordinates), a small DyDiff moved those columns by ten of the data's standard deviations,
its reward model then predicted rewards four orders of magnitude outside the data's range, and TD3+BC trained on
them reached a critic loss of 2e8 without a warning. :class:`DataSupport` holds the data's per-dimension state
range, reward range and range of H-step returns; the rollout engine

- cuts each trajectory before its first state outside [low − m·span, high + m·span] in any dimension (m the
  margin; a constant dimension allows no deviation at all),
- clips predicted rewards to [r_low − m·span_r, r_high + m·span_r],

and :class:`~dyaug.dydiff.generator.DyDiff` counts both and warns once when most of a rollout is cut or when the
predicted returns leave the data's return range by more than its span.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dyaug.data.transitions import Transitions


@dataclasses.dataclass(frozen=True, eq=False)
class DataSupport:
    """Per-dimension state range ``state_low``/``state_high`` (obs_dim), reward range, range of the returns of
    ``horizon``-step windows, and the relative ``margin`` allowed beyond each range."""

    state_low: np.ndarray
    state_high: np.ndarray
    reward_low: float
    reward_high: float
    return_low: float
    return_high: float
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"the support margin must be a finite number >= 0, got {self.margin}.")
        object.__setattr__(self, "_tensors", {})  # bounds per device, built once

    @classmethod
    def fit(cls, data: Transitions, horizon: int, margin: float = 0.1) -> DataSupport:
        states = np.concatenate([data.observations, data.next_observations]).astype(np.float64)
        low, high = _window_returns(data, horizon)
        return cls(
            states.min(axis=0),
            states.max(axis=0),
            float(data.rewards.min()),
            float(data.rewards.max()),
            low,
            high,
            margin,
        )

    def _bounds(self, device: torch.device) -> tuple[Tensor, Tensor]:
        cache: dict[torch.device, tuple[Tensor, Tensor]] = self._tensors  # type: ignore[attr-defined]
        if device not in cache:
            span = self.state_high - self.state_low
            low = torch.tensor(self.state_low - self.margin * span, dtype=torch.float32, device=device)
            high = torch.tensor(self.state_high + self.margin * span, dtype=torch.float32, device=device)
            cache[device] = (low, high)
        return cache[device]

    def inside(self, states: Tensor) -> Tensor:
        """bool ``(...)``: every dimension of each state ``(..., obs_dim)`` within its range and margin."""
        low, high = self._bounds(states.device)
        return ((states >= low) & (states <= high)).all(dim=-1)

    @property
    def reward_bounds(self) -> tuple[float, float]:
        span = self.reward_high - self.reward_low
        return self.reward_low - self.margin * span, self.reward_high + self.margin * span

    def clip_rewards(self, rewards: Tensor) -> tuple[Tensor, Tensor]:
        """``(rewards clipped to reward_bounds, how many were clipped)`` (the count stays on the device)."""
        low, high = self.reward_bounds
        clipped = rewards.clamp(low, high)
        return clipped, (clipped != rewards).sum()

    def returns_far_outside(self, returns: np.ndarray) -> bool:
        """Whether the mean of ``returns`` lies more than one span of the data's window returns outside them."""
        span = max(self.return_high - self.return_low, 1e-8)
        mean = float(np.mean(returns)) if len(returns) else 0.0
        return mean < self.return_low - span or mean > self.return_high + span

    def state(self) -> dict[str, Any]:
        return {
            "state_low": self.state_low.tolist(),
            "state_high": self.state_high.tolist(),
            "reward_low": self.reward_low,
            "reward_high": self.reward_high,
            "return_low": self.return_low,
            "return_high": self.return_high,
            "margin": self.margin,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], margin: float | None = None) -> DataSupport:
        return cls(
            np.asarray(state["state_low"], np.float64),
            np.asarray(state["state_high"], np.float64),
            float(state["reward_low"]),
            float(state["reward_high"]),
            float(state["return_low"]),
            float(state["return_high"]),
            float(state["margin"] if margin is None else margin),
        )


def _window_returns(data: Transitions, horizon: int) -> tuple[float, float]:
    """Min and max of the reward sums of every window of up to ``horizon`` consecutive steps of an episode."""
    low, high = np.inf, -np.inf
    for rows in data.episode_slices():
        cumulative = np.concatenate([[0.0], np.cumsum(data.rewards[rows], dtype=np.float64)])
        n = len(cumulative) - 1
        width = min(horizon, n)
        sums = cumulative[width:] - cumulative[: n + 1 - width]
        low, high = min(low, float(sums.min())), max(high, float(sums.max()))
    return low, high
