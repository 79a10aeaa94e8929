"""DyDiff's settings in one frozen dataclass, and the presets ``"tiny"``, ``"cpu"`` (``"cpu-v1"``: its former
sampler) and ``"paper"``.

Zhao et al. (2024), "Diffusion Models for Policy-Consistent Trajectory Generation" / DyDiff (arXiv 2405.19189),
with the settings of the official code's Hopper configs: an EDM model (Karras et al. 2022, arXiv 2206.00364) of
min-max normalised windows ``[s_t, a_t]_{t<H}`` with a temporal U-Net (Janner et al. 2022, arXiv 2205.09991),
conditioned on s_0 and the actions by replacement, a Gaussian dynamics ensemble and a reward model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, overload

from dyaug.device import CompileMode, Precision
from dyaug.diffusion.networks import TemporalUNet1d
from dyaug.diffusion.networks.temporal_unet import GROUPS
from dyaug.diffusion.settings import EDM_SAMPLING_FIELDS, EDMHeunSettings
from dyaug.diffusion.training import TrainConfig
from dyaug.dydiff.filters import TrajectoryFilter, make_filter
from dyaug.dydiff.rollout import LABELS, RowLabels
from dyaug.models import EnsembleConfig, RewardConfig, TerminalConfig
from dyaug.models.config import FitSettings
from dyaug.presets import preset_config
from dyaug.validation import check_int

SAMPLING_FIELDS = (
    *EDM_SAMPLING_FIELDS,
    "iterations",
    "average",
    "filter",
    "keep_fraction",
    "temperature",
    "support_margin",
    "labels",
)
"""DyDiffConfig fields that :meth:`DyDiff.load` may replace: how to sample, not what was learned."""

GIVEN_INPUTS = ("scaled", "clean")
"""How s_0 and the actions enter the trajectory network: at clean scale, or scaled by c_in(σ) (official)."""

_MODEL_CONFIGS: dict[str, type[FitSettings]] = {
    "dynamics": EnsembleConfig,
    "reward": RewardConfig,
    "terminal": TerminalConfig,
}


@dataclasses.dataclass(frozen=True)
class DyDiffConfig(EDMHeunSettings):
    """Every setting of a DyDiff generator.

    Trajectory model: EDM denoiser D(x; σ) = c_skip x + c_out F(c_in x, ¼ ln σ) with σ_data = ``sigma_data`` over
    windows x of ``horizon`` rows ``[s, a]``; F is :class:`~dyaug.diffusion.networks.TemporalUNet1d` (``dim``,
    ``dim_mults``, ``kernel_size``; ``horizon`` must be divisible by 2^(len(dim_mults) − 1)).

    Training: ``train_steps`` AdamW steps (``lr``, ``betas``, ``weight_decay``; ``grad_clip``; half-cosine decay
    when ``cosine_decay``) of ``batch_size`` windows on E[λ(σ) mean_valid (D(x̃; σ) − y)²] with x̃ = y + σn
    and then s_0 and every action overwritten by their clean values (DyDiff's conditioning in training); padded
    steps of short episodes are masked out. The EMA of the weights (``ema_decay``, ``ema_every``,
    ``ema_warmup``) generates.

    ``residual`` (a deviation from the paper, an ablation of ``benchmarks/dydiff_rollout_accuracy.py``): the states
    of rows t >= 1 are modelled as their offsets s_t − s_0, min-max normalised on their own (the range over every
    step of every training window), and rebuilt as s_0 + offset after sampling; row 0 holds s_0 as before. The
    trajectory analogue of SynthER's ``residual`` (Lu et al. 2023 model s' itself; DyDiff models s_t itself).

    ``given_input``: ``"scaled"`` feeds s_0 and the actions to F as c_in(σ) y like every other entry (the official
    code, the default); ``"clean"`` as y / σ_data at every σ (an option, see :mod:`dyaug.dydiff.trajectory_model`).

    Sampling: EDM's stochastic Heun sampler, ``sampler_steps`` steps with churn ``churn`` on σ in
    [``s_tmin``, ``s_tmax``] and noise inflation ``s_noise``, s_0 and the actions written back after every change
    of x (``solver="dpmpp_2m_sde"``: SDE-DPM-Solver++(2M), one evaluation per step, churn fields unused);
    ``sample_batch_size`` trajectories at a time. ``compile`` (``None``, ``"default"``,
    ``"reduce-overhead"``: CUDA graphs on a GPU) compiles the U-Net with ``torch.compile``
    (:func:`dyaug.device.maybe_compiled`).

    Rollouts: ``iterations`` rounds of resample-states / relabel-actions, each new state sequence averaged with
    the previous one when ``average`` (the official code) or replacing it; then the filter ``filter`` (a name in
    :data:`~dyaug.dydiff.filters.FILTERS`) keeps ``keep_fraction`` of the trajectories, with ``temperature``
    for ``"softmax"``. ``support_margin`` (a deviation from the official code; ``None`` turns it off): each
    trajectory ends before its first state outside the data's per-dimension range widened by this share of the
    range, and predicted rewards are clipped to the data's reward range widened likewise
    (:mod:`dyaug.models.support`). ``labels``: each stored row's next state is the trajectory's s_{t+1}
    (``"trajectory"``, the official code) or the dynamics ensemble's f(s_t, a_t) (``"models"``, a deviation: the
    trajectory analogue of SynthER's ``labels="models"``; the terminal flag then judges that s'). It changes
    nothing that was trained, so a saved generator can switch it (``DyDiff.load(path, labels="models")``).

    Single-step models: ``dynamics``, ``reward`` and ``terminal`` (the classifier used when the task has no
    known termination rule) are preset names or configs of :mod:`dyaug.models`.
    """

    horizon: int
    dim: int
    dim_mults: tuple[int, ...]
    train_steps: int
    sampler_steps: int
    kernel_size: int = 5
    sigma_data: float = 0.5
    batch_size: int = 64
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    cosine_decay: bool = True
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_warmup: int = 100
    train_precision: Precision = "auto"
    given_input: str = "scaled"
    residual: bool = False
    churn: float = 60.0
    s_tmin: float = 0.3699
    s_tmax: float = 52.24
    s_noise: float = 1.002
    solver: str = "heun"
    compile: CompileMode | None = None
    sample_precision: Precision = "auto"
    sample_batch_size: int = 2048
    iterations: int = 2
    average: bool = True
    filter: str = "softmax"
    keep_fraction: float = 0.6
    temperature: float = 0.05
    support_margin: float | None = 0.1
    labels: RowLabels = "trajectory"
    dynamics: str | EnsembleConfig = "cpu"
    reward: str | RewardConfig = "cpu"
    terminal: str | TerminalConfig = "cpu"

    def __post_init__(self) -> None:
        # Lists and dicts come back from JSON (saved checkpoints); store the types the fields are typed as.
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "dim_mults", tuple(self.dim_mults))
        for name, cls in _MODEL_CONFIGS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls(**value))
            elif not isinstance(value, str | cls):
                raise TypeError(f"DyDiffConfig.{name} must be a preset name or a {cls.__name__}, got {value!r}.")
        positive = ("horizon", "dim", "train_steps", "sampler_steps", "batch_size", "sample_batch_size", "kernel_size")
        for name in positive:
            check_int(f"DyDiffConfig.{name}", getattr(self, name), numpy=False)
        check_int("DyDiffConfig.iterations", self.iterations, 0, numpy=False)
        if not self.dim_mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.dim_mults):
            raise ValueError(
                f"DyDiffConfig.dim_mults must be a non-empty tuple of integers >= 1, got {self.dim_mults}."
            )
        if any(self.dim * m % GROUPS for m in self.dim_mults) or self.kernel_size % 2 == 0:
            raise ValueError(
                f"DyDiffConfig needs dim * m divisible by {GROUPS} for every m in dim_mults and an odd kernel_size, "
                f"got dim={self.dim}, dim_mults={self.dim_mults}, kernel_size={self.kernel_size}."
            )
        if self.horizon < 2 or self.horizon % self.divisor:
            nearest = max(1, round(self.horizon / self.divisor)) * self.divisor
            raise ValueError(
                f"DyDiffConfig.horizon must be >= 2 and divisible by {self.divisor} (2^(len(dim_mults) - 1), the "
                f"U-Net's downsampling), got {self.horizon}; e.g. horizon={max(nearest, 2)}."
            )
        if self.given_input not in GIVEN_INPUTS:
            raise ValueError(f"DyDiffConfig.given_input must be one of {GIVEN_INPUTS}, got {self.given_input!r}.")
        if self.labels not in LABELS:
            raise ValueError(f"DyDiffConfig.labels must be one of {LABELS}, got {self.labels!r}.")
        for name in ("average", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"DyDiffConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        self.check_precisions()
        # Build every part once so a bad value fails here, with the part's own message, not in fit().
        self.schedule()
        self.sampler()
        self.train_config()
        self.trajectory_filter()
        for name, cls in _MODEL_CONFIGS.items():
            cls.resolve(getattr(self, name))

    @property
    def divisor(self) -> int:
        """What ``horizon`` must be a multiple of: 2^(len(dim_mults) − 1)."""
        return 2 ** (len(self.dim_mults) - 1)

    def network(self, transition_dim: int) -> TemporalUNet1d:
        """A freshly initialised F for rows ``[s, a]`` of size ``transition_dim`` (from the global torch RNG)."""
        return TemporalUNet1d(transition_dim, dim=self.dim, dim_mults=self.dim_mults, kernel_size=self.kernel_size)

    def train_config(self) -> TrainConfig:
        """Optimiser settings of the trajectory model."""
        return TrainConfig(
            steps=self.train_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=self.betas,
            grad_clip=self.grad_clip,
            cosine_decay=self.cosine_decay,
            ema_decay=self.ema_decay,
            ema_every=self.ema_every,
            ema_warmup=self.ema_warmup,
        )

    def trajectory_filter(self) -> TrajectoryFilter:
        """The filter named by ``filter`` with ``keep_fraction`` and ``temperature``."""
        return make_filter(self.filter, self.keep_fraction, self.temperature)

    @overload
    def model_config(self, name: Literal["dynamics"]) -> EnsembleConfig: ...
    @overload
    def model_config(self, name: Literal["reward"]) -> RewardConfig: ...
    @overload
    def model_config(self, name: Literal["terminal"]) -> TerminalConfig: ...
    @overload
    def model_config(self, name: str) -> EnsembleConfig | RewardConfig | TerminalConfig: ...
    def model_config(self, name: str) -> FitSettings:
        """The resolved config of the single-step model ``name`` (``"dynamics"``, ``"reward"``, ``"terminal"``)."""
        return _MODEL_CONFIGS[name].resolve(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (tuples as lists, model configs as dicts, ``s_tmax`` may be ``inf``)."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in _MODEL_CONFIGS:
            if not isinstance(record[name], str):
                record[name] = record[name].to_dict()
        return {**record, "betas": list(self.betas), "dim_mults": list(self.dim_mults)}


_CPU = DyDiffConfig(
    horizon=32,
    dim=32,
    dim_mults=(1, 2, 4),
    train_steps=20_000,
    batch_size=64,
    sampler_steps=16,
    sample_batch_size=1024,
)

PRESETS: dict[str, DyDiffConfig] = {
    # Tests: a 2-level U-Net of width 16 over 8-step windows trains in seconds on one core. The sampler keeps
    # DyDiff's churn band so that tests exercise the churn noise.
    "tiny": DyDiffConfig(
        horizon=8,
        dim=16,
        dim_mults=(1, 2),
        kernel_size=3,
        train_steps=150,
        batch_size=32,
        lr=1e-3,
        ema_decay=0.99,
        ema_every=1,
        ema_warmup=20,
        sampler_steps=6,
        sample_batch_size=512,
        dynamics="tiny",
        reward="tiny",
        terminal="tiny",
    ),
    # Tens of minutes on one CPU core (26-69 min on a shared core here): a 3-level U-Net of width 32 (1.0M
    # parameters for Hopper) over 32-step windows, batch 64, 20k steps, and a 16-step sampler with DyDiff's churn
    # (31 network evaluations per iteration). 20k steps, not fewer: at 5k the model predicts the first step of a
    # held-out hopper/medium window worse than copying s_0 forward (mean error 2.97 against 1.39), at 20k it
    # reaches 0.54 (benchmarks/dydiff_rollout_accuracy.py, RESULTS.md). Kept unchanged under this name: the
    # offline-RL study (benchmarks/PROTOCOL.md) fits every generator with it.
    "cpu-v1": _CPU,
    # "cpu-v1" sampled with SDE-DPM-Solver++(2M) in 16 steps (16 evaluations per iteration, 2026-12-07): on the
    # Hopper medium-replay model it is more accurate than the churned Heun sampler at every horizon (first step
    # 1.31 against 1.50, t = 31 2.83 against 2.86) and the phase is 1.5x faster.
    "cpu": dataclasses.replace(_CPU, solver="dpmpp_2m_sde"),
    # The official code: U-Net dim 128, mults (1, 4, 8) (58.8M parameters for Hopper), H = 100, batch 8, the
    # snapshot after 3M samples (375k steps); Adam (betas 0.9/0.999), no weight decay or gradient clipping,
    # fp32. Its learning rate is 1e-3 · min(samples / 10M, 1), a warm-up that reaches only 3e-4 by the snapshot;
    # the training loop here has no warm-up, so the preset trains at the constant 3e-4 the official run ends
    # at. Its EMA half-life is min(500k, 0.05 · samples) samples, 150k samples (18,750 steps, decay 0.99996
    # per step) at the snapshot; here the EMA's decay rises to that value along EMA's (1 + k)^(−2/3) schedule.
    # Sampler: 34 Heun steps, churn 60 on σ in [0.3699, 52.24], s_noise 1.002.
    "paper": DyDiffConfig(
        horizon=100,
        dim=128,
        dim_mults=(1, 4, 8),
        train_steps=375_000,
        batch_size=8,
        lr=3e-4,
        grad_clip=None,
        cosine_decay=False,
        ema_decay=0.99996,
        ema_every=1,
        ema_warmup=0,
        sampler_steps=34,
        dynamics="paper",
        reward="paper",
        terminal="paper",
    ),
}


def resolve_config(preset: str, overrides: dict[str, Any]) -> DyDiffConfig:
    """``PRESETS[preset]`` with ``overrides`` (config field names) applied.

    Raises ``ValueError`` for an unknown preset and ``TypeError`` for an override that is not a field.
    """
    return preset_config("DyDiff", DyDiffConfig, PRESETS, preset, overrides)
