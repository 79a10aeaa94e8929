"""Noise-level embeddings and the input checks shared by every denoiser network.

A network in dyaug is any ``nn.Module`` called as ``net(x, noise_level, cond=None)`` returning a tensor
shaped like ``x``; ``noise_level`` is a ``(B,)`` tensor (EDM: ``c_noise = ln(sigma)/4``; VP-SDE: ``t``;
discrete VP: the step index). Each network embeds it as ``Linear -> activation -> Linear`` on top of one of
two fixed feature maps:

- :class:`FourierFeatures`: random frequencies ``w ~ N(0, scale^2)``, ``[t?, sin 2πtw, cos 2πtw]``
  (SynthER, arXiv 2303.06614, with ``t`` included and scale 1; IDQL/SRPO, arXiv 2304.10573 / 2310.07297,
  without ``t`` and scale 30);
- :class:`SinusoidalFeatures`: the transformer position code ``[sin t f_i, cos t f_i]`` with
  ``f_i = 10000^(-i/(half-1))`` (Diffusion-QL, arXiv 2208.06193; Janner et al.'s temporal U-Net,
  arXiv 2205.09991).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """Random Fourier features ``[t, sin(2π t w), cos(2π t w)]`` with fixed ``w ~ N(0, scale^2 I)``.

    ``w`` has ``n_freqs`` entries, is drawn once from the global torch RNG at construction and is a
    (saved, non-trainable) buffer. Output width: ``2 * n_freqs + include_input``.
    """

    freqs: Tensor  # a registered buffer

    def __init__(self, n_freqs: int, scale: float = 1.0, include_input: bool = False) -> None:
        super().__init__()
        if n_freqs < 1:
            raise ValueError(f"FourierFeatures needs n_freqs >= 1, got {n_freqs}.")
        self.register_buffer("freqs", torch.randn(n_freqs) * scale)
        self.include_input = include_input
        self.out_features = 2 * n_freqs + int(include_input)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t[:, None] * self.freqs[None, :]
        parts = [t[:, None]] if self.include_input else []
        return torch.cat([*parts, angles.sin(), angles.cos()], dim=-1)


class SinusoidalFeatures(nn.Module):
    """Sinusoidal code ``[sin(t f_i), cos(t f_i)]``, ``f_i = 10000^(-i/(dim/2 - 1))``, ``i < dim/2``."""

    freqs: Tensor  # a registered buffer

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalFeatures needs an even dim >= 4, got {dim}.")
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)))
        self.out_features = dim

    def forward(self, t: Tensor) -> Tensor:
        angles = t[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class NoiseLevelEmbedding(nn.Sequential):
    """``e = Linear(hidden -> out)(act(Linear(features -> hidden)(features(t))))``."""

    def __init__(
        self,
        features: FourierFeatures | SinusoidalFeatures,
        hidden: int,
        out: int,
        activation: type[nn.Module],
    ) -> None:
        super().__init__(features, nn.Linear(features.out_features, hidden), activation(), nn.Linear(hidden, out))


def checked_inputs(
    name: str, x: Tensor, noise_level: Tensor, cond: Tensor | None, *, x_dim: int, cond_dim: int
) -> Tensor:
    """Validate a network call and return ``noise_level`` as a ``(B,)`` tensor of ``x``'s dtype.

    ``x`` must end in ``x_dim``; ``noise_level`` must be ``(B,)`` (a 0-d tensor is broadcast to the batch);
    ``cond`` must be ``(B, cond_dim)`` when ``cond_dim > 0`` and ``None`` otherwise. Shape checks only: no
    host synchronisation.
    """
    if x.shape[-1] != x_dim:
        raise ValueError(f"{name} was built for x_dim={x_dim} but x has shape {tuple(x.shape)}.")
    batch = x.shape[0]
    if noise_level.ndim == 0:
        noise_level = noise_level.expand(batch)
    if noise_level.shape != (batch,):
        raise ValueError(
            f"{name} needs noise_level of shape ({batch},) (one level per sample), got "
            f"{tuple(noise_level.shape)}; flatten it with noise_level.reshape(-1)."
        )
    if cond_dim == 0 and cond is not None:
        raise ValueError(f"{name} was built with cond_dim=0 but got cond; pass cond=None or build it with cond_dim.")
    if cond_dim > 0:
        if cond is None:
            raise ValueError(
                f"{name} was built with cond_dim={cond_dim} and needs cond of shape ({batch}, {cond_dim})."
            )
        if cond.shape != (batch, cond_dim):
            raise ValueError(f"{name} needs cond of shape ({batch}, {cond_dim}), got {tuple(cond.shape)}.")
    return noise_level.to(x.dtype)
