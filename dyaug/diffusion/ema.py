"""Exponential moving average of a model's weights, with the schedule of ``ema_pytorch`` used by SynthER.

SynthER (arXiv 2303.06614, §4 of its training code) samples from ``ema_pytorch.EMA(beta=0.995,
update_every=10, update_after_step=100)``; :class:`EMA` reproduces that schedule exactly (see ``update``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class EMA(Generic[ModuleT]):
    """An averaged copy ``module`` of a model: ``theta_ema <- d_k theta_ema + (1 - d_k) theta``.

    ``update(model)`` is meant to be called after every optimizer step; call ``n`` (0-based) acts only when
    ``n % update_every == 0``:

    - ``n <= warmup_steps``: ``theta_ema <- theta`` (exact copy);
    - otherwise the decay is ``d_k = min(decay, 1 - (1 + k)^(-2/3))`` with ``k = n - warmup_steps``
      (``ema_pytorch``'s ``inv_gamma=1, power=2/3``), so early averages forget their start quickly.

    Buffers are copied, not averaged. ``module`` is in eval mode and never requires grad.
    """

    def __init__(self, model: ModuleT, decay: float = 0.995, update_every: int = 10, warmup_steps: int = 100):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        if update_every < 1 or warmup_steps < 0:
            raise ValueError(
                f"EMA needs update_every >= 1 and warmup_steps >= 0, got {update_every} and {warmup_steps}."
            )
        self.decay, self.update_every, self.warmup_steps = decay, update_every, warmup_steps
        self.module: ModuleT = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0

    def decay_at(self, n: int) -> float:
        """The decay applied by call ``n`` (0 means an exact copy)."""
        if n <= self.warmup_steps:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + n - self.warmup_steps) ** (-2.0 / 3.0))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into ``module`` (see the class docstring for the schedule)."""
        n, self.step = self.step, self.step + 1
        if n % self.update_every:
            return
        ema_params, params = _matching(self.module.parameters(), model.parameters(), "parameters")
        ema_buffers, buffers = _matching(self.module.buffers(), model.buffers(), "buffers")
        decay = self.decay_at(n)
        if decay == 0.0:
            torch._foreach_copy_(ema_params, params)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors: ``module.<name>`` for the averaged weights, ``step`` for the call counter."""
        state = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        state["step"] = torch.tensor(self.step, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_dict`; raises ``ValueError`` when the step counter is missing."""
        if "step" not in state:
            raise ValueError("EMA state has no 'step' entry; pass a dict produced by EMA.state_dict().")
        prefix = "module."
        self.module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        self.step = int(state["step"])


def _matching(ours: Iterable[Tensor], theirs: Iterable[Tensor], what: str) -> tuple[list[Tensor], list[Tensor]]:
    a, b = list(ours), list(theirs)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError(f"EMA.update got a model whose {what} do not match the averaged copy's; pass the same model.")
    return a, b
