"""Data-quality metrics: simulator-checked fidelity of (synthetic) transitions, simulator rollouts of a policy
(compounding model error) and policy consistency."""

from __future__ import annotations

from dyaug.metrics.fidelity import FidelityReport, dynamics_error
from dyaug.metrics.mujoco_state import SUPPORTED_ENVS
from dyaug.metrics.rollouts import (
    SimulatedRollouts,
    policy_action_distance,
    reached_states,
    simulate_policy,
)

__all__ = [
    "SUPPORTED_ENVS",
    "FidelityReport",
    "SimulatedRollouts",
    "dynamics_error",
    "policy_action_distance",
    "reached_states",
    "simulate_policy",
]
