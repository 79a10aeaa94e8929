"""SynthER's residual-MLP denoiser network (Lu et al., "Synthetic Experience Replay", arXiv 2303.06614)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dyaug.diffusion.networks.embeddings import FourierFeatures, NoiseLevelEmbedding, checked_inputs


def pre_activation_linear(width: int, out: int, layer_norm: bool) -> nn.Sequential:
    """``Linear_{width -> out}(ReLU(LN?(h)))``."""
    return nn.Sequential(nn.LayerNorm(width) if layer_norm else nn.Identity(), nn.ReLU(), nn.Linear(width, out))


class PreActivationBlock(nn.Module):
    """``h + Linear(ReLU(LN?(h)))``: a pre-activation residual block of constant width."""

    def __init__(self, width: int, layer_norm: bool) -> None:
        super().__init__()
        self.net = pre_activation_linear(width, width, layer_norm)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class ResidualMLP(nn.Module):
    """SynthER's ``ResidualMLPDenoiser`` network ``F(x, t[, cond])`` for flat vectors ``x`` of size ``dim``.

    - noise embedding: ``e_t = Linear(SiLU(Linear([t, sin 2πtw, cos 2πtw])))``, ``w ~ N(0, I_{rff_dim/2})``
      fixed, ``t`` the noise level (``ln(sigma)/4`` under EDM);
    - ``h_0 = Linear_{dim(+cond_dim) -> dim_t}([x, cond]) + e_t``, ``h = Linear_{dim_t -> width}(h_0)``;
    - ``depth`` blocks ``h <- h + Linear(ReLU(LN?(h)))``; output ``Linear_{width -> dim}(ReLU(LN?(h)))``.

    PyTorch default initialisation; LayerNorm off as in every SynthER config. Paper sizes: width 2048 or
    1024, depth 6, ``dim_t`` 128, ``rff_dim`` 16.
    """

    def __init__(
        self,
        dim: int,
        width: int = 1024,
        depth: int = 6,
        dim_t: int = 128,
        rff_dim: int = 16,
        layer_norm: bool = False,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        if rff_dim < 2 or rff_dim % 2:
            raise ValueError(f"ResidualMLP needs an even rff_dim >= 2 (sin and cos halves), got {rff_dim}.")
        self.dim, self.cond_dim = dim, cond_dim
        features = FourierFeatures(rff_dim // 2, scale=1.0, include_input=True)
        self.noise_embedding = NoiseLevelEmbedding(features, dim_t, dim_t, nn.SiLU)
        self.proj = nn.Linear(dim + cond_dim, dim_t)
        self.widen = nn.Linear(dim_t, width)
        self.blocks = nn.Sequential(*(PreActivationBlock(width, layer_norm) for _ in range(depth)))
        self.head = pre_activation_linear(width, dim, layer_norm)

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        t = checked_inputs("ResidualMLP", x, noise_level, cond, x_dim=self.dim, cond_dim=self.cond_dim)
        inputs = x if cond is None else torch.cat([x, cond], dim=-1)
        h = self.widen(self.proj(inputs) + self.noise_embedding(t))
        return self.head(self.blocks(h))
