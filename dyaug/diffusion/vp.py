"""Variance-preserving (VP) diffusion for noise-prediction networks eps(x_t, noise_level, cond).

- :class:`VPSDE`: the continuous VP-SDE with linear beta(t) (Song et al. 2021, arXiv 2011.13456), as used by
  the SRPO / IDQL behaviour model (arXiv 2310.07297, 2304.10573);
- :class:`DiscreteVPSchedule`: Diffusion-QL's short DDPM chain (Wang et al. 2023, arXiv 2208.06193; DDPM,
  Ho et al. 2020, arXiv 2006.11239).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from dyaug.diffusion.conditioning import (
    Condition,
    Network,
    check_n_steps,
    network_output,
    per_sample,
    sample_shape,
    sampling_device,
)


@dataclass(frozen=True)
class VPSDE:
    """Continuous VP-SDE with linear beta(t) = beta0 + t (beta1 - beta0), t in [0, 1]:

    x_t = alpha_t x_0 + sigma_t z, with log alpha_t = -t^2 (beta1 - beta0)/4 - t beta0/2
    and sigma_t = sqrt(1 - alpha_t^2).
    The network receives t itself (a float ``(B,)`` tensor) as its noise level.
    """

    beta0: float = 0.1
    beta1: float = 20.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta1) and 0 <= self.beta0 <= self.beta1 and self.beta1 > 0):
            raise ValueError(f"VPSDE needs 0 <= beta0 <= beta1, beta1 > 0, got beta0={self.beta0}, beta1={self.beta1}.")

    def log_alpha(self, t: Tensor) -> Tensor:
        """log alpha_t = -t^2 (beta1 - beta0)/4 - t beta0/2."""
        return -0.25 * t.square() * (self.beta1 - self.beta0) - 0.5 * t * self.beta0

    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor) -> Tensor:
        """sigma_t = sqrt(1 - alpha_t^2), as sqrt(-expm1(2 log alpha_t)) to stay accurate near t = 0."""
        return (-torch.expm1(2 * self.log_alpha(t))).sqrt()

    def loss(
        self,
        eps_net: Network,
        x0: Tensor,
        *,
        cond: Tensor | None = None,
        t_min: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """E ||eps(alpha_t x0 + sigma_t z, t, cond) - z||^2, summed over features and averaged over the batch.

        t ~ U(t_min, 1) (drawn first), then z ~ N(0, I).
        """
        _check_t_min(t_min)
        if x0.ndim < 2:
            raise ValueError(f"x0 must be shaped (B, ...) with feature dimensions, got {tuple(x0.shape)}.")
        t = t_min + (1 - t_min) * torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = per_sample(self.alpha(t), x0) * x0 + per_sample(self.sigma(t), x0) * z
        eps = network_output(eps_net, x_t, t, cond)
        return (eps - z).square().flatten(1).sum(1).mean()

    def step_coefficients(self, n_steps: int, t_min: float = 1e-3) -> list[tuple[float, float, float]]:
        """``(t, a, b)`` per step of the first-order probability-flow solver, x_s = a x_t - b eps(x_t, t):

        a = alpha_s/alpha_t, b = sigma_s expm1(lambda_s - lambda_t), lambda = log(alpha/sigma) (DPM-Solver-1,
        Lu et al. 2022, arXiv 2206.00927, identical to DDIM), on a grid uniform in t from 1 down to t_min.
        """
        check_n_steps("VPSDE:", n_steps)
        _check_t_min(t_min)
        t = torch.linspace(1.0, t_min, n_steps + 1, dtype=torch.float64)
        log_alpha, sigma = self.log_alpha(t), self.sigma(t)
        lam = log_alpha - sigma.log()
        a = (log_alpha[1:] - log_alpha[:-1]).exp()
        b = sigma[1:] * torch.expm1(lam[1:] - lam[:-1])
        return list(zip(t[:-1].tolist(), a.tolist(), b.tolist(), strict=True))

    @torch.no_grad()
    def sample(
        self,
        eps_net: Network,
        shape: Sequence[int],
        *,
        cond: Tensor | None = None,
        condition: Condition | None = None,
        n_steps: int = 50,
        t_min: float = 1e-3,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Deterministic probability-flow samples at t_min from x_1 ~ N(0, I) (float32, no gradients; for
        gradients call :func:`vp_ode` under autograd); ``condition`` is applied after every change of x."""
        shape = sample_shape(shape)
        device = sampling_device(eps_net, device)
        x = torch.randn(shape, generator=generator, device=device)
        project = _unchanged if condition is None else condition.to(device).apply
        return vp_ode(
            lambda y, t: network_output(eps_net, y, t, cond), x, self.step_coefficients(n_steps, t_min), project
        )


