"""SynthER's settings in one frozen dataclass, and the presets ``"tiny"``, ``"cpu"`` (``"cpu-v1"``: its
former sampler) and ``"paper"``.

Lu, Ball, Teh & Parker-Holder (2023), "Synthetic Experience Replay" (arXiv 2303.06614), with the settings of
the official code (``conglu1997/SynthER``): an unconditional EDM model (Karras et al. 2022, arXiv 2206.00364)
of z-scored rows ``x = [s, a, r, s', terminal]``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from dyaug.data.columns import Transform
from dyaug.device import CompileMode, Precision
from dyaug.diffusion.networks import ResidualMLP
from dyaug.diffusion.settings import EDMHeunSettings
from dyaug.diffusion.training import TrainConfig
from dyaug.presets import preset_config
from dyaug.validation import check_int


@dataclasses.dataclass(frozen=True)
class SynthERConfig(EDMHeunSettings):
    """Every setting of a SynthER generator (Lu et al. 2023, arXiv 2303.06614).

    Model: EDM denoiser D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, ¼ ln σ) with σ_data = ``sigma_data``
    (Karras et al. 2022, Table 1), F the residual MLP of :class:`~dyaug.diffusion.networks.ResidualMLP`
    (``width`` x ``depth`` pre-activation blocks, noise embedding of width ``dim_t`` on ``rff_dim`` random
    Fourier features).

    Training: ``train_steps`` AdamW steps (``lr``, ``betas``, ``weight_decay``) on the loss
    E[λ(σ) mean_dims (D(y + σn; σ) − y)²], λ(σ) = (σ² + σ_d²)/(σ σ_d)², ln σ ~ N(−1.2, 1.2²), with gradient
    clipping at ``grad_clip``, the learning rate decayed to 0 with a half cosine (``cosine_decay``; constant
    without) and an EMA of the weights
    (``ema_decay`` every ``ema_every`` steps after ``ema_warmup``) that is the model used for sampling.
    A batch holds ``batch_size`` rows, or ``large_data_batch_size`` when that is set and the data has at least
    ``large_data_threshold`` transitions (the paper: 1024 from 800k on). ``train_precision`` is the autocast
    precision of F during training.

    Rows (deviations from the paper, each an ablation in ``benchmarks/synther_levers.py``): with ``residual``
    the s' block holds Δ = s' − s (see :class:`~dyaug.synther.rows.RowLayout`); ``transform`` (``"quantile"``
    or ``"symlog"``, see :mod:`dyaug.data.columns`) is applied before the z-score to the columns
    ``transform_columns`` selects (``"auto"``: sparse or heavy-tailed ones, ``"all"``). Constant columns are
    always copied, never modelled. ``labels="models"`` diffuses (s, a) only and labels s', r and the terminal
    flag with single-step models of the :mod:`dyaug.models` preset ``label_models``
    (:mod:`dyaug.synther.labels`).

    Sampling (``solver="heun"``): EDM's Heun sampler (Algorithm 2) with ``sampler_steps`` steps (2N − 1
    evaluations) and churn ``churn`` on σ in [``s_tmin``, ``s_tmax``] with noise inflation ``s_noise``
    (``churn=0``: the deterministic Algorithm 1); ``solver="dpmpp_2m"``: DPM-Solver++(2M), N evaluations;
    ``solver="dpmpp_2m_sde"``: its SDE form (fresh noise on every step), N evaluations. F is
    evaluated in ``sample_precision`` (the sampler state stays fp32); ``sample_batch_size`` rows at a time;
    ``compile`` (``None``, ``"default"``, ``"reduce-overhead"``: CUDA graphs on a GPU) compiles F for training and
    sampling with ``torch.compile`` (:func:`dyaug.device.maybe_compiled`).
    """

    width: int
    depth: int
    train_steps: int
    sampler_steps: int
    dim_t: int = 128
    rff_dim: int = 16
    layer_norm: bool = False
    sigma_data: float = 1.0
    batch_size: int = 256
    large_data_batch_size: int | None = None
    large_data_threshold: int = 800_000
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    cosine_decay: bool = True
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_warmup: int = 100
    train_precision: Precision = "auto"
    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    solver: str = "heun"
    compile: CompileMode | None = None
    sample_precision: Precision = "auto"
    sample_batch_size: int = 10_000
    residual: bool = False
    transform: Transform = "none"
    transform_columns: Literal["auto", "all"] = "auto"
    labels: Literal["joint", "models"] = "joint"
    label_models: str = "cpu"

    def __post_init__(self) -> None:
        # Lists come back from JSON (saved checkpoints); store the tuple the field is typed as.
        object.__setattr__(self, "betas", tuple(self.betas))
        for name in ("width", "depth", "train_steps", "sampler_steps", "dim_t", "batch_size", "sample_batch_size"):
            check_int(f"SynthERConfig.{name}", getattr(self, name), numpy=False)
        self.check_precisions()
        # Build every part once so a bad value fails here, with the part's own message, not in fit().
        self.schedule()
        self.sampler()
        self.train_config(n_transitions=0)

    def network(self, dim: int) -> ResidualMLP:
        """A freshly initialised F for rows of size ``dim`` (initialised from the global torch RNG)."""
        return ResidualMLP(
            dim, width=self.width, depth=self.depth, dim_t=self.dim_t, rff_dim=self.rff_dim, layer_norm=self.layer_norm
        )

    def train_config(self, n_transitions: int) -> TrainConfig:
        """Optimiser settings for a dataset of ``n_transitions`` (the batch size depends on it)."""
        batch_size = self.batch_size
        if self.large_data_batch_size is not None and n_transitions >= self.large_data_threshold:
            batch_size = self.large_data_batch_size
        return TrainConfig(
            steps=self.train_steps,
            batch_size=batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=self.betas,
            grad_clip=self.grad_clip,
            cosine_decay=self.cosine_decay,
            ema_decay=self.ema_decay,
            ema_every=self.ema_every,
            ema_warmup=self.ema_warmup,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (``betas`` as a list, ``s_tmax`` may be ``inf``)."""
        return {**dataclasses.asdict(self), "betas": list(self.betas)}


