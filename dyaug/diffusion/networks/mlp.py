"""Diffusion-QL's noise-prediction MLP ``eps(a_i, i, s)`` (Wang, Hunt & Zhou, arXiv 2208.06193)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dyaug.diffusion.networks.embeddings import NoiseLevelEmbedding, SinusoidalFeatures, checked_inputs


class DQLMLP(nn.Module):
    """``eps(x, i, cond) = Linear(MLP_3x(Mish ∘ Linear_hidden)([x, e_i, cond]))``.

    The step ``i`` (the discrete VP step index) is embedded as
    ``e_i = Linear_{2t -> t}(Mish(Linear_{t -> 2t}(sinusoidal_t(i))))`` with ``t = t_dim`` (16).
    """

    def __init__(self, x_dim: int, cond_dim: int, hidden: int = 256, t_dim: int = 16) -> None:
        super().__init__()
        self.x_dim, self.cond_dim = x_dim, cond_dim
        self.noise_embedding = NoiseLevelEmbedding(SinusoidalFeatures(t_dim), 2 * t_dim, t_dim, nn.Mish)
        self.net = nn.Sequential(
            nn.Linear(x_dim + t_dim + cond_dim, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, x_dim),
        )

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        t = checked_inputs("DQLMLP", x, noise_level, cond, x_dim=self.x_dim, cond_dim=self.cond_dim)
        inputs = [x, self.noise_embedding(t)] if cond is None else [x, self.noise_embedding(t), cond]
        return self.net(torch.cat(inputs, dim=-1))
