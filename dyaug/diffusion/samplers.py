"""Samplers for EDM denoisers, in the manner of k-diffusion's ``sampling.py``: each sampler is a short function of
``(denoiser, x, sigmas)`` that the reader can see whole, and a condition is one visible line, ``x = project(x)``.

- :func:`heun`: EDM's stochastic Heun sampler (Karras et al. 2022, arXiv 2206.00364, Algorithm 2; ``churn=0`` is
  the deterministic Algorithm 1), 2N − 1 network evaluations for N steps;
- :func:`dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2), a second-order multistep
  solver of the same ODE with one network evaluation per step, and with ``eta > 0`` its SDE form.

The functions take no gradient decision: they run under whatever autograd mode the caller chose, so guidance
can differentiate through them. :class:`HeunSampler`, :class:`DPMSolverSampler` and :class:`DPMSolverSDESampler`
(DPM-Solver++(2M) with ``eta = 1``) are the small frozen settings objects that configs hold; their ``sample``
builds the start noise and the schedule and calls the function without gradients.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dyaug.diffusion.conditioning import Condition, check_n_steps, sample_shape, sampling_device
from dyaug.diffusion.edm import EDMSchedule

Denoiser = Callable[[Tensor, float, Tensor | None], Tensor]
"""``D(x, sigma, cond) -> E[x_0 | x]``, e.g. :class:`dyaug.diffusion.edm.EDMDenoiser`."""
Project = Callable[[Tensor], Tensor]
"""A condition applied after every change of x, e.g. ``Condition.apply`` (hard replacement of known entries)."""


def _unchanged(x: Tensor) -> Tensor:
    return x


def heun(
    denoiser: Callable[[Tensor, float], Tensor],
    x: Tensor,
    sigmas: Sequence[float],
    *,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    project: Project = _unchanged,
    generator: torch.Generator | None = None,
) -> Tensor:
    """EDM Algorithm 2 from ``x`` at ``sigmas[0]`` down the schedule ``sigmas`` (N levels and a trailing 0).

    γ_i = min(churn/N, √2 − 1) where s_tmin ≤ σ_i ≤ s_tmax, else 0; σ̂ = σ_i (1 + γ_i);
    x̂ = x + √(σ̂² − σ_i²) s_noise ε; d = (x̂ − D(x̂; σ̂))/σ̂; x' = x̂ + (σ_{i+1} − σ̂) d, and unless σ_{i+1} = 0
    the Heun correction with d' = (x' − D(x'; σ_{i+1}))/σ_{i+1}: x' = x̂ + (σ_{i+1} − σ̂)(d + d')/2.
    """
    gamma = min(churn / (len(sigmas) - 1), math.sqrt(2) - 1)
    x = project(x)
    for sigma, sigma_next in itertools.pairwise(sigmas):
        sigma_hat = sigma * (1 + (gamma if s_tmin <= sigma <= s_tmax else 0.0))
        if sigma_hat > sigma:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = project(x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise)
        slope = (x - denoiser(x, sigma_hat)) / sigma_hat
        x_next = project(x + (sigma_next - sigma_hat) * slope)
        if sigma_next > 0:
            slope_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
            x_next = project(x + (sigma_next - sigma_hat) * (slope + slope_next) / 2)
        x = x_next
    return x


def dpmpp_2m(
    denoiser: Callable[[Tensor, float], Tensor],
    x: Tensor,
    sigmas: Sequence[float],
    *,
    eta: float = 0.0,
    project: Project = _unchanged,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DPM-Solver++(2M) in EDM's parametrisation (x_σ = x_0 + σ ε), t = −ln σ, h_i = t_{i+1} − t_i, and with
    ``eta`` > 0 its SDE form (Lu et al. 2022, arXiv 2211.01095: ``eta = 1`` is their SDE-DPM-Solver++(2M); values
    in between interpolate as k-diffusion's ``sample_dpmpp_2m_sde`` does):

    x_{i+1} = (σ_{i+1}/σ_i) e^{−η h_i} x_i + (1 − e^{−(1+η) h_i}) D̂_i + σ_{i+1} √(1 − e^{−2 η h_i}) ε,
    D̂_i = D_i on the first step and (1 + 1/(2 r)) D_i − 1/(2 r) D_{i−1}, r = h_{i−1}/h_i, after it; the last step
    (σ = 0) returns D̂. ``eta = 0`` is the deterministic ODE solver.
    """
    x = project(x)
    previous: Tensor | None = None
    h_previous = 0.0
    for sigma, sigma_next in itertools.pairwise(sigmas):
        denoised = denoiser(x, sigma)
        h = math.log(sigma / sigma_next) if sigma_next > 0 else math.inf
        estimate = denoised
        if previous is not None and sigma_next > 0:
            r = h_previous / h
            estimate = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous
        if sigma_next == 0:
            x = project(estimate)
        else:
            x = (sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-(1 + eta) * h) * estimate
            if eta > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * noise
            x = project(x)
        previous, h_previous = denoised, h
    return x


# ---------------------------------------------------------------------------------- settings objects
def _check_noise_amount(settings: object, field: str) -> None:
    """``ValueError`` unless the fresh-noise setting ``field`` (Heun's churn, DPM-Solver's eta) is finite and >= 0."""
    value = getattr(settings, field)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{type(settings).__name__}.{field} must be finite and >= 0 (0 = deterministic), got {value}.")


@dataclass(frozen=True)
class _Sampler:
    """What every settings object shares: the start noise, the schedule and the no-gradient call."""

    n_steps: int = 32
    name: ClassVar[str]

    def __post_init__(self) -> None:
        check_n_steps(f"{type(self).__name__}:", self.n_steps)

    @classmethod
    def from_settings(cls, settings: object) -> _Sampler:
        """The sampler a config describes (its ``sampler_steps`` and, for Heun, its churn fields)."""
        return cls(n_steps=settings.sampler_steps)  # type: ignore[attr-defined]

    @property
    def network_evaluations(self) -> int:
        raise NotImplementedError

    def run(self, denoiser: Callable[[Tensor, float], Tensor], x: Tensor, sigmas: list[float], **kwargs) -> Tensor:
        raise NotImplementedError

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
        project: Project = _unchanged
        if condition is not None:
            condition.check_shape(shape)
            project = condition.to(device).apply
        sigmas = schedule.sigmas(self.n_steps)
        x = _start(x_init, shape, sigmas[0], device, generator)
        return self.run(lambda y, sigma: denoiser(y, sigma, cond), x, sigmas, project=project, generator=generator)


@dataclass(frozen=True)
class HeunSampler(_Sampler):
    """Settings of :func:`heun`: ``n_steps`` levels of the Karras schedule, churn on [s_tmin, s_tmax]."""

    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    name: ClassVar[str] = "heun"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_noise_amount(self, "churn")
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

    @classmethod
    def from_settings(cls, settings: object) -> HeunSampler:
        s = settings
        return cls(
            n_steps=s.sampler_steps, churn=s.churn, s_tmin=s.s_tmin, s_tmax=s.s_tmax, s_noise=s.s_noise,  # type: ignore[attr-defined]
        )  # fmt: skip

    @property
    def network_evaluations(self) -> int:
        """Denoiser calls per sample: 2N - 1 (no Heun correction on the last step)."""
        return 2 * self.n_steps - 1

    def churn_factors(self, sigmas: Sequence[float]) -> list[float]:
        """gamma_i for each step of the schedule ``sigmas`` (N values and the trailing 0)."""
        gamma = min(self.churn / self.n_steps, math.sqrt(2) - 1)
        return [gamma if self.s_tmin <= sigma <= self.s_tmax else 0.0 for sigma in sigmas[:-1]]

    def run(self, denoiser: Callable[[Tensor, float], Tensor], x: Tensor, sigmas: list[float], **kwargs) -> Tensor:
        return heun(
            denoiser, x, sigmas, churn=self.churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise,
            **kwargs,
        )  # fmt: skip


@dataclass(frozen=True)
class DPMSolverSampler(_Sampler):
    """Settings of :func:`dpmpp_2m`: ``n_steps`` levels of the Karras schedule, one evaluation each; ``eta`` = 0
    (deterministic)."""

    eta: float = 0.0
    name: ClassVar[str] = "dpmpp_2m"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_noise_amount(self, "eta")

    @property
    def network_evaluations(self) -> int:
        return self.n_steps

    def run(self, denoiser: Callable[[Tensor, float], Tensor], x: Tensor, sigmas: list[float], **kwargs) -> Tensor:
        return dpmpp_2m(denoiser, x, sigmas, eta=self.eta, **kwargs)


@dataclass(frozen=True)
class DPMSolverSDESampler(DPMSolverSampler):
    """SDE-DPM-Solver++(2M): :class:`DPMSolverSampler` with ``eta = 1`` (fresh noise on every step)."""

    eta: float = 1.0
    name: ClassVar[str] = "dpmpp_2m_sde"


SAMPLERS: dict[str, type[_Sampler]] = {s.name: s for s in (HeunSampler, DPMSolverSampler, DPMSolverSDESampler)}


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
