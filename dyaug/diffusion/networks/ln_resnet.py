"""The LN-ResNet behaviour model of IDQL (Hansen-Estruch et al., arXiv 2304.10573), reused by SRPO
(Chen et al., arXiv 2310.07297) as its diffusion behaviour model ``eps(a_t | s, t)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dyaug.diffusion.networks.embeddings import FourierFeatures, NoiseLevelEmbedding, checked_inputs


class LNResidualBlock(nn.Module):
    """``h + Linear_{4w -> w}(Mish(Linear_{w -> 4w}(LayerNorm(Dropout(h)))))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.LayerNorm(width),
            nn.Linear(width, 4 * width),
            nn.Mish(),
            nn.Linear(4 * width, width),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.net(h)


class LNResNet(nn.Module):
    """``eps(x, t, cond)``: the IDQL / SRPO LN-ResNet.

    - noise embedding: Gaussian Fourier features ``[sin 2πtW, cos 2πtW]``, 32 fixed ``W ~ N(0, scale^2)``
      (``fourier_scale`` 30), then ``Linear 64->128, Mish, Linear 128->128``;
    - ``h = Linear_{-> hidden}([x, cond, e_t])``; ``blocks`` :class:`LNResidualBlock` s;
    - output ``Linear_{hidden -> x_dim}(Mish(h))``.

    Dropout is active in ``train()`` mode only, so sample from a model in ``eval()`` mode.
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        hidden: int = 256,
        blocks: int = 3,
        dropout: float = 0.1,
        fourier_scale: float = 30.0,
    ) -> None:
        super().__init__()
        self.x_dim, self.cond_dim = x_dim, cond_dim
        self.noise_embedding = NoiseLevelEmbedding(FourierFeatures(32, scale=fourier_scale), 128, 128, nn.Mish)
        self.proj = nn.Linear(x_dim + cond_dim + 128, hidden)
        self.blocks = nn.Sequential(*(LNResidualBlock(hidden, dropout) for _ in range(blocks)))
        self.head = nn.Sequential(nn.Mish(), nn.Linear(hidden, x_dim))

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        t = checked_inputs("LNResNet", x, noise_level, cond, x_dim=self.x_dim, cond_dim=self.cond_dim)
        inputs = [x] if cond is None else [x, cond]
        h = self.proj(torch.cat([*inputs, self.noise_embedding(t)], dim=-1))
        return self.head(self.blocks(h))
