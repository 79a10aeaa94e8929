"""Which generated trajectories to keep, judged by their predicted returns (DyDiff, arXiv 2405.19189, §6 of the
reimplementation notes).

A filter maps the predicted returns ``R`` of B trajectories to the sorted indices of those it keeps. Both of
DyDiff's filters keep ``k = max(1, ⌊ρ B⌋)`` of them:

- :class:`Hardmax`: the k largest returns;
- :class:`Softmax`: k drawn without replacement with probabilities ∝ exp(z / T), z = (R − mean R)/(std R + 1e-6).

Sampling without replacement uses the Gumbel-top-k trick (Kool, van Hoof & Welling 2019, "Stochastic Beams and
Where to Find Them", arXiv 1903.06059): the k largest ``z/T − log E_i``, E_i ~ Exp(1), are a draw of k items
without replacement, each next item with probability ∝ exp(z_i/T) among those left. Working with logits
instead of probabilities needs neither the official float128 arithmetic nor its floor
p ← p(1 − 1e-6) + 1e-6/B against zero probabilities, and as T → 0 it becomes exactly :class:`Hardmax`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class TrajectoryFilter(Protocol):
    """``keep = f(returns, generator)``: ``returns`` (B,) float -> sorted int64 indices (on its device)."""

    def __call__(self, returns: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


def kept_count(n: int, keep_fraction: float) -> int:
    """``max(1, ⌊ρ n⌋)`` for ``n >= 1`` (0 for ``n = 0``): how many of n trajectories a filter keeps."""
    return min(n, max(1, math.floor(keep_fraction * n)))


def _check_fraction(owner: str, keep_fraction: float) -> None:
    if not (isinstance(keep_fraction, int | float) and 0 < keep_fraction <= 1):
        raise ValueError(
            f"{owner}.keep_fraction must lie in (0, 1] (the share of trajectories kept), got {keep_fraction!r}."
        )


@dataclasses.dataclass(frozen=True)
class KeepAll:
    """Keep every trajectory."""

    def __call__(self, returns: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.arange(len(returns), device=returns.device)


@dataclasses.dataclass(frozen=True)
class Hardmax:
    """Keep the ``max(1, ⌊keep_fraction · B⌋)`` trajectories of largest predicted return (ties: any of them)."""

    keep_fraction: float = 0.6

    def __post_init__(self) -> None:
        _check_fraction("Hardmax", self.keep_fraction)

    def __call__(self, returns: Tensor, generator: torch.Generator | None = None) -> Tensor:
        k = kept_count(len(returns), self.keep_fraction)
        return torch.topk(returns, k).indices.sort().values


@dataclasses.dataclass(frozen=True)
class Softmax:
    """Draw ``max(1, ⌊keep_fraction · B⌋)`` trajectories without replacement, with probability ∝ exp(z/T) for
    z the z-scored returns and T = ``temperature`` (Gumbel-top-k; see the module docstring)."""

    keep_fraction: float = 0.6
    temperature: float = 0.05

    def __post_init__(self) -> None:
        _check_fraction("Softmax", self.keep_fraction)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(
                f"Softmax.temperature must be a finite number > 0, got {self.temperature!r}; "
                "use Hardmax for the T -> 0 limit."
            )

    def __call__(self, returns: Tensor, generator: torch.Generator | None = None) -> Tensor:
        k = kept_count(len(returns), self.keep_fraction)
        r = returns.double()
        z = (r - r.mean()) / (r.std(correction=0) + 1e-6)
        exponential = torch.empty_like(r).exponential_(generator=generator)
        return torch.topk(z / self.temperature - exponential.log(), k).indices.sort().values


FILTERS: dict[str, Callable[[float, float], TrajectoryFilter]] = {
    "none": lambda keep_fraction, temperature: KeepAll(),
    "hardmax": lambda keep_fraction, temperature: Hardmax(keep_fraction),
    "softmax": lambda keep_fraction, temperature: Softmax(keep_fraction, temperature),
}
"""Filter names (``DyDiffConfig.filter``) and how each is built from ``(keep_fraction, temperature)``."""


def make_filter(name: str, keep_fraction: float, temperature: float) -> TrajectoryFilter:
    """The filter called ``name`` in :data:`FILTERS`; ``ValueError`` for another name."""
    if name not in FILTERS:
        raise ValueError(
            f"unknown trajectory filter {name!r}; choose one of {sorted(FILTERS)} or pass a filter object."
        )
    return FILTERS[name](keep_fraction, temperature)
