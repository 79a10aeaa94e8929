"""DyDiff's temporal U-Net over state-action windows (Zhao et al., arXiv 2405.19189).

The architecture is the Decision-Diffuser / Diffuser temporal U-Net (Janner et al., arXiv 2205.09991):
1-D convolutions over the time axis, no attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn

from dyaug.diffusion.networks.embeddings import NoiseLevelEmbedding, SinusoidalFeatures, checked_inputs

GROUPS = 8


def conv_norm_mish(channels_in: int, channels_out: int, kernel_size: int) -> nn.Sequential:
    """``Mish(GroupNorm_8(Conv1d_k(x)))`` with "same" padding."""
    return nn.Sequential(
        nn.Conv1d(channels_in, channels_out, kernel_size, padding=kernel_size // 2),
        nn.GroupNorm(GROUPS, channels_out),
        nn.Mish(),
    )


class TemporalResidualBlock(nn.Module):
    """``y = conv2(conv1(x) + Linear(Mish(e))) + Conv1x1(x)``, the embedding broadcast over time."""

    def __init__(self, channels_in: int, channels_out: int, embed_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = conv_norm_mish(channels_in, channels_out, kernel_size)
        self.conv2 = conv_norm_mish(channels_out, channels_out, kernel_size)
        self.embedding = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, channels_out))
        self.skip = nn.Conv1d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(x) + self.embedding(emb)[:, :, None]
        return self.conv2(h) + self.skip(x)


class TemporalUNet1d(nn.Module):
    """Temporal U-Net ``F(x, t[, cond])`` for windows ``x`` of shape ``(B, H, transition_dim)``.

    - embedding ``e = Linear_{4d -> d}(Mish(Linear_{d -> 4d}(sinusoidal_d(t))))`` with ``d = dim``, plus
      ``Linear(cond)`` when ``cond_dim > 0``;
    - down path over channels ``[D, d·m_1, d·m_2, ...]``: per level two :class:`TemporalResidualBlock` s,
      then a stride-2 ``Conv1d(k=3)`` except at the last level; middle: two blocks;
    - up path: concatenate the skip of the matching level, two blocks, ``ConvTranspose1d(k=4, s=2)``
      (the first level's skip is not consumed, as in the reference);
    - output ``Conv1x1(Mish(GN(Conv1d_k)))`` back to ``D`` channels.

    ``H`` must be divisible by ``2**(len(dim_mults) - 1)``. Paper size: ``dim=128, dim_mults=(1, 4, 8)``
    (about 58.8M parameters for D=14).
    """

    def __init__(
        self,
        transition_dim: int,
        dim: int = 128,
        dim_mults: tuple[int, ...] = (1, 4, 8),
        kernel_size: int = 5,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        channels = [dim * m for m in dim_mults]
        if not dim_mults or any(c % GROUPS for c in channels):
            raise ValueError(
                f"TemporalUNet1d needs dim * m divisible by {GROUPS} (GroupNorm groups) for every m in "
                f"dim_mults, got dim={dim}, dim_mults={dim_mults}."
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"TemporalUNet1d needs an odd kernel_size to keep the length, got {kernel_size}.")
        self.transition_dim, self.cond_dim = transition_dim, cond_dim
        self.divisor = 2 ** (len(dim_mults) - 1)

        self.noise_embedding = NoiseLevelEmbedding(SinusoidalFeatures(dim), 4 * dim, dim, nn.Mish)
        self.cond_embedding = nn.Linear(cond_dim, dim) if cond_dim else None

        def block(c_in: int, c_out: int) -> TemporalResidualBlock:
            return TemporalResidualBlock(c_in, c_out, dim, kernel_size)

        levels_in = [transition_dim, *channels[:-1]]
        last = len(channels) - 1
        self.down = nn.ModuleList(
            nn.ModuleList(
                [
                    block(c_in, c),
                    block(c, c),
                    nn.Conv1d(c, c, 3, stride=2, padding=1) if level < last else nn.Identity(),
                ]
            )
            for level, (c_in, c) in enumerate(zip(levels_in, channels, strict=True))
        )
        self.middle = nn.ModuleList([block(channels[-1], channels[-1]), block(channels[-1], channels[-1])])
        self.up = nn.ModuleList(
            nn.ModuleList(
                [
                    block(2 * c, c_out),
                    block(c_out, c_out),
                    nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1),
                ]
            )
            for c_out, c in zip(channels[-2::-1], channels[:0:-1], strict=True)
        )
        self.out = nn.Sequential(
            conv_norm_mish(channels[0], channels[0], kernel_size), nn.Conv1d(channels[0], transition_dim, 1)
        )

    def forward(self, x: Tensor, noise_level: Tensor, cond: Tensor | None = None) -> Tensor:
        t = checked_inputs("TemporalUNet1d", x, noise_level, cond, x_dim=self.transition_dim, cond_dim=self.cond_dim)
        if x.ndim != 3 or x.shape[1] % self.divisor:
            raise ValueError(
                f"TemporalUNet1d needs x of shape (B, H, {self.transition_dim}) with H divisible by "
                f"{self.divisor} (2**(len(dim_mults)-1)), got {tuple(x.shape)}; pad or crop the horizon."
            )
        emb = self.noise_embedding(t)
        if self.cond_embedding is not None:
            emb = emb + self.cond_embedding(cond)
        h = x.transpose(1, 2)  # (B, D, H): convolutions run over time
        skips = []
        # each level is a ModuleList of three modules (torch's ModuleList is not generic)
        for first, second, downsample in cast("Iterable[nn.ModuleList]", self.down):
            h = second(first(h, emb), emb)
            skips.append(h)
            h = downsample(h)
        for block in self.middle:
            h = block(h, emb)
        up_levels = cast("Iterable[nn.ModuleList]", self.up)
        for (first, second, upsample), skip in zip(up_levels, reversed(skips[1:]), strict=True):
            h = upsample(second(first(torch.cat([h, skip], dim=1), emb), emb))
        return self.out(h).transpose(1, 2)
