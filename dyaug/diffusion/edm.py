"""EDM noise schedule, preconditioned denoiser and training loss.

Karras, Aittala, Aila & Laine (2022), "Elucidating the Design Space of Diffusion-Based Generative Models"
(arXiv 2206.00364), Table 1 and Eq. 2, 5, 7, 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor, nn

from dyaug.device import ComputePrecision, Precision, autocast, network_width, resolve_precision
from dyaug.diffusion.conditioning import Condition, check_n_steps, network_output, per_sample


@dataclass(frozen=True)
class EDMSchedule:
    """EDM noise levels: the sampling schedule (Eq. 5), preconditioning (Table 1) and training sigmas.

    Defaults are EDM's; :meth:`synther` (sigma_data 1.0) and :meth:`dydiff` (sigma_data 0.5) are the
    settings of SynthER (arXiv 2303.06614) and DyDiff (arXiv 2405.19189).
    """

    sigma_data: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        for name in ("sigma_data", "sigma_min", "sigma_max", "rho", "p_mean", "p_std"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"EDMSchedule.{name} must be finite, got {getattr(self, name)}.")
        for name in ("sigma_data", "sigma_min", "rho", "p_std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EDMSchedule.{name} must be > 0, got {getattr(self, name)}.")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"EDMSchedule needs sigma_max > sigma_min, got sigma_max={self.sigma_max}, "
                f"sigma_min={self.sigma_min}; swap or fix them."
            )

    @classmethod
    def synther(cls) -> EDMSchedule:
        """SynthER's schedule: EDM defaults with sigma_data = 1."""
        return cls(sigma_data=1.0)

    @classmethod
    def dydiff(cls) -> EDMSchedule:
        """DyDiff's schedule: EDM defaults with sigma_data = 0.5."""
        return cls(sigma_data=0.5)

    def sigmas(self, n_steps: int) -> list[float]:
        """Karras schedule (Eq. 5) plus a trailing 0, as python floats:

        sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..N-1,
        sigma_N = 0. With ``n_steps == 1`` the schedule is ``[sigma_max, 0]``.
        """
        check_n_steps("EDMSchedule.sigmas:", n_steps)
        if n_steps == 1:
            return [float(self.sigma_max), 0.0]
        hi, lo = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return [(hi + i / (n_steps - 1) * (lo - hi)) ** self.rho for i in range(n_steps)] + [0.0]

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` of Table 1, elementwise in sigma's dtype:

        c_skip = sd^2/(sigma^2+sd^2), c_out = sigma sd/sqrt(sigma^2+sd^2), c_in = 1/sqrt(sigma^2+sd^2),
        c_noise = ln(sigma)/4.
        """
        sd2 = self.sigma_data**2
        total = sigma.square() + sd2
        return sd2 / total, sigma * self.sigma_data * total.rsqrt(), total.rsqrt(), sigma.log() / 4

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (Eq. 8), the inverse of c_out^2."""
        return (sigma.square() + self.sigma_data**2) / (sigma * self.sigma_data).square()

    def training_sigmas(
        self, n: int, *, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` float32 training noise levels with ln(sigma) ~ N(p_mean, p_std^2)."""
        z = torch.randn(n, generator=generator, device=device)
        return (z * self.p_std + self.p_mean).exp()


class EDMDenoiser(nn.Module):
    """D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), cond) (EDM Eq. 7).

    ``net`` is F with the seam ``net(x, noise_level, cond)``; it runs under
    :func:`dyaug.device.autocast` with ``precision`` (``"auto"``: the faster of fp32 and bf16 on the network's
    device for its width, see :func:`dyaug.device.resolve_precision`), while the preconditioning stays in x's
    dtype (fp32 or fp64) and F's output is cast back to it, so a sampler's state never leaves fp32.

    ``clean_input`` (bool, broadcastable to x; None = none) marks entries that hold clean, noise-free values
    (the given entries of a conditional model, see :class:`~dyaug.diffusion.Condition`). They enter F as
    x / sigma_data, the scale c_in(0) x of clean data, at every sigma, instead of c_in(sigma) x: at sigma = 80,
    c_in x would shrink them 160-fold towards 0 and F could barely read the condition.
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: EDMSchedule,
        precision: Precision = "fp32",
        clean_input: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"EDMDenoiser needs an nn.Module network, got {type(net).__name__}.")
        if not isinstance(schedule, EDMSchedule):
            raise TypeError(f"EDMDenoiser needs an EDMSchedule, got {type(schedule).__name__}.")
        if precision not in get_args(Precision):
            raise ValueError(f"precision must be one of {get_args(Precision)}, got {precision!r}.")
        self.net = net
        self.schedule = schedule
        if clean_input is not None and (not isinstance(clean_input, Tensor) or clean_input.dtype != torch.bool):
            raise TypeError("clean_input must be a bool tensor (True = clean entry) or None.")
        device = next(iter(net.parameters()), torch.empty(0)).device
        self.precision: ComputePrecision = resolve_precision(precision, device, width=network_width(net))
        self.clean_input: Tensor | None
        self.register_buffer("clean_input", clean_input, persistent=False)  # follows .to(device)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """D(x; sigma) for x of shape (B, ...) and sigma a number, a 0-d tensor or a (B,) tensor."""
        if x.dtype not in (torch.float32, torch.float64) or x.ndim < 1:
            raise TypeError(
                f"EDMDenoiser expects a float32/float64 x shaped (B, ...), got {x.dtype} {tuple(x.shape)}; "
                "keep the sample in fp32 and pick the network precision with precision='bf16'."
            )
        sigma = _per_sample_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.schedule.preconditioning(sigma)
        x_in = per_sample(c_in, x) * x
        if self.clean_input is not None:
            x_in = torch.where(self.clean_input, x / self.schedule.sigma_data, x_in)
        with autocast(x.device, self.precision):
            f = network_output(self.net, x_in, c_noise, cond)
        return per_sample(c_skip, x) * x + per_sample(c_out, x) * f.to(x.dtype)


