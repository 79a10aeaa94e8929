"""The batch of transitions every actor and critic loss in :mod:`dyaug.actors` reads."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import Tensor


@dataclass(frozen=True)
class TransitionBatch:
    """Transitions as float tensors on one device, in the units the networks see.

    - ``observations``, ``next_observations``: ``(B, obs_dim)`` (already normalised, if the caller normalises);
    - ``actions``: ``(B, act_dim)`` in [-1, 1];
    - ``rewards``: ``(B,)`` (already scaled, if the caller scales them);
    - ``terminals``: ``(B,)``, 1 where s' is terminal (no bootstrap), 0 otherwise (timeouts are 0);
    - ``discounts``: ``(B,)``, the discount of the bootstrap, ``gamma ** k`` for a k-step transition.

    Shapes are checked (no host synchronisation); values are not.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    terminals: Tensor
    discounts: Tensor

    def __post_init__(self) -> None:
        size = self.observations.shape[0]
        for name in ("observations", "actions", "next_observations"):
            value = getattr(self, name)
            if value.ndim != 2 or value.shape[0] != size:
                raise ValueError(f"TransitionBatch.{name} must be shaped ({size}, dim), got {tuple(value.shape)}.")
        if self.next_observations.shape != self.observations.shape:
            raise ValueError(
                f"TransitionBatch.next_observations {tuple(self.next_observations.shape)} must match observations "
                f"{tuple(self.observations.shape)}."
            )
        for name in ("rewards", "terminals", "discounts"):
            value = getattr(self, name)
            if value.shape != (size,):
                raise ValueError(
                    f"TransitionBatch.{name} must be shaped ({size},), got {tuple(value.shape)}; "
                    "flatten it with .reshape(-1)."
                )

    def __len__(self) -> int:
        return self.observations.shape[0]

    def head(self, n: int) -> TransitionBatch:
        """The first ``n`` rows (all of them when the batch is smaller): a uniform sub-batch of a uniform batch."""
        return TransitionBatch(**{f.name: getattr(self, f.name)[:n] for f in fields(self)})

    def bootstrap_target(self, next_value: Tensor) -> Tensor:
        """The TD target ``y = r + discount (1 - terminal) next_value`` (``(B,)``)."""
        return self.rewards + self.discounts * (1.0 - self.terminals) * next_value
