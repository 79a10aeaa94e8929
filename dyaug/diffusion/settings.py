"""What the configs of EDM models sampled with Heun's method (SynthER, DyDiff) build from their fields."""

from __future__ import annotations

from typing import get_args

from dyaug.device import Precision
from dyaug.diffusion.edm import EDMSchedule
from dyaug.diffusion.samplers import HeunSampler


class EDMHeunSettings:
    """Base of a config dataclass with the fields below: the EDM schedule, the Heun sampler and the precision check
    that follow from them (Karras et al. 2022, arXiv 2206.00364)."""

    sigma_data: float
    sampler_steps: int
    churn: float
    s_tmin: float
    s_tmax: float
    s_noise: float
    train_precision: Precision
    sample_precision: Precision

    def schedule(self) -> EDMSchedule:
        """EDM noise schedule with σ_data = ``sigma_data`` (EDM's σ_min, σ_max, ρ, P_mean, P_std)."""
        return EDMSchedule(sigma_data=self.sigma_data)

    def sampler(self) -> HeunSampler:
        """The Heun sampler these settings describe."""
        return HeunSampler(
            n_steps=self.sampler_steps, churn=self.churn, s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise
        )

    def check_precisions(self) -> None:
        """``ValueError`` unless ``train_precision`` and ``sample_precision`` are precisions dyaug knows."""
        for name in ("train_precision", "sample_precision"):
            if getattr(self, name) not in get_args(Precision):
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {get_args(Precision)}, got {getattr(self, name)!r}."
                )