def _per_sample_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Noise level(s) as a ``(B,)`` tensor in x's dtype and device; a python number must be > 0."""
    batch = x.shape[0]
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma}.")
        return torch.full((batch,), float(sigma), dtype=x.dtype, device=x.device)
    if not isinstance(sigma, Tensor) or sigma.shape not in ((), (batch,)):
        got = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"sigma must be a number, a 0-d tensor or a ({batch},) tensor for this batch, got {got}.")
    return sigma.to(device=x.device, dtype=x.dtype).expand(batch)


def edm_loss(
    denoiser: EDMDenoiser,
    y: Tensor,
    *,
    cond: Tensor | None = None,
    given: Tensor | None = None,
    loss_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """EDM training loss (Eq. 2, 8): mean over the batch of lambda(sigma) * mean_valid (D(x; sigma) - y)^2.

    One sigma per sample (ln sigma ~ N(p_mean, p_std^2), drawn first), then x = y + sigma n. ``given``
    (bool, broadcastable to y) overwrites those entries of x with the clean y, as in DyDiff training
    (arXiv 2405.19189); the loss still covers them. ``loss_mask`` (bool, True = valid) restricts the
    per-sample mean to valid entries; a sample without any valid entry contributes 0.
    """
    if not isinstance(denoiser, EDMDenoiser):
        raise TypeError(f"edm_loss needs an EDMDenoiser, got {type(denoiser).__name__}; wrap the net first.")
    if y.ndim < 2:
        raise ValueError(f"y must be shaped (B, ...) with feature dimensions, got {tuple(y.shape)}; use y[:, None].")
    schedule = denoiser.schedule
    sigma = schedule.training_sigmas(y.shape[0], device=y.device, generator=generator).to(y.dtype)
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    x = y + per_sample(sigma, y) * noise
    if given is not None:
        x = Condition(given, y).apply(x)
    squared_error = (denoiser(x, sigma, cond) - y).square()
    feature_dims = tuple(range(1, y.ndim))
    if loss_mask is None:
        error = squared_error.mean(feature_dims)
    else:
        valid = _valid_entries(loss_mask, y)
        error = (squared_error * valid).sum(feature_dims) / valid.sum(feature_dims).clamp_min(1)
    return (schedule.loss_weight(sigma) * error).mean()


def _valid_entries(loss_mask: Tensor, y: Tensor) -> Tensor:
    if not isinstance(loss_mask, Tensor) or loss_mask.dtype != torch.bool:
        raise TypeError("loss_mask must be a bool tensor (True = valid entry); pass e.g. `mask.bool()`.")
    try:
        ok = torch.broadcast_shapes(loss_mask.shape, y.shape) == y.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"loss_mask {tuple(loss_mask.shape)} does not broadcast to y {tuple(y.shape)}; "
            "give it y's shape or size-1 dimensions."
        )
    return loss_mask.to(y.dtype).expand(y.shape)