_CPU = SynthERConfig(width=256, depth=3, train_steps=20_000, batch_size=256, sampler_steps=32, labels="models")

PRESETS: dict[str, SynthERConfig] = {
    # A test-sized model: fits a few thousand transitions in seconds on one CPU core.
    "tiny": SynthERConfig(width=64, depth=2, dim_t=32, train_steps=300, batch_size=128, sampler_steps=16),
    # About 10 CPU-minutes: 20k steps of a 256x3 denoiser of (s, a), s', r and the terminal flag labelled by the
    # `cpu` single-step models (7-member ensemble, reward model, known termination rule). Frozen on 2026-12-06 from
    # benchmarks/synther_levers.py on halfcheetah/medium-replay (the only dataset it was tuned on): the labelled
    # variant's median next-state error 0.84 against 1.31 for the joint model with the same budget, 2.32 for 10%
    # noise and 0.63 for the ensemble on real (s, a). Deterministic Heun, 32 steps (63 evaluations). Precision
    # "auto": bf16 only where this machine's timing says it is faster. Kept unchanged under this name: the
    # offline-RL study (benchmarks/PROTOCOL.md) fits every generator with it.
    "cpu-v1": _CPU,
    # "cpu-v1" sampled with SDE-DPM-Solver++(2M) in 32 steps (32 evaluations, half of Heun's; 2026-12-07,
    # benchmarks/synther_sampling_speed.py): on the study's labelled Walker2d model its error is Heun's (+4.8% /
    # +3.4% median / mean against +4.7% / +4.9%, both relative to the paper's 255-evaluation sampler); on a joint
    # HalfCheetah model the SDE solver is within 5% of that sampler at 48 evaluations, where Heun is 18% above.
    "cpu": dataclasses.replace(_CPU, solver="dpmpp_2m_sde"),
    # The paper / official code: 2048x6 residual MLP, 100k steps, batch 256 (1024 from 800k transitions),
    # 128-step stochastic Heun with churn 80 on sigma in [0.05, 50], s_noise 1.003, all in fp32.
    "paper": SynthERConfig(
        width=2048,
        depth=6,
        train_steps=100_000,
        batch_size=256,
        large_data_batch_size=1024,
        large_data_threshold=800_000,
        sampler_steps=128,
        churn=80.0,
        s_tmin=0.05,
        s_tmax=50.0,
        s_noise=1.003,
    ),
}


def resolve_config(preset: str, overrides: dict[str, Any]) -> SynthERConfig:
    """``PRESETS[preset]`` with ``overrides`` (config field names) applied.

    Raises ``ValueError`` for an unknown preset and ``TypeError`` for an override that is not a field.
    """
    return preset_config("SynthER", SynthERConfig, PRESETS, preset, overrides)
