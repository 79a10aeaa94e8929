"""Single-step models for model-based augmentation (DyDiff, Zhao et al. 2024, arXiv 2405.19189, §4):
a Gaussian dynamics ensemble, a reward model, and termination functions (known rules or a learned classifier)."""

from dyaug.models.config import PRESETS, EnsembleConfig, FitSettings, RewardConfig, TerminalConfig
from dyaug.models.ensemble import DynamicsEnsemble, GaussianEnsemble
from dyaug.models.fitting import FitRecord
from dyaug.models.reward import RewardModel
from dyaug.models.terminal_classifier import TerminalClassifier
from dyaug.models.termination import (
    LocomotionTermination,
    TerminationFn,
    never_terminates,
    termination_for,
    termination_rule,
)

__all__ = [
    "PRESETS",
    "DynamicsEnsemble",
    "EnsembleConfig",
    "FitRecord",
    "FitSettings",
    "GaussianEnsemble",
    "LocomotionTermination",
    "RewardConfig",
    "RewardModel",
    "TerminalClassifier",
    "TerminalConfig",
    "TerminationFn",
    "never_terminates",
    "termination_for",
    "termination_rule",
]
