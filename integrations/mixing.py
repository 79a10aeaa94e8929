"""What the d3rlpy and SB3 synthetic replay buffers share: the real/synthetic split of a batch and the checks
on a synthetic set.

SynthER (Lu et al. 2023, "Synthetic Experience Replay") trains on batches holding a fixed share of real
transitions: 50 % online, 0 % offline (real data replaced by synthetic data).

One rule for every buffer (:func:`batch_split`): a batch holds ``round(real_ratio · batch_size)`` real rows and
the rest synthetic, both drawn uniformly with replacement, whatever the size of the synthetic set; only while
there is no synthetic row at all (an online generator before its first samples) is the batch all real.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from dyaug.data.shards import ShardedTransitions
from dyaug.data.transitions import Transitions

__all__ = ["RealRatioMixin", "batch_split", "check_real_ratio", "check_synthetic", "real_batch_size"]


def check_real_ratio(real_ratio: float) -> float:
    """``real_ratio`` as a float in [0, 1]; anything else raises (``TypeError`` for a non-number)."""
    if isinstance(real_ratio, bool) or not isinstance(real_ratio, numbers.Real):
        raise TypeError(f"real_ratio must be a number in [0, 1], got {type(real_ratio).__name__}.")
    if not 0.0 <= float(real_ratio) <= 1.0:
        raise ValueError(f"real_ratio must lie in [0, 1] (0: synthetic only, 1: real only), got {real_ratio}.")
    return float(real_ratio)


def real_batch_size(batch_size: int, real_ratio: float) -> int:
    """Real rows of a batch: ``round(real_ratio · batch_size)``, halves rounded up; the rest is synthetic."""
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}.")
    return min(batch_size, math.floor(real_ratio * batch_size + 0.5))


def batch_split(batch_size: int, real_ratio: float, synthetic_size: int) -> tuple[int, int]:
    """``(real rows, synthetic rows)`` of a batch under the module's rule."""
    n_real = real_batch_size(batch_size, real_ratio) if synthetic_size > 0 else batch_size
    return n_real, batch_size - n_real


def check_synthetic(
    transitions: Transitions | ShardedTransitions | str | Path, obs_dim: int, act_dim: int
) -> Transitions:
    """``transitions`` (a set on disk, a :class:`~dyaug.data.shards.ShardedTransitions` or its directory, is read
    into memory) if it is non-empty with the real data's observation and action sizes; otherwise a
    ``TypeError``/``ValueError`` that names the problem."""
    if isinstance(transitions, str | Path):
        transitions = ShardedTransitions(transitions)
    if isinstance(transitions, ShardedTransitions):
        transitions = transitions.load()
    if not isinstance(transitions, Transitions):
        raise TypeError(
            f"synthetic data must be a dyaug Transitions, got {type(transitions).__name__}; "
            "build one with Transitions(observations, actions, rewards, next_observations, terminals, timeouts)."
        )
    if len(transitions) == 0:
        raise ValueError("the synthetic Transitions hold no rows; generate some (e.g. SynthER.sample(n)).")
    if (transitions.obs_dim, transitions.act_dim) != (obs_dim, act_dim):
        raise ValueError(
            f"synthetic transitions have observation size {transitions.obs_dim} and action size "
            f"{transitions.act_dim}, but the buffer's real data have {obs_dim} and {act_dim}; generate the "
            "synthetic data from this buffer's data."
        )
    return transitions


class RealRatioMixin:
    """A validated ``real_ratio`` property for the buffers: the share of real rows in each batch, in [0, 1]."""

    _real_ratio: float

    @property
    def real_ratio(self) -> float:
        """Share of real rows in each batch, in [0, 1]."""
        return self._real_ratio

    @real_ratio.setter
    def real_ratio(self, value: float) -> None:
        self._real_ratio = check_real_ratio(value)
