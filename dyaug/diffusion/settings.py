"""What the configs of EDM models sampled with Heun's method (SynthER, DyDiff) build from their fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from dyaug.device import Precision
from dyaug.diffusion.edm import EDMSchedule
from dyaug.diffusion.samplers import SAMPLERS, _Sampler

EDM_SAMPLING_FIELDS = (
    "solver",
    "sampler_steps",
    "churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "sample_precision",
    "compile",
    "sample_batch_size",
)
"""The fields of the configs built on :class:`EDMHeunSettings` (SynthER's, DyDiff's) that say how to sample, not
what was learned."""


def check_sampling_overrides(owner: str, sampling: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """``ValueError`` unless every key of ``sampling`` (settings given to ``owner.load``) is in ``allowed``."""
    fixed = sorted(set(sampling) - set(allowed))
    if fixed:
        raise ValueError(
            f"{owner}.load can only change sampling settings {allowed}, got {fixed}: the others were fixed by "
            "training; fit a new generator to change them."
        )


class EDMHeunSettings:
    """Base of a config dataclass with the fields below: the EDM schedule, the sampler and the precision check
    that follow from them (Karras et al. 2022, arXiv 2206.00364). ``solver`` names the sampler
    (:data:`dyaug.diffusion.samplers.SAMPLERS`: ``"heun"``, EDM's, ``"dpmpp_2m"``, DPM-Solver++(2M), or
    ``"dpmpp_2m_sde"``, its SDE form; both DPM solvers ignore the churn fields)."""

    sigma_data: float
    solver: str
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

    def sampler(self) -> _Sampler:
        """The sampler these settings describe."""
        if self.solver not in SAMPLERS:
            raise ValueError(f"{type(self).__name__}.solver must be one of {sorted(SAMPLERS)}, got {self.solver!r}.")
        return SAMPLERS[self.solver].from_settings(self)

    def check_precisions(self) -> None:
        """``ValueError`` unless ``train_precision`` and ``sample_precision`` are precisions dyaug knows."""
        for name in ("train_precision", "sample_precision"):
            if getattr(self, name) not in get_args(Precision):
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {get_args(Precision)}, got {getattr(self, name)!r}."
                )