@dataclass(frozen=True)
class DiscreteVPSchedule:
    """Diffusion-QL's N-step "vp" DDPM schedule and its reverse chain.

    beta_i = 1 - exp(-beta_min/N - (beta_max - beta_min)(2i - 1)/(2N^2)), i = 1..N,
    abar_i = prod_{j<=i} (1 - beta_j).
    Cached float64 tensors (index k = i - 1, the step index given to the network as a float):
    ``betas``, ``alphas_cumprod``, the posterior mean coefficients of q(x_{i-1} | x_i, x_0),
    mu = ``posterior_mean_coef_x0`` x_0 + ``posterior_mean_coef_xt`` x_i, and the "small" posterior variance
    beta_i (1 - abar_{i-1})/(1 - abar_i).
    """

    n_steps: int = 5
    beta_min: float = 0.1
    beta_max: float = 10.0
    betas: Tensor = field(init=False, repr=False, compare=False)
    alphas_cumprod: Tensor = field(init=False, repr=False, compare=False)
    posterior_mean_coef_x0: Tensor = field(init=False, repr=False, compare=False)
    posterior_mean_coef_xt: Tensor = field(init=False, repr=False, compare=False)
    posterior_variance: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_n_steps("DiscreteVPSchedule:", self.n_steps)
        if not (math.isfinite(self.beta_max) and 0 < self.beta_min <= self.beta_max):
            raise ValueError(
                f"DiscreteVPSchedule needs 0 < beta_min <= beta_max, got {self.beta_min}, {self.beta_max}."
            )
        n = self.n_steps
        i = torch.arange(1, n + 1, dtype=torch.float64)
        betas = -torch.expm1(-self.beta_min / n - (self.beta_max - self.beta_min) * (2 * i - 1) / (2 * n**2))
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "posterior_mean_coef_x0": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_mean_coef_xt": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
            "posterior_variance": betas * (1 - abar_prev) / (1 - abar),
        }.items():
            object.__setattr__(self, name, value)

    def _on(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``alphas_cumprod`` on ``device`` in ``dtype``, copied there once (not at every training step)."""
        cache = self.__dict__.setdefault("_device_abar", {})
        if (device, dtype) not in cache:
            cache[device, dtype] = self.alphas_cumprod.to(device=device, dtype=dtype)
        return cache[device, dtype]

    def loss(
        self,
        eps_net: Network,
        x0: Tensor,
        *,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """MSE(eps(sqrt(abar_k) x0 + sqrt(1 - abar_k) z, k, cond), z), averaged over all elements.

        k ~ U{0..N-1} per sample (drawn first), then z ~ N(0, I).
        """
        if x0.ndim < 2:
            raise ValueError(f"x0 must be shaped (B, ...) with feature dimensions, got {tuple(x0.shape)}.")
        k = torch.randint(self.n_steps, x0.shape[:1], generator=generator, device=x0.device)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        abar = per_sample(self._on(x0.device, x0.dtype)[k], x0)
        x_k = abar.sqrt() * x0 + (1 - abar).sqrt() * z
        return F.mse_loss(network_output(eps_net, x_k, k.to(x0.dtype), cond), z)

    def sample(
        self,
        eps_net: Network,
        shape: Sequence[int],
        *,
        cond: Tensor | None = None,
        condition: Condition | None = None,
        clip: float | None = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """DDPM reverse chain from x_N ~ N(0, I), differentiable end to end (float32); ``condition`` is applied
        after every change of x.

        Per step: x0_hat = x_k/sqrt(abar_k) - sqrt(1/abar_k - 1) eps, clamped to [-clip, clip]; then
        x_{k-1} = posterior mean + sqrt(posterior variance) z, with no noise at the last step; the result is
        clamped to [-clip, clip]. ``clip=None`` disables both clamps.
        """
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be None or a finite number > 0, got {clip}.")
        shape = sample_shape(shape)
        device = sampling_device(eps_net, device)
        abar = self.alphas_cumprod.tolist()
        coef_x0, coef_xt = self.posterior_mean_coef_x0.tolist(), self.posterior_mean_coef_xt.tolist()
        noise_std = self.posterior_variance.sqrt().tolist()
        project = _unchanged if condition is None else condition.to(device).apply
        x = project(torch.randn(shape, generator=generator, device=device))
        for k in reversed(range(self.n_steps)):
            eps = network_output(eps_net, x, torch.full(shape[:1], float(k), device=device), cond)
            x0_hat = x / math.sqrt(abar[k]) - math.sqrt(1 / abar[k] - 1) * eps
            x0_hat = x0_hat if clip is None else x0_hat.clamp(-clip, clip)
            x = coef_x0[k] * x0_hat + coef_xt[k] * x
            if k > 0:
                x = x + noise_std[k] * torch.randn(shape, generator=generator, device=device)
            x = project(x)
        return x if clip is None else project(x.clamp(-clip, clip))


def vp_ode(
    eps: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    steps: Sequence[tuple[float, float, float]],
    project: Callable[[Tensor], Tensor] = lambda x: x,
) -> Tensor:
    """The probability-flow ODE of a VP SDE, one first-order step per ``(t, a, b)`` of
    :meth:`VPSDE.step_coefficients`: x ← a x − b ε(x, t), then ``x = project(x)``; no gradient decision of its own."""
    x = project(x)
    for t, a, b in steps:
        x = project(a * x - b * eps(x, torch.full(x.shape[:1], t, device=x.device)))
    return x


def _unchanged(x: Tensor) -> Tensor:
    return x


def _check_t_min(t_min: float) -> None:
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}.")
