"""Data-quality metrics: simulator-checked fidelity of (synthetic) transitions."""

from __future__ import annotations

from dyaug.metrics.fidelity import FidelityReport, dynamics_error
from dyaug.metrics.mujoco_state import SUPPORTED_ENVS

__all__ = ["SUPPORTED_ENVS", "FidelityReport", "dynamics_error"]
