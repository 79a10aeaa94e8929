"""What a diffusion network is conditioned on, and the network seam shared by every schedule and sampler.

Two conditioning mechanisms, kept apart:

- ``cond``: a tensor passed to the network as an extra input, ``net(x, noise_level, cond)``;
- :class:`Condition`: hard replacement of known entries of ``x`` by their clean values (inpainting;
  DyDiff's ``inject``, arXiv 2405.19189), applied by the sampler after every change of x.

The seam helpers below (:func:`network_output`, :func:`sampling_device`, ...) hold the argument checks that
the EDM and VP code share.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dyaug.device import resolve_device
from dyaug.validation import check_int

Network = Callable[..., Tensor]
"""The seam: ``net(x, noise_level, cond=None) -> tensor shaped like x``, ``noise_level`` a ``(B,)`` tensor."""


@dataclass(frozen=True)
class Condition:
    """Known entries of a sample: ``x <- where(mask, values, x)``.

    ``mask`` is boolean (True = given) and ``values`` holds the clean values in the model's (normalised)
    space; both must broadcast to the sample shape. Replacement samples the exact conditional distribution
    only with a denoiser trained with the same entries clean in its input (``edm_loss(..., given=mask)``,
    DyDiff §2); with an unconditional denoiser it is the usual approximate "replacement" inpainting.
    """

    mask: Tensor
    values: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.mask, Tensor) or self.mask.dtype != torch.bool:
            raise TypeError(
                f"Condition.mask must be a bool tensor, got {_describe(self.mask)}; pass e.g. `mask.bool()`."
            )
        if not isinstance(self.values, Tensor) or not self.values.is_floating_point():
            raise TypeError(
                f"Condition.values must be a floating-point tensor, got {_describe(self.values)}; "
                "pass e.g. `values.float()`."
            )
        try:
            torch.broadcast_shapes(self.mask.shape, self.values.shape)
        except RuntimeError as err:
            raise ValueError(
                f"Condition.mask {tuple(self.mask.shape)} and values {tuple(self.values.shape)} do not "
                "broadcast together; give them the sample's shape or size-1 dimensions."
            ) from err

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless mask and values broadcast to exactly ``shape``."""
        shape = torch.Size(shape)
        try:
            broadcast = torch.broadcast_shapes(self.mask.shape, self.values.shape, shape)
        except RuntimeError:
            broadcast = None
        if broadcast != shape:
            raise ValueError(
                f"Condition.mask {tuple(self.mask.shape)} / values {tuple(self.values.shape)} do not "
                f"broadcast to the sample shape {tuple(shape)}; build them with that shape (or size-1 dims)."
            )

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Condition:
        """The same condition with values of ``dtype`` and both tensors on ``device``."""
        return Condition(self.mask.to(device), self.values.to(device=device, dtype=dtype))

    def apply(self, x: Tensor) -> Tensor:
        """``torch.where(mask, values, x)``: the given entries replaced by their clean values."""
        self.check_shape(x.shape)
        return torch.where(self.mask, self.values.to(x.dtype), x)


def network_output(net: Network, x: Tensor, noise_level: Tensor, cond: Tensor | None) -> Tensor:
    """``net(x, noise_level, cond)``, checked to have the shape of ``x`` (a shape check, no host sync)."""
    out = net(x, noise_level, cond)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the network returned {got} for an input of shape {tuple(x.shape)}; a diffusion network "
            "must return a tensor shaped like its input x."
        )
    return out


def sampling_device(net: object, device: torch.device | str | None) -> torch.device:
    """``device`` when given, else the device of the first parameter or buffer of ``net``."""
    if device is not None:
        return resolve_device(device)
    if isinstance(net, nn.Module):
        for tensor in itertools.chain(net.parameters(), net.buffers()):
            return tensor.device
    raise ValueError(
        f"cannot tell the sampling device: {type(net).__name__} holds no parameters or buffers; "
        "pass device=... to sample()."
    )


def check_n_steps(owner: str, n_steps: object) -> None:
    """Raise ``ValueError`` unless ``n_steps`` is an integer >= 1 (``owner`` names the argument's owner)."""
    check_int(f"{owner} n_steps", n_steps, numpy=False)


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """A ``(B,)`` tensor viewed as ``(B, 1, ..., 1)`` to broadcast against ``like`` of shape ``(B, ...)``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def sample_shape(shape: Sequence[int]) -> torch.Size:
    """``shape`` as a ``torch.Size``, checked to be a non-empty sequence of positive integers."""
    dims = tuple(shape)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"shape must be a non-empty sequence of positive integers (batch first), got {shape!r}.")
    return torch.Size(dims)


def _describe(obj: object) -> str:
    return f"a {obj.dtype} tensor" if isinstance(obj, Tensor) else type(obj).__name__
