"""Settings of the single-step models in frozen dataclasses, and their presets ``"tiny"``, ``"cpu"``, ``"paper"``.

The ``"paper"`` presets are DyDiff's (Zhao et al. 2024, arXiv 2405.19189, official code's Hopper configs), whose
dynamics model is MBPO's Gaussian ensemble (Janner et al. 2019, arXiv 1906.08253; Chua et al. 2018, PETS,
arXiv 1805.12114). Every field can be overridden with ``dataclasses.replace`` or ``from_preset(name, **fields)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from dyaug.validation import check_int

ConfigT = TypeVar("ConfigT", bound="FitSettings")


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """An MLP (``depth`` hidden layers of ``width``) fitted with hold-out early stopping; the settings shared by
    every model of :mod:`dyaug.models`.

    ``holdout_fraction`` of the rows (at most ``max_holdout``) are set aside; Adam (``lr``, L2 penalty
    ``weight_decay`` on each layer's weights: one value, or one per linear layer) runs over the other rows in
    epochs of ``batch_size`` batches. After each epoch every member's hold-out error is measured; a member
    improves when its error drops below ``(1 − min_improvement)`` times its best so far, and then its weights
    are kept. Training stops once more than ``patience`` epochs in a row improve no member, or after
    ``max_epochs`` epochs or ``max_steps`` optimizer steps (``None``: no cap), and each member ends with the
    weights of its best hold-out error (as MBPO does).
    """

    width: int = 256
    depth: int = 2
    lr: float = 1e-4
    batch_size: int = 256
    weight_decay: float | tuple[float, ...] = 0.0
    holdout_fraction: float = 0.2
    max_holdout: int = 5000
    patience: int = 7
    min_improvement: float = 0.0
    max_epochs: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weight_decay, list):  # lists come back from JSON (saved checkpoints)
            object.__setattr__(self, "weight_decay", tuple(self.weight_decay))
        owner = type(self).__name__
        for name in ("width", "depth", "batch_size", "max_holdout", *self._integer_fields()):
            check_int(f"{owner}.{name}", getattr(self, name), numpy=False)
        check_int(f"{owner}.patience", self.patience, 0, numpy=False)
        for name in ("max_epochs", "max_steps"):
            if getattr(self, name) is not None:
                check_int(f"{owner}.{name}", getattr(self, name), numpy=False)
        if not self.lr > 0:
            raise ValueError(f"{type(self).__name__}.lr must be > 0, got {self.lr!r}.")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(
                f"{type(self).__name__}.holdout_fraction must lie in (0, 1), got {self.holdout_fraction!r}; "
                "the hold-out rows drive early stopping and the choice of elites."
            )
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"{type(self).__name__}.min_improvement must lie in [0, 1), got {self.min_improvement!r}.")
        decay = self.layer_weight_decay()
        if any(not d >= 0 for d in decay):
            raise ValueError(f"{type(self).__name__}.weight_decay must be >= 0, got {self.weight_decay!r}.")

    def _integer_fields(self) -> tuple[str, ...]:
        """Integer fields of a subclass that must be >= 1."""
        return ()

    @property
    def n_layers(self) -> int:
        """Number of linear layers (hidden layers plus the output layer)."""
        return self.depth + 1

    def layer_weight_decay(self) -> tuple[float, ...]:
        """One L2 coefficient per linear layer (``weight_decay`` broadcast when it is one number)."""
        if isinstance(self.weight_decay, tuple):
            if len(self.weight_decay) != self.n_layers:
                raise ValueError(
                    f"{type(self).__name__}.weight_decay has {len(self.weight_decay)} entries but the network has "
                    f"{self.n_layers} linear layers (depth + 1); give one value per layer or a single number."
                )
            return tuple(float(d) for d in self.weight_decay)
        return (float(self.weight_decay),) * self.n_layers

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_preset(cls: type[ConfigT], name: str, **overrides: Any) -> ConfigT:
        """The preset ``name`` (``"tiny"``, ``"cpu"`` or ``"paper"``) with ``overrides`` (field names) applied."""
        # PRESETS holds instances of each class under the class itself
        presets = cast("dict[str, ConfigT]", PRESETS.get(cls, {}))
        if name not in presets:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(presets)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {unknown}; its fields are {sorted(fields)}.")
        return dataclasses.replace(presets[name], **overrides)

    @classmethod
    def resolve(cls: type[ConfigT], config: str | ConfigT) -> ConfigT:
        """``config`` itself when it is a ``cls``, the preset of that name when it is a string."""
        if isinstance(config, str):
            return cls.from_preset(config)
        if not isinstance(config, cls):
            raise TypeError(
                f"config must be a preset name ({sorted(PRESETS.get(cls, {}))}) or a {cls.__name__}, "
                f"got {type(config).__name__}."
            )
        return config


@dataclasses.dataclass(frozen=True)
class EnsembleConfig(FitSettings):
    """A Gaussian ensemble of ``n_members`` MLPs (``depth`` x ``width``, SiLU) predicting the mean and
    log-variance of the normalised Δs = s' − s; the ``n_elites`` members of lowest hold-out MSE are used.

    Log-variances are soft-clamped to ``[min, max]`` bounds initialised to ``logvar_bounds`` and learned when
    ``learn_logvar_bounds`` with the penalty ``logvar_bound_penalty · (mean max − mean min)`` (PETS).
    ``bootstrap``: each member trains on its own bootstrap resample of the training rows.
    Defaults (= the ``"paper"`` preset): DyDiff's Hopper settings, per-layer weight decay
    [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4], Adam 1e-4, batch 256, 20% hold-out (<= 5000), patience 7.
    Deliberate deviations from DyDiff's code (MBPO/PETS do the same): the bounds are learned (its are fixed),
    weight decay skips the biases, each member keeps one bootstrap resample for the whole fit, and the best
    weights are real copies (its code keeps references, so the last epoch's weights are used).
    """

    n_members: int = 7
    n_elites: int = 5
    width: int = 200
    depth: int = 4
    weight_decay: float | tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    logvar_bounds: tuple[float, float] = (-10.0, 0.5)
    learn_logvar_bounds: bool = True
    logvar_bound_penalty: float = 0.01
    bootstrap: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "logvar_bounds", tuple(float(b) for b in self.logvar_bounds))
        super().__post_init__()
        if self.n_elites > self.n_members:
            raise ValueError(f"EnsembleConfig.n_elites ({self.n_elites}) cannot exceed n_members ({self.n_members}).")
        if len(self.logvar_bounds) != 2 or not self.logvar_bounds[0] < self.logvar_bounds[1]:
            raise ValueError(f"EnsembleConfig.logvar_bounds must be (low, high), low < high; got {self.logvar_bounds}.")
        if not self.logvar_bound_penalty >= 0:
            raise ValueError(f"EnsembleConfig.logvar_bound_penalty must be >= 0, got {self.logvar_bound_penalty!r}.")

    def _integer_fields(self) -> tuple[str, ...]:
        return ("n_members", "n_elites")


@dataclasses.dataclass(frozen=True)
class RewardConfig(FitSettings):
    """An MLP r̂(s, a) (``depth`` x ``width``, ReLU) trained with MSE on the normalised reward.
    Defaults (= ``"paper"``): DyDiff's 2 x 256, Adam 1e-4, batch 256, no weight decay, the dynamics' hold-out."""


@dataclasses.dataclass(frozen=True)
class TerminalConfig(FitSettings):
    """A classifier p(terminal | s, a, s') (``depth`` x ``width`` ReLU MLP) trained with class-balanced binary
    cross-entropy. Not part of DyDiff (which hand-codes the termination rule of each task)."""

    lr: float = 1e-3


PRESETS: dict[type[FitSettings], dict[str, FitSettings]] = {
    EnsembleConfig: {
        # Tests: seconds on one core for a few thousand rows.
        "tiny": EnsembleConfig(
            n_members=3,
            n_elites=2,
            width=64,
            depth=2,
            weight_decay=1e-5,
            lr=3e-3,
            batch_size=128,
            patience=5,
            max_epochs=60,
            max_steps=3000,
        ),
        # The paper's network with a 10x learning rate and at most 10k steps (32 epochs of 80k training rows).
        # dyaug/hopper/medium-v0 (100k transitions): 9 min on one core of a busy 2-core machine, hold-out
        # MSE 0.008 of the unit-variance normalised Δs (the reward model: 40 s, 0.007).
        "cpu": EnsembleConfig(lr=1e-3, patience=5, max_steps=10_000),
        "paper": EnsembleConfig(),
    },
    RewardConfig: {
        "tiny": RewardConfig(width=64, depth=2, lr=3e-3, batch_size=128, patience=5, max_epochs=60, max_steps=3000),
        "cpu": RewardConfig(lr=1e-3, patience=5, max_steps=10_000),
        "paper": RewardConfig(),
    },
    TerminalConfig: {
        "tiny": TerminalConfig(width=64, depth=2, lr=3e-3, batch_size=128, patience=5, max_epochs=60, max_steps=3000),
        "cpu": TerminalConfig(patience=5, max_steps=10_000),
        "paper": TerminalConfig(),
    },
}
