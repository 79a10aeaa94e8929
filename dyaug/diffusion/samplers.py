"""EDM's stochastic Heun sampler (Karras et al. 2022, arXiv 2206.00364, Algorithm 2).

The sampler owns no network: it takes any denoiser ``D(x, sigma, cond)`` (e.g. :class:`EDMDenoiser`) and an
:class:`EDMSchedule`, and runs the loop below with all noise levels precomputed as python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dyaug.diffusion.conditioning import Condition, check_n_steps, sample_shape, sampling_device
from dyaug.diffusion.edm import EDMSchedule

Denoiser = Callable[[Tensor, float, Tensor | None], Tensor]
"""``D(x, sigma, cond) -> E[x_0 | x]``, e.g. :class:`dyaug.diffusion.edm.EDMDenoiser`."""


@dataclass(frozen=True)
class HeunSampler:
    """Stochastic Heun sampler with churn (EDM Algorithm 2); ``churn=0`` is the deterministic Algorithm 1.

    For i = 0..N-1: gamma_i = min(churn/N, sqrt(2)-1) if s_tmin <= sigma_i <= s_tmax else 0,
    sigma_hat = sigma_i (1 + gamma_i), x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) s_noise eps,
    d = (x_hat - D(x_hat; sigma_hat))/sigma_hat, x_{i+1} = x_hat + (sigma_{i+1} - sigma_hat) d and, unless
    sigma_{i+1} = 0 (the last, plain Euler step), the Heun correction with d' at (x_{i+1}, sigma_{i+1}).
    """

    n_steps: int = 32
    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        check_n_steps("HeunSampler:", self.n_steps)
        if not (math.isfinite(self.churn) and self.churn >= 0):
            raise ValueError(f"HeunSampler.churn must be finite and >= 0 (0 = deterministic), got {self.churn}.")
        if not (0 <= self.s_tmin <= self.s_tmax):
            raise ValueError(
                f"HeunSampler needs 0 <= s_tmin <= s_tmax, got s_tmin={self.s_tmin}, s_tmax={self.s_tmax}."
            )
        if not (math.isfinite(self.s_noise) and self.s_noise > 0):
            raise ValueError(f"HeunSampler.s_noise must be finite and > 0, got {self.s_noise}.")

    @classmethod
    def synther(cls) -> HeunSampler:
        """SynthER's sampler: 128 steps, churn 80 on sigma in [0.05, 50], s_noise 1.003."""
        return cls(n_steps=128, churn=80.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)

    @classmethod
    def dydiff(cls) -> HeunSampler:
        """DyDiff's sampler: 34 steps, churn 60 on sigma in [0.3699, 52.24], s_noise 1.002."""
        return cls(n_steps=34, churn=60.0, s_tmin=0.3699, s_tmax=52.24, s_noise=1.002)

    @property
    def network_evaluations(self) -> int:
        """Denoiser calls per sample: 2N - 1 (no Heun correction on the last step)."""
        return 2 * self.n_steps - 1

    def churn_factors(self, sigmas: Sequence[float]) -> list[float]:
        """gamma_i for each step of the schedule ``sigmas`` (N values and the trailing 0)."""
        gamma = min(self.churn / self.n_steps, math.sqrt(2) - 1)
        return [gamma if self.s_tmin <= sigma <= self.s_tmax else 0.0 for sigma in sigmas[:-1]]

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        schedule: EDMSchedule,
        shape: Sequence[int],
        *,
        cond: Tensor | None = None,
        condition: Condition | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        x_init: Tensor | None = None,
    ) -> Tensor:
        """Draw float32 samples of ``shape`` (batch first), without gradients.

        ``x_init`` replaces the start state sigma_0 z (it must have ``shape``); ``condition`` is applied
        after every change of x. ``device`` defaults to x_init's, else the denoiser's. All noise comes from
        ``generator`` (on that device), so the same seed gives the same samples.
        """
        shape = sample_shape(shape)
        device = sampling_device(denoiser, x_init.device if device is None and x_init is not None else device)
        if condition is not None:
            condition.check_shape(shape)
            condition = condition.to(device)
        keep = condition.apply if condition is not None else _unchanged

        sigmas = schedule.sigmas(self.n_steps)
        gammas = self.churn_factors(sigmas)
        x = keep(_start(x_init, shape, sigmas[0], device, generator))
        for sigma, sigma_next, gamma in zip(sigmas[:-1], sigmas[1:], gammas, strict=True):
            sigma_hat = sigma * (1 + gamma)
            if gamma > 0:
                churn_std = math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise
                x = keep(x + churn_std * torch.randn(shape, generator=generator, device=device))
            slope = (x - denoiser(x, sigma_hat, cond)) / sigma_hat
            x_next = keep(x + (sigma_next - sigma_hat) * slope)
            if sigma_next > 0:
                slope_next = (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next
                x_next = keep(x + (sigma_next - sigma_hat) * (slope + slope_next) / 2)
            x = x_next
        return x


def _start(
    x_init: Tensor | None,
    shape: torch.Size,
    sigma_max: float,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    if x_init is None:
        return sigma_max * torch.randn(shape, generator=generator, device=device)
    if x_init.shape != shape:
        raise ValueError(f"x_init has shape {tuple(x_init.shape)} but shape={tuple(shape)}; make them agree.")
    return x_init.to(device=device, dtype=torch.float32)


def _unchanged(x: Tensor) -> Tensor:
    return x
